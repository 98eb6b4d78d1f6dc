"""The plan's graph: `needs` resolved to tasks, dependency cycles, the order fixes are listed
in, and the selection closed over what selected tasks strictly need."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping

from matrix.plan.model import Need, Task
from matrix.results import Skip
from matrix.spec.models import Spec
from matrix.spec.problems import did_you_mean

Report = Callable[..., None]  # (location in the spec, message, *, code="")
UNKNOWN_NEED = "unknown-need"
# Task-to-task links in a plan, a shared pointer each (~320 MB at the cap): the reference
# spec on a fleet of 1,000 hosts needs 36 million (its training phase needs environment).
MAX_NEEDS = 40_000_000


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


def link(spec: Spec, tasks: Mapping[str, Task], report: Report) -> None:
    """Turn each task's check and phase `needs` into needs on tasks: a needed check on the
    same host when it runs there, else all of its tasks; a needed phase, all of its tasks.

    A phase need links every task of one phase to every task of another, so links are counted
    before they are made and capped at MAX_NEEDS, and the work stops there too (every list
    looked at adds at least one link). Each Need is made once per needed task and shared; the
    needs a phase hands its tasks are one list, copied whole into each."""
    strict: dict[str, list[Need]] = {}  # check id → a strict need on each of its tasks
    here: dict[tuple[str, str, str], list[Need]] = {}  # (check id, group, host) → those there
    loose: dict[str, list[Need]] = {}  # phase id → a non-strict need on each of its tasks
    for task in tasks.values():
        need = Need(task.id, True)
        strict.setdefault(task.check.id, []).append(need)
        here.setdefault((task.check.id, task.target.group, task.target.name), []).append(need)
        loose.setdefault(task.phase.id, []).append(Need(task.id, False))
    check_ids = {check.id for phase in spec.phases for check in phase.checks}
    refs: dict[int, list[str]] = {}  # per check or phase: what it needs that has tasks
    where: dict[int, tuple] = {}  # per check or phase: its `needs:` in the spec
    for p, phase in enumerate(spec.phases):
        refs[id(phase)] = [r for r in dict.fromkeys(phase.needs) if r in loose]
        where[id(phase)] = ("phases", p, "needs")
        for c, check in enumerate(phase.checks):
            refs[id(check)] = [r for r in dict.fromkeys(check.needs) if r in strict or r in loose]
            where[id(check)] = ("phases", p, "checks", c, "needs")
    handed: dict[int, list[Need]] = {}  # per phase, made at its first task: what it hands on
    links: Counter[tuple] = Counter()  # per `needs:` key in the spec
    total = 0
    planned: list[tuple[Task, list[list[Need]]]] = []
    for task in tasks.values():
        place = (task.target.group, task.target.name)
        own = [
            here.get((ref, *place)) or strict[ref] if ref in check_ids else loose[ref]
            for ref in refs[id(task.check)]
        ]
        phase = id(task.phase)
        if phase not in handed:
            handed[phase] = [need for ref in refs[phase] for need in loose[ref]]
        count = sum(map(len, own))
        links[where[id(task.check)]] += count
        links[where[phase]] += len(handed[phase])
        total += count + len(handed[phase])
        if total > MAX_NEEDS:
            report(*_too_many_links(links))
            return
        planned.append((task, [*own, handed[phase]]))
    for task, parts in planned:
        for part in parts:
            task.needs.extend(part)


def _too_many_links(links: Counter[tuple]) -> tuple[tuple, str]:
    where, most = links.most_common(1)[0]
    message = (
        f"the plan would link more than {MAX_NEEDS:,} pairs of tasks, the most it may hold, "
        f"{most:,} of them through these needs: a phase need links every task of the phase to "
        "every task of the needed phase; a check need links only to the needed check's tasks "
        "on the same host"
    )
    return where, message


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
    """Spec order, moved only as far as dependencies require (for the fix list): each task
    after what it needs, depth-first with an explicit stack."""
    found: list[str] = []
    seen: set[str] = set()
    for root in tasks:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(tasks[root].needs))]
        while stack:
            task_id, needs = stack[-1]
            for need in needs:
                if need.task_id not in seen:
                    seen.add(need.task_id)
                    stack.append((need.task_id, iter(tasks[need.task_id].needs)))
                    break
            else:
                stack.pop()
                found.append(task_id)
    return found
