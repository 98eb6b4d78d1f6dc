"""The plan's graph: `needs` resolved to tasks, dependency cycles, the order fixes are listed
in, and the selection closed over what selected tasks strictly need."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from matrix.plan.model import Need, Task
from matrix.results import Skip
from matrix.spec.models import Spec
from matrix.spec.problems import did_you_mean

Report = Callable[..., None]  # (location in the spec, message, *, code="")
UNKNOWN_NEED = "unknown-need"


def check_references(spec: Spec, dropped: Collection[str], report: Report) -> None:
    """Every `needs` entry names a phase or check of the spec (or one set aside as invalid)."""
    phase_ids = {phase.id for phase in spec.phases}
    check_ids = {check.id for phase in spec.phases for check in phase.checks}
    known = phase_ids | check_ids | set(dropped)
    for p, phase in enumerate(spec.phases):
        for i, ref in enumerate(phase.needs):
            if ref not in known:
                message = f"unknown phase '{ref}'{did_you_mean(ref, phase_ids)}"
                report(("phases", p, "needs", i), message, code=UNKNOWN_NEED)
        for c, check in enumerate(phase.checks):
            for i, ref in enumerate(check.needs):
                if ref not in known:
                    hint = did_you_mean(ref, [*check_ids, *phase_ids])
                    report(
                        ("phases", p, "checks", c, "needs", i),
                        f"unknown check or phase '{ref}'{hint}",
                        code=UNKNOWN_NEED,
                    )


def link(spec: Spec, tasks: Mapping[str, Task]) -> None:
    """Turn each task's check and phase `needs` into needs on tasks: a needed check on the
    same host when it runs there, else all of its tasks; a needed phase, all of its tasks."""
    by_check: dict[str, list[Task]] = {}
    by_phase: dict[str, list[Task]] = {}
    for task in tasks.values():
        by_check.setdefault(task.check.id, []).append(task)
        by_phase.setdefault(task.phase.id, []).append(task)
    check_ids = {check.id for phase in spec.phases for check in phase.checks}
    for task in tasks.values():
        for ref in task.check.needs:
            if ref in check_ids:
                needed = by_check.get(ref, [])
                same_host = [t for t in needed if t.target == task.target]
                task.needs += [Need(t.id, True) for t in same_host or needed]
            else:
                task.needs += [Need(t.id, False) for t in by_phase.get(ref, [])]
        for ref in task.phase.needs:
            task.needs += [Need(t.id, False) for t in by_phase.get(ref, [])]


def find_cycle(spec: Spec, report: Report) -> None:
    """Dependency cycles over checks and phases, reported with the loop spelled out."""
    phase_ids = {phase.id for phase in spec.phases}
    edges: dict[str, list[str]] = {}
    where: dict[str, tuple] = {}
    for p, phase in enumerate(spec.phases):
        node = f"phase {phase.id}"
        edges[node] = [f"check {c.id}" for c in phase.checks] + [f"phase {r}" for r in phase.needs]
        where[node] = ("phases", p, "needs")
        for c, check in enumerate(phase.checks):
            edges[f"check {check.id}"] = [
                f"phase {r}" if r in phase_ids else f"check {r}"
                for r in [*check.needs, *phase.needs]
            ]
            where[f"check {check.id}"] = ("phases", p, "checks", c, "needs")
    cycle = _first_cycle(edges)
    if cycle:
        report(where[cycle[0]], f"dependency cycle: {' → '.join(cycle)}")


def _first_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (found := visit(node)):
            return found
    return None


def select(tasks: Mapping[str, Task], filtered: Mapping[str, Skip]) -> None:
    """Skip the filtered-out tasks, except those a selected task strictly needs: a selected
    check pulls in the checks it needs, and they cannot be skipped."""
    kept: set[str] = set()
    pending = [t for t in tasks.values() if t.id not in filtered and t.skip is None]
    while pending:
        for need in pending.pop().needs:
            if need.strict and need.task_id in filtered and need.task_id not in kept:
                kept.add(need.task_id)
                if tasks[need.task_id].skip is None:
                    pending.append(tasks[need.task_id])
    for task_id, reason in filtered.items():
        if task_id not in kept:
            tasks[task_id].skip = reason


def order(tasks: Mapping[str, Task]) -> list[str]:
    """Spec order, moved only as far as dependencies require (for the fix list)."""
    found: list[str] = []
    seen: set[str] = set()

    def visit(task_id: str) -> None:
        if task_id in seen:
            return
        seen.add(task_id)
        for need in tasks[task_id].needs:
            visit(need.task_id)
        found.append(task_id)

    for task_id in tasks:
        visit(task_id)
    return found
