"""The console: a line per task under a header per phase, then the verdict and the fixes.

In a pipe (CI logs) lines come out in plan order as soon as every earlier task has finished,
so the log is the same run after run yet still streams, with no escape codes. On a terminal a
person is watching: each result prints the moment it finishes, and a status line below says
what is running and for how long.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from matrix.results import Result, Run, SkipKind, Status, Verdict, span, whole
from reporters.base import (
    WARNING_ICON,
    Reporter,
    banner,
    further_reason,
    icon,
    phase_mark,
    phase_trouble,
    plain,
    plural,
    where,
)

if TYPE_CHECKING:
    from matrix.plan.model import Plan, Task

STYLES = {
    "✅": "green",
    "❌": "bold red",
    "💥": "bold magenta",
    "⏭ ": "dim",
    WARNING_ICON: "yellow",
}
MARKS = {Verdict.ready: "✅", Verdict.caution: "🟡", Verdict.blocked: "🚨"}
INCOMPLETE = "No failures among the finished tasks, but the run is incomplete: no verdict"


def result_lines(result: Result) -> Iterator[str]:
    """The lines for one task: headline, then diagnostic, cause and fix when it went wrong."""
    head = f"{icon(result)} {result.title}{where(result)}"
    if result.status is Status.skipped:
        yield f"{head} — {result.why}"
        return
    if result.attempts > 1:
        head += f" (after {result.attempts} attempts)"
    yield head
    if not result.bad:
        return
    if result.diagnostic:
        yield f"   {result.diagnostic}"
    further = further_reason(result)
    if further:
        yield f"   ↳ {further}"
    if result.fix:
        yield f"   Fix: {result.fix}"


def summary_lines(run: Run) -> Iterator[str]:
    """The closing block: warnings, verdict banner, fixes in dependency order, score."""
    yield ""
    yield "═" * 60
    for warning in run.warnings:
        yield f"⚠️  {warning}"
    counts = run.counts()
    finished = run.finished()
    if run.interrupted:
        yield f"⛔ INTERRUPTED: {finished} of {len(run.results)} tasks finished; partial results"
    if run.stopped_early:
        yield f"⏹  --fail-fast: stopped at the first critical failure ({finished} tasks finished)"
    yield banner(run, MARKS, INCOMPLETE)
    for number, result in enumerate(run.fixes(), 1):
        label = "" if result.severity == "critical" else " (warning)"
        yield f"   {number}. {result.title}{where(result)}{label}: {result.diagnostic}"
        if result.fix:
            yield f"      Fix: {result.fix}"
    yield ""
    yield f"Readiness score: {whole(run.score)}/100"
    for phase in run.phase_scores():
        if not phase.total:
            continue
        over = f" ⏱ over its {span(phase.budget)} budget" if phase.over_budget else ""
        yield (
            f"   {phase_mark(phase)} {phase.title:<34} ({whole(phase.score)}/{phase.weight:g})"
            f"  {phase.passed}/{phase.total} passed  {span(phase.duration)}"
            f"{phase_trouble(phase)}{over}"
        )
    yield (
        f"   {counts['pass']} passed · {counts['fail']} failed · {counts['error']} errors · "
        f"{counts['skip']} skipped · {run.duration:.1f}s"
    )


class ConsoleReporter(Reporter):
    """Always on unless --quiet; the live bar only on a TTY."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.order: list[str] = []
        self.titles: dict[str, str] = {}
        self.pending: dict[str, Result] = {}  # finished, waiting for earlier tasks (pipe)
        self.shown: set[str] = set()  # printed as they finished (terminal)
        self.running: dict[str, None] = {}  # started and not finished, in start order
        self.next = 0
        self.phase: str | None = None
        self.filtered = 0
        self.progress: Any = None
        self.console: Any = None
        self.closed = False  # the reader went away (a closed pipe): print nothing more

    def start(self, plan: Plan) -> None:
        self.order = list(plan.tasks)
        self.titles = {p.id: p.title or p.id for p in plan.spec.phases}
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.console = Console(file=self.stream, highlight=False)
            self.progress = Progress(
                SpinnerColumn(),
                TimeElapsedColumn(),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=True,
            )
            self.bar = self.progress.add_task("starting", total=len(self.order))
            self.progress.start()

    def task_started(self, task: Task) -> None:
        self.running[task.id] = None
        self._status()

    def task_finished(self, result: Result) -> None:
        self.running.pop(result.task_id, None)
        if self.progress is not None:
            self.progress.advance(self.bar)
            self._status()
            self.shown.add(result.task_id)
            self._show(result)
            return
        self.pending[result.task_id] = result
        while self.next < len(self.order) and self.order[self.next] in self.pending:
            self._show(self.pending.pop(self.order[self.next]))
            self.next += 1

    def _status(self) -> None:
        """The status line: how many tasks run and which, oldest first, cut to fit."""
        if self.progress is None:
            return
        names = list(self.running)
        listed = ", ".join(plain(name) for name in names[:3])
        more = f" +{len(names) - 3} more" if len(names) > 3 else ""
        running = f"running {listed}{more}" if names else "waiting"
        self.progress.update(self.bar, description=running)

    def _show(self, result: Result) -> None:
        if result.skip is not None and result.skip.kind is SkipKind.filtered:
            self.filtered += 1
            return
        if result.phase_id != self.phase:
            self.phase = result.phase_id
            self._print("")
            self._print(f"🔍 {self.titles.get(result.phase_id, result.phase_id).upper()}", "bold")
        first, *rest = result_lines(result)
        self._print(first, STYLES.get(icon(result)))
        for line in rest:
            self._print(line, "dim" if line.startswith("   ↳") else None)

    def _print(self, line: str, style: str | None = None) -> None:
        if self.closed:
            return
        line = plain(line)
        try:
            if self.console is not None:
                from rich.text import Text

                self.console.print(Text(line, style=style or ""))
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
        except BrokenPipeError:  # `matrix run ... | head`: the reader has seen enough;
            self.closed = True  # the run and the other reports go on
            _quiet(self.stream)

    def finish(self, run: Run) -> None:
        by_id = {result.task_id: result for result in run.results}
        for task_id in self.order[self.next :]:
            if task_id not in self.shown:
                self._show(by_id[task_id])
        self.next = len(self.order)
        if self.progress is not None:
            self.progress.stop()
        if self.filtered:
            self._print(f"\n({plural(self.filtered, 'task')} filtered out)")
        verdict = banner(run, MARKS, INCOMPLETE)
        for line in summary_lines(run):
            self._print(line, "bold" if line == verdict else None)


def _quiet(stream: TextIO) -> None:
    """Point the closed pipe's descriptor at /dev/null, so nothing (not even the interpreter's
    last flush at exit) writes to it again: Python's documented recipe for SIGPIPE."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
