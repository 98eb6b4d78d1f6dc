"""The one contract between the engine and whoever listens to a run (every reporter).

Listeners hear the run as it goes (live progress, spans with real times, a trace context
handed to probes) and render the finished Run; they never change it. Every hook is optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matrix.plan.model import Plan, Task
    from matrix.results import Result, Run


class Listener:
    """Base class of every reporter (`reporters.Reporter` is this class)."""

    def start(self, plan: Plan) -> None:
        """The run is about to start (the plan is final)."""

    def task_started(self, task: Task) -> None:
        """A probe started (after its needs passed and a slot was free)."""

    def probe_env(self, task: Task) -> Mapping[str, str]:
        """Environment variables for this task's probe processes (e.g. TRACEPARENT)."""
        return {}

    def task_finished(self, result: Result) -> None:
        """A task has its result (pass, fail, error or skip)."""

    def finish(self, run: Run) -> None:
        """Render the finished run; also called after Ctrl-C with the partial run."""
