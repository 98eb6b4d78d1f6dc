"""Small wording helpers every human-facing reporter shares, so they say things one way."""

from __future__ import annotations

from matrix.results import Result


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
