"""Reporters turn a run into an output. Each listens to the engine and renders the finished Run.

Built-ins are named here by import path so the CLI can offer their options without importing
them; third-party reporters register a `ReporterEntry` in the `matrix.reporters` entry-point
group and get a `--<name> DEST` option the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matrix.plan import Plan, Task
    from matrix.results import Result, Run

ENTRY_POINT_GROUP = "matrix.reporters"


class Reporter:
    """Base class: every hook is optional; `finish` writes the output."""

    def start(self, plan: Plan) -> None:
        """The run is about to start (the plan is final)."""

    def task_started(self, task: Task) -> None:
        """A probe started (after its needs passed and a slot was free)."""

    def task_finished(self, result: Result) -> None:
        """A task has its result (pass, fail, error or skip)."""

    def finish(self, run: Run) -> None:
        """Render the finished run; also called after Ctrl-C with the partial run."""


@dataclass(frozen=True)
class ReporterEntry:
    """How a reporter appears on the command line: `--<name> DEST`."""

    name: str
    factory: str | Callable[[str], Reporter]
    help: str
    metavar: str = "PATH"

    def create(self, destination: str) -> Reporter:
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(destination)


BUILTIN = (
    ReporterEntry(
        "json",
        "reporters.json_report:JsonReporter",
        "write the full run (results, verdict, score, timings) as JSON",
    ),
)


@cache
def registry() -> dict[str, ReporterEntry]:
    """Built-in reporters plus those installed through entry points."""
    from importlib.metadata import entry_points

    found = {entry.name: entry for entry in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        entry = ep.load()
        found[entry.name] = entry
    return found
