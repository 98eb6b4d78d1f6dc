"""What the reporters share: the listener contract they implement, atomic writes, and the
wording every human-facing format uses, so they say things one way."""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from matrix.listener import Listener
from matrix.redact import redact
from matrix.results import PhaseScore, Result, Run, Status, Verdict

Reporter = Listener  # one contract: what the engine calls is what a reporter implements

ICONS = {Status.passed: "✅", Status.failed: "❌", Status.error: "💥", Status.skipped: "⏭ "}
WARNING_ICON = "⚠️ "
VERDICT_WORDS = {
    Verdict.ready: "READY",
    Verdict.caution: "PROCEED WITH CAUTION",
    Verdict.blocked: "DEPLOYMENT BLOCKED",
}


def write_report(path: Path, text: str) -> None:
    """Write a report where `path` points, destroying nothing there. `-` is stdout. A device
    or a FIFO (/dev/stdout, a named pipe a reader waits on) is written in place. A regular file
    or a new path, through symlinks, is replaced atomically: a temporary file beside the target
    renamed over it, so readers never see half a report; it is removed if writing fails.
    Secrets are masked here, the one way out every report takes."""
    text = redact.text(text)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        mode: int | None = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory: give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "w", encoding="utf-8", errors="replace") as stream:
            stream.write(text)
        return
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8", errors="replace")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def append_report(path: Path, text: str) -> None:
    """Add a report to the end of a file others write too ($GITHUB_STEP_SUMMARY), secrets
    masked as in `write_report`."""
    with path.open("a", encoding="utf-8", errors="replace") as out:
        out.write(redact.text(text))


# ANSI escape sequences (CSI, OSC) and every other control character but tab and newline
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def plain(text: str) -> str:
    """Text from a spec or a probe with control characters and escape sequences removed: a
    probe printing NUL, BEL or a cursor move must not ring, hide or rewrite lines of a log."""
    return _CONTROL.sub("", text)


def icon(result: Result) -> str:
    """A result's mark: a failed warning shows as a warning, whatever its status."""
    if result.bad and result.severity != "critical":
        return WARNING_ICON
    return ICONS[result.status]


def phase_mark(phase: PhaseScore) -> str:
    """A phase's mark follows its worst outcome, not its score: ❌ if a critical task failed
    there (it blocks the run), ⚠️ for a failed warning, ⏭ when tasks were blocked by a failure
    elsewhere, ✅ when everything that applied passed."""
    if phase.critical:
        return ICONS[Status.failed]
    if phase.warnings:
        return WARNING_ICON
    if phase.passed < phase.total:
        return ICONS[Status.skipped]
    return ICONS[Status.passed]


def phase_trouble(phase: PhaseScore) -> str:
    """` - 1 critical issue, 3 warnings`: the seed's suffix to a phase score, empty when
    nothing went wrong there."""
    wrong = [
        plural(count, word)
        for count, word in (
            (phase.critical, "critical issue"),
            (phase.warnings, "warning"),
            (phase.blocked, "blocked task"),
        )
        if count
    ]
    return f" - {', '.join(wrong)}" if wrong else ""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def where(result: Result) -> str:
    """` [batch_size=16] @ gpu-01`: the matrix cell and the host, empty for a plain local task."""
    cell = ",".join(f"{k}={v}" for k, v in result.cell.items())
    text = f" [{cell}]" if cell else ""
    return text + (f" @ {result.target}" if result.target != "local" else "")


def further_reason(result: Result) -> str | None:
    """The reason, when it adds to the diagnostic. A reason that is the probe's own account
    (already quoted by the diagnostic) plus the unmet matcher says nothing new."""
    reason, diagnostic = result.reason, result.diagnostic or ""
    if not reason or reason in diagnostic:
        return None
    account, _, unmet = reason.rpartition(" (")
    if account and account in diagnostic and unmet.endswith(")"):
        return None
    return reason


def tally(run: Run) -> str | None:
    """What the verdict banner counts: `1 critical issue, 2 warnings` when BLOCKED, `3
    warnings` (phases over budget included) for CAUTION; None when READY."""
    fixes = run.fixes()
    critical = sum(r.severity == "critical" for r in fixes)
    warnings = len(fixes) - critical
    if run.verdict is Verdict.blocked:
        also = f", {plural(warnings, 'warning')}" if warnings else ""
        return plural(critical, "critical issue") + also
    if run.verdict is Verdict.caution:
        return plural(warnings + len(run.over_budget()), "warning")
    return None


def banner(run: Run, marks: Mapping[Verdict, str], incomplete: str) -> str:
    """The verdict line: `🚨 DEPLOYMENT BLOCKED: 2 critical issues`, or `incomplete` when the
    run was cut short before anything went wrong (no verdict can be given then)."""
    if run.verdict is Verdict.incomplete:
        return incomplete
    head = f"{marks[run.verdict]} {VERDICT_WORDS[run.verdict]}"
    counted = tally(run)
    if counted:
        return f"{head}: {counted}"
    counts = run.counts()
    return f"{head}: {counts['pass']} passed, {counts['skip']} skipped"
