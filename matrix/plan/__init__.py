"""Spec → Plan: the spec expanded into tasks (expand.py) and linked into a graph (graph.py).

`build_plan` reports every problem it finds at once, so `validate` says all that is wrong with
a spec in one go; the engine then only executes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from matrix.plan import graph
from matrix.plan.expand import Planner
from matrix.plan.model import Filters, Need, Plan, Task
from matrix.redact import remember
from matrix.spec.load import Loaded
from matrix.spec.problems import Position, Problem, SpecInvalid
from matrix.spec.yaml import display_name
from matrix.transport import transport

__all__ = ["Filters", "Need", "Plan", "Task", "build_plan"]


def build_plan(
    loaded: Loaded, filters: Filters | None = None, environ: Mapping[str, str] | None = None
) -> Plan:
    """Expand the spec; raise SpecInvalid listing every problem found."""
    filters = filters or Filters()
    environ = os.environ if environ is None else environ
    planner = Planner(loaded, environ)
    tasks = planner.tasks()
    graph.find_cycle(loaded.spec, planner.problem)
    graph.check_references(loaded.spec, loaded.dropped, planner.problem)
    graph.link(loaded.spec, tasks)
    if planner.problems:
        raise SpecInvalid(planner.problems)
    remote = {
        host.name
        for task in tasks.values()
        for host in task.spans or (task.target,)
        if transport(host.via).remote
    }
    unmatched = filters.unmatched(loaded.spec, remote)
    if unmatched:
        raise SpecInvalid(unmatched)
    filtered = {
        task.id: reason
        for task in tasks.values()
        if (reason := filters.reason(task.check, task.phase, task.target, task.spans))
    }
    for task in tasks.values():  # a check across a group spans the hosts --limit selects
        task.spans = filters.limited(task.spans)
    if tasks and len(filtered) == len(tasks):
        message = "these filters together select no task: nothing would be checked"
        raise SpecInvalid([Problem(Position("command line", 1, 1), filters.describe(), message)])
    graph.select(tasks, filtered)
    tasks = planner.gate_tasks(tasks)
    groups = graph.groups(tasks)
    secrets = {name: environ[name] for name in loaded.spec.secrets if name in environ}
    for value in secrets.values():  # masked in everything written from now on
        remember(value)
    return Plan(
        loaded.spec,
        display_name(loaded.path),
        planner.vars,
        tasks,
        graph.order(tasks, groups),
        {t.target.name: t.target for t in tasks.values()},
        planner.warnings,
        secrets,
        groups,
    )
