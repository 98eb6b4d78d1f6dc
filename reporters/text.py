"""Small wording helpers every human-facing reporter shares, so they say things one way."""

from __future__ import annotations

from matrix.results import Result, Run, Verdict


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
