"""What `matrix run --drain` and `--resume` do to Slurm nodes once a run has ended.

Evidence before action. A node is set DRAIN only for a critical row whose probe ran on that
node and observed the failure there (`Result.observed`: an expectation that failed, or the
probe's own account of what stopped it), or, for a row with `drain: named`, a check across
the nodes that names it at fault by what it measured (its `faulty_hosts` fact). A lost Slurm
step, a cancelled job, an unreachable node, a timeout or a crash of a probe's own code teach
nothing about a node: such a node is listed as not drained, with the cause, never drained.

Ownership. The reason names the spec and the check (`matrix[slurm-node] gpu-health: ...`).
A node that matrix drained for another spec is left as it is, and `--resume` sets RESUME only
on nodes drained for this spec, after a whole run of it in which every critical row of the
node ran and passed; `--resume-any` also takes the drains of other specs (and the older
`matrix: check: ...` reasons, which name none). A node someone else drained is
never touched, and nothing at all is after an interrupted run.

Fleet nodes are the hosts of `via: slurm` groups. A drained node takes no job, so only a run
on the node itself can clear it: there the `local` results stand for `--slurm-node` (by
default $SLURMD_NODENAME, which Slurm sets for prologs and jobs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from matrix.errors import TransportError
from matrix.plan import Plan
from matrix.redact import redact
from matrix.results import Result, Run, SkipKind, Status
from matrix.spec.models import Drain
from matrix.transport.slurm import node_state, set_state

REASON_LIMIT = 200  # characters of a reason kept: sinfo and squeue show it on one line
SHOWN_NODES = 8  # nodes named in one line; the rest are counted
# `matrix[spec] check: why`, or `matrix: check: why` from before drains named their spec
_MATRIX_REASON = re.compile(r"^matrix(?:\[(?P<spec>[^\]]*)\])?[: ]")


@dataclass
class Actions:
    """What --drain and --resume did: a line per thing done, refused or left, for the run's
    warnings (every report shows them); `failed` are the lines of actions Slurm did not carry
    out, which make `matrix run` exit 4."""

    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def act(
    run: Run,
    plan: Plan,
    *,
    drain: bool,
    resume: bool,
    resume_any: bool = False,
    partial: bool,
    here: str | None,
) -> Actions:
    """Drain and resume as asked, on the evidence of `run`."""
    acted = Actions()
    if run.interrupted:
        acted.lines.append("Slurm: no node drained or resumed: the run was interrupted")
        return acted
    owner = owner_of(run.spec_name)
    results = _nodes(run, plan, here)
    named = _named(run, plan, set(results))
    unobserved: dict[str, Result] = {}
    for node in sorted(results.keys() | named.keys()):
        mine = results.get(node, [])
        evidence = [r for r in mine if _is_evidence(r, plan)] + named.get(node, [])
        try:
            if evidence and drain:
                acted.lines += _drain(node, evidence[0], owner)
            elif resume and not evidence and _clears(mine):
                acted.lines += _resume(node, owner, partial=partial, any_spec=resume_any)
        except TransportError as exc:
            line = f"Slurm: could not {'drain' if evidence else 'resume'} {node}: {exc}"
            acted.lines.append(line)
            acted.failed.append(line)
        unseen = [r for r in mine if r.severity == "critical" and r.bad and not r.observed]
        if drain and not evidence and unseen:
            unobserved[node] = unseen[0]
    if unobserved:
        acted.lines.append(_not_drained(unobserved))
    return acted


def owner_of(spec: str) -> str:
    """`matrix[spec]`: who drained a node, as its reason starts."""
    name = " ".join(re.sub(r"[\[\]]", "", spec).split())[:60]
    return f"matrix[{name}]"


def _nodes(run: Run, plan: Plan, here: str | None) -> dict[str, list[Result]]:
    """The results of each Slurm node of the run: its fleet hosts', and `local`'s as `here`."""
    slurm = {name for name, ref in plan.targets.items() if ref.via == "slurm"}
    nodes: dict[str, list[Result]] = {}
    for result in run.results:
        if result.target in slurm:
            nodes.setdefault(result.host, []).append(result)
        elif here and result.group in ("local", "controller"):
            nodes.setdefault(here, []).append(result)
    return nodes


def _named(run: Run, plan: Plan, nodes: set[str]) -> dict[str, list[Result]]:
    """{node: the `drain: named` rows that name it in their `faulty_hosts` fact}: a check
    across the nodes (or its `consistent` row) that observed which of them is at fault."""
    named: dict[str, list[Result]] = {}
    for result in run.results:
        check = plan.tasks[result.task_id].check
        if check.drain is not Drain.named or not _is_critical_failure(result):
            continue
        faulty = result.facts.get("faulty_hosts")
        for host in faulty if isinstance(faulty, list) else ():
            if host in nodes and host != result.host:
                named.setdefault(host, []).append(result)
    return named


def _is_critical_failure(result: Result) -> bool:
    return result.severity == "critical" and result.bad and result.observed


def _is_evidence(result: Result, plan: Plan) -> bool:
    """A critical failure this node's own probe observed, on a row that may drain."""
    drains = plan.tasks[result.task_id].check.drain is not Drain.never
    return drains and _is_critical_failure(result)


def _clears(results: list[Result]) -> bool:
    """Every critical row of the node that applies passed: none failed, errored or was
    blocked (a `when:` that is false, or a selection, leaves a row out; `_resume` refuses a
    run of part of the spec)."""
    critical = [r for r in results if r.severity == "critical"]
    return bool(critical) and all(r.status is Status.passed or _left_out(r) for r in critical)


def _left_out(result: Result) -> bool:
    return result.skip is not None and result.skip.kind in (
        SkipKind.not_applicable,
        SkipKind.filtered,
    )


def _not_drained(unobserved: dict[str, Result]) -> str:
    """One line for the nodes whose critical rows failed without observing them."""
    nodes = list(unobserved)
    more = f" and {len(nodes) - SHOWN_NODES} more" if len(nodes) > SHOWN_NODES else ""
    first = unobserved[nodes[0]]
    return (
        f"Slurm: {', '.join(nodes[:SHOWN_NODES])}{more} not drained: no critical failure was "
        f"observed on {'them' if len(nodes) > 1 else 'it'}, only errors of reaching "
        f"{'them' if len(nodes) > 1 else 'it'} or of the checks themselves "
        f"({first.check_id}@{nodes[0]}: {first.reason})"
    )


def reason(result: Result, owner: str) -> str:
    """What Slurm is told: who, the check and the one-line why, secrets masked, cut to fit."""
    why = " ".join((result.diagnostic or result.reason or result.failure or "failed").split())
    text = redact(f"{owner} {result.check_id}: {why}")
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def drained_by(current: str) -> str | None:
    """The `matrix[spec]` (or `matrix`, from before drains named their spec) that a node's
    drain reason names; None when someone else drained it."""
    found = _MATRIX_REASON.match(current)
    if found is None:
        return None
    return "matrix" if found["spec"] is None else f"matrix[{found['spec']}]"


def _drain(node: str, worst: Result, owner: str) -> list[str]:
    state, current = node_state(node)
    if "drain" in state:
        by = drained_by(current)
        if by is None:
            return [f"Slurm: {node} left as it is: already {state} by someone else ({current})"]
        if by != owner:
            return [
                f"Slurm: {node} left as it is: already {state} by {by} ({current}); "
                f"{worst.check_id} also fails there"
            ]
    text = reason(worst, owner)
    set_state(node, "DRAIN", text)
    return [f"Slurm: drained {node}: {text}"]


def _resume(node: str, owner: str, *, partial: bool, any_spec: bool) -> list[str]:
    state, current = node_state(node)
    by = drained_by(current)
    if "drain" not in state or by is None:
        return []
    if by != owner and not any_spec:
        return [
            f"Slurm: {node} stays drained: {by} drained it ({current}); only a run of that "
            "spec resumes it (or --resume-any)"
        ]
    if partial:
        return [f"Slurm: {node} stays drained: a run of part of the spec cannot clear it"]
    set_state(node, "RESUME")
    return [f"Slurm: resumed {node}: it passes every critical check now (was: {current})"]
