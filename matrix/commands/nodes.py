"""What `matrix run --drain` and `--resume` do to Slurm nodes once a run has ended.

A node with a critical check that failed or errored is set DRAIN, the reason saying which
check and why ("matrix: gpu-health: ..."), so the scheduler sends it no more jobs. A node
that matrix drained earlier (its reason starts with REASON_PREFIX) and that now passes every
critical check is set RESUME. Nothing else is touched: not a node someone else drained, not
a node that matrix could not reach (its gate says nothing of its health), and nothing at
all after a run that was interrupted, or that ran part of the spec (resume), since a
partial run cannot clear a node.

Fleet nodes are the hosts of `via: slurm` groups. A drained node takes no job, so only a run
on the node itself can clear it: there the `local` results stand for `--slurm-node` (by
default $SLURMD_NODENAME, which Slurm sets for prologs and jobs).
"""

from __future__ import annotations

from matrix.errors import TransportError
from matrix.plan import Plan
from matrix.redact import redact
from matrix.results import Result, Run
from matrix.transport import TRANSPORTS
from matrix.transport.slurm import node_state, set_state

REASON_PREFIX = "matrix:"
REASON_LIMIT = 200  # characters of a reason kept: sinfo and squeue show it on one line
GATES = frozenset(row.gate.kind for row in TRANSPORTS.values() if row.gate)  # reaching a node


def act(
    run: Run, plan: Plan, *, drain: bool, resume: bool, partial: bool, here: str | None
) -> list[str]:
    """Drain and resume as asked; one line per thing done or refused, for the run's
    warnings (every report shows them)."""
    if run.interrupted:
        return ["Slurm: no node drained or resumed: the run was interrupted"]
    nodes = _nodes(run, plan, here)
    lines = []
    for node, results in nodes.items():
        gates = {r.task_id for r in results if plan.tasks[r.task_id].check.probe.kind in GATES}
        bad = [r for r in results if r.severity == "critical" and r.bad and r.task_id not in gates]
        gated = any(r.bad for r in results if r.task_id in gates)
        try:
            if bad and drain:
                lines += _drain(node, bad[0])
            elif resume and not bad and not gated:
                lines += _resume(node, partial)
        except TransportError as exc:
            lines.append(f"Slurm: {exc}")
    return lines


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


def reason(result: Result) -> str:
    """What Slurm is told: the check and the one-line why, secrets masked, cut to fit."""
    why = " ".join((result.diagnostic or result.reason or result.failure or "failed").split())
    text = redact(f"{REASON_PREFIX} {result.check_id}: {why}")
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _drain(node: str, worst: Result) -> list[str]:
    state, current = node_state(node)
    if "drain" in state and not current.startswith(REASON_PREFIX):
        return [f"Slurm: {node} left as it is: already {state} by someone else ({current})"]
    text = reason(worst)
    set_state(node, "DRAIN", text)
    return [f"Slurm: drained {node}: {text}"]


def _resume(node: str, partial: bool) -> list[str]:
    state, current = node_state(node)
    if "drain" not in state or not current.startswith(REASON_PREFIX):
        return []
    if partial:
        return [f"Slurm: {node} stays drained: a run of part of the spec cannot clear it"]
    set_state(node, "RESUME")
    return [f"Slurm: resumed {node}: it passes every critical check now (was: {current})"]
