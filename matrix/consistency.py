"""Is a fact the same on every host? The verdict of a check's `consistent:` row.

A fleet whose hosts each pass can still train wrong: torch 2.4 on one node and 2.5 on the
rest, one node with 7 GPUs. After every host's task of a check has finished, its `consistent`
fact paths are compared across the hosts that observed them; the hosts off the majority are
named, with the value the others agree on (`torch "2.4.0" on gpu-07; "2.5.1" on the other 15
hosts`); with no majority (a 1-vs-1 split, 2-vs-2) it is a tie, and no host is named at
fault. The hosts named at fault are the `faulty_hosts` fact, which a `drain: named` row
drains. A host whose own task did not observe (unreachable, blocked) cannot disagree: it is
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
        most = max(len(hosts) for hosts in by_value.values())
        leaders = [value for value, hosts in by_value.items() if len(hosts) == most]
        facts["values"][path] = by_value
        if len(leaders) > 1:  # a tie: no majority, so no host is the odd one out
            facts["outliers"][path] = []
            sentences.append(_tie(path, by_value))
            continue
        majority = leaders[0]
        outliers = [h for value, hosts in by_value.items() if value != majority for h in hosts]
        facts["outliers"][path] = outliers
        if outliers:
            sentences.append(_sentence(path, by_value, majority))
    blamed = {host for hosts in facts["outliers"].values() for host in hosts}
    facts["faulty_hosts"] = list(dict.fromkeys(r.target for r in observed if r.target in blamed))
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
    parts = [
        f"{value} on {_named(hosts)}"
        for value, hosts in sorted(by_value.items(), key=lambda item: len(item[1]))
        if value != majority
    ]
    others = len(by_value[majority])
    return f"{path} {'; '.join(parts)}; {majority} on the other {others} host" + (
        "s" if others != 1 else ""
    )


def _tie(path: str, by_value: dict[str, list[str]]) -> str:
    """`stdout differs with no majority to tell the odd host: "2.4.0" on n3; "2.5.1" on n1`."""
    parts = "; ".join(f"{value} on {_named(hosts)}" for value, hosts in by_value.items())
    return f"{path} differs with no majority to tell the odd host (a tie): {parts}"


def _named(hosts: list[str]) -> str:
    """The first SHOWN_HOSTS hosts, then how many more."""
    more = len(hosts) - SHOWN_HOSTS
    return ", ".join(hosts[:SHOWN_HOSTS]) + (f" and {more} more" if more > 0 else "")
