"""Is a fact the same on every host? The verdict of a check's `consistent:` row.

A fleet whose hosts each pass can still train wrong: torch 2.4 on one node and 2.5 on the
rest, one node with 7 GPUs. After every host's task of a check has finished, its `consistent`
fact paths are compared across the hosts that observed them; the hosts off the majority are
named, with the value the others agree on (`torch "2.4.0" on gpu-07; "2.5.1" on the other 15
hosts`). A host whose own task did not observe (unreachable, blocked) cannot disagree: it is
listed as not observed, and fails nothing here (its own row already did).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from matrix.results import Result, Status
from matrix.spec.expect import MISSING, lookup

SHOWN_HOSTS = 5  # outliers named in a sentence; the facts list them all
OBSERVED = (Status.passed, Status.failed)  # the probe ran: its facts are there to compare

Outcome = tuple[Status, dict[str, Any], str | None]


def compare(paths: Sequence[str], results: Sequence[Result]) -> Outcome:
    """(status, facts, reason) of the comparison of `paths` over the hosts' results."""
    observed = [r for r in results if r.status in OBSERVED]
    facts: dict[str, Any] = {
        "hosts": len(observed),
        "not_observed": [r.target for r in results if r.status not in OBSERVED],
        "values": {},
        "outliers": {},
    }
    if not observed:
        return Status.error, facts, "no host observed the facts to compare"
    sentences = []
    for path in paths:
        by_value: dict[str, list[str]] = {}
        for result in observed:
            by_value.setdefault(_shown(lookup(result.facts, path)), []).append(result.target)
        majority = max(by_value, key=lambda value: len(by_value[value]))
        outliers = [h for value, hosts in by_value.items() if value != majority for h in hosts]
        facts["values"][path] = by_value
        facts["outliers"][path] = outliers
        if outliers:
            sentences.append(_sentence(path, by_value, majority))
    if sentences:
        return Status.failed, facts, "; ".join(sentences)
    return Status.passed, facts, None


def _shown(value: Any) -> str:
    """The value as the spec writes it (JSON), so that 2 and "2" stay apart and a missing fact
    reads as missing."""
    if value is MISSING:
        return "(missing)"
    return json.dumps(value, sort_keys=True, default=str)


def _sentence(path: str, by_value: dict[str, list[str]], majority: str) -> str:
    """`torch "2.4.0" on gpu-07; "2.5.1" on the other 15 hosts`."""
    parts = []
    for value, hosts in sorted(by_value.items(), key=lambda item: len(item[1])):
        if value != majority:
            more = len(hosts) - SHOWN_HOSTS
            named = ", ".join(hosts[:SHOWN_HOSTS]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{value} on {named}")
    others = len(by_value[majority])
    return f"{path} {'; '.join(parts)}; {majority} on the other {others} host" + (
        "s" if others != 1 else ""
    )
