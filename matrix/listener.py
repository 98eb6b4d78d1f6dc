"""The one contract between the engine and whoever listens to a run (every reporter).

Listeners hear the run as it goes (live progress, spans with real times, a trace context
handed to probes) and render the finished Run; they never change it. Every hook is optional.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matrix.plan.model import Plan, Task
    from matrix.results import Result, Run


class Listener:
    """Base class of every reporter (`reporters.Reporter` is this class)."""

    def _all(self, hook: str, *args: Any) -> None:
        for _ in self._each(hook, *args):
            pass

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


class Listeners(Listener):
    """Every listener of a run, each on its own: one that raises (a console whose stream
    cannot take a character, a reporter with a bug) hears no more of the run, and its first
    failure is kept in `failed`, while the others and the run go on. It is still asked to
    `finish`: most reporters render only the finished Run."""

    def __init__(self, listeners: Sequence[Listener]):
        self.listeners = list(listeners)
        self.failed: dict[Listener, str] = {}

    def _each(self, hook: str, *args: Any) -> Iterator[Any]:
        for listener in self.listeners:
            if listener in self.failed and hook != "finish":
                continue
            try:
                yield getattr(listener, hook)(*args)
            except Exception as exc:
                self.failed.setdefault(listener, f"{type(exc).__name__}: {exc}")

    def _all(self, hook: str, *args: Any) -> None:
        for _ in self._each(hook, *args):
            pass

    def start(self, plan: Plan) -> None:
        self._all("start", plan)

    def task_started(self, task: Task) -> None:
        self._all("task_started", task)

    def probe_env(self, task: Task) -> Mapping[str, str]:
        env: dict[str, str] = {}
        for part in self._each("probe_env", task):
            env.update(part or {})
        return env

    def task_finished(self, result: Result) -> None:
        self._all("task_finished", result)

    def finish(self, run: Run) -> None:
        self._all("finish", run)
