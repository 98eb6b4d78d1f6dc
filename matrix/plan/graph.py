"""The plan's graph: `needs` resolved to tasks, dependency cycles, the order fixes are listed
in, and the selection closed over what selected tasks strictly need."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping

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
    """Turn each task's check and phase `needs` into Needs: a needed check's tasks on the same
    host when it runs there; else its whole group, every task of the needed check (strict) or
    phase (loose), as one Need. Links grow with tasks and `needs:` entries, never with tasks
    × tasks: a fleet's training phase needing its environment phase is one link a task."""
    here: dict[tuple[str, str, str], list[Need]] = {}  # (check id, group, host) → tasks there
    for task in tasks.values():
        place = (task.check.id, task.target.group, task.target.name)
        here.setdefault(place, []).append(Need(task.id, True))
    with_tasks = {task.check.id for task in tasks.values()}
    phases = {task.phase.id for task in tasks.values()}
    check_ids = {check.id for phase in spec.phases for check in phase.checks}
    shared: dict[str, Need] = {}  # one Need per group, shared by every task that waits on it

    def group(kind: str, ref: str) -> Need:
        name = f"{kind}:{ref}"
        return shared.setdefault(name, Need(name, kind == "check"))

    for task in tasks.values():
        for ref in dict.fromkeys(task.check.needs):
            if ref in check_ids:
                if ref in with_tasks:
                    local = here.get((ref, task.target.group, task.target.name))
                    task.needs.extend(local) if local else task.needs.append(group("check", ref))
            elif ref in phases:
                task.needs.append(group("phase", ref))
        task.needs.extend(group("phase", ref) for ref in task.phase.needs if ref in phases)


def groups(tasks: Mapping[str, Task]) -> dict[str, list[str]]:
    """Every group a Need names → its tasks in plan order."""
    named = {need.task_id for task in tasks.values() for need in task.needs}
    found: dict[str, list[str]] = {}
    for task in tasks.values():
        for name in (f"phase:{task.phase.id}", f"check:{task.check.id}"):
            if name in named:
                found.setdefault(name, []).append(task.id)
    return found


def find_cycle(spec: Spec, report: Report) -> None:
    """Dependency cycles over checks and phases, reported with the loop spelled out. A check
    inherits its phase's needs through one node per phase, so the graph grows with the spec,
    not with checks × phase needs."""
    phase_ids = {phase.id for phase in spec.phases}
    edges: dict[str, list[str]] = {}
    where: dict[str, tuple] = {}
    for p, phase in enumerate(spec.phases):
        node, inherited = f"phase {phase.id}", f"needs of phase {phase.id}"
        edges[node] = [*(f"check {c.id}" for c in phase.checks), inherited]
        edges[inherited] = [f"phase {r}" for r in dict.fromkeys(phase.needs)]
        where[node] = ("phases", p, "needs")
        for c, check in enumerate(phase.checks):
            refs = dict.fromkeys(check.needs)
            needs = [f"phase {r}" if r in phase_ids else f"check {r}" for r in refs]
            edges[f"check {check.id}"] = [*needs, inherited]
            where[f"check {check.id}"] = ("phases", p, "checks", c, "needs")
    cycle = _first_cycle(edges)
    if cycle:
        loop = [node for node in cycle[:-1] if node in where]  # without the inherited nodes
        shown = [*loop, loop[0]]
        if len(shown) > 12:
            shown = [*shown[:6], f"… {len(shown) - 11} more", *shown[-5:]]
        report(where[loop[0]], f"dependency cycle: {' → '.join(shown)}")


def _first_cycle(edges: Mapping[str, list[str]]) -> list[str] | None:
    """Depth-first with an explicit stack: a chain of 1,500 needs is no deeper than one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if start in state:
            continue
        path, pending = [start], [iter(edges.get(start, []))]
        state[start] = 1
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(iter(edges.get(nxt, [])))
    return None


def select(tasks: Mapping[str, Task], filtered: Mapping[str, Skip]) -> None:
    """Skip the filtered-out tasks, except those a selected task strictly needs: a selected
    check pulls in the checks it needs, and they cannot be skipped."""
    if not filtered:
        return
    members = groups(tasks)
    kept: set[str] = set()
    opened: set[str] = set()  # groups already pulled in
    pending = [t for t in tasks.values() if t.id not in filtered and t.skip is None]
    while pending:
        for need in pending.pop().needs:
            if not need.strict or need.task_id in opened:
                continue
            if need.task_id in members:
                opened.add(need.task_id)
            for task_id in members.get(need.task_id, [need.task_id]):
                if task_id in filtered and task_id not in kept:
                    kept.add(task_id)
                    if tasks[task_id].skip is None:
                        pending.append(tasks[task_id])
    for task_id, reason in filtered.items():
        if task_id not in kept:
            tasks[task_id].skip = reason


def order(tasks: Mapping[str, Task], members: Mapping[str, list[str]]) -> list[str]:
    """Spec order, moved only as far as dependencies require (for the fix list): each task
    after what it needs (a group: each of its tasks), depth-first with an explicit stack."""

    def after(node: str) -> Iterator[str]:
        if node in members:
            return iter(members[node])
        return (need.task_id for need in tasks[node].needs)

    found: list[str] = []
    seen: set[str] = set()
    for root in tasks:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, after(root))]
        while stack:
            node, needs = stack[-1]
            for need in needs:
                if need not in seen:
                    seen.add(need)
                    stack.append((need, after(need)))
                    break
            else:
                stack.pop()
                if node not in members:
                    found.append(node)
    return found
