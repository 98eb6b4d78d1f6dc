"""Plain-text views of a plan for `list`, `run --dry-run` and `explain` (no rich: fast start)."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Sequence

from matrix.plan import Plan, Task
from matrix.probe import registry
from matrix.spec import template


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [header, ["─" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines
    )


def probe_table() -> str:
    """Every kind with the first sentence of its docstring, whole: wrapped to the terminal's
    width (COLUMNS), never cut."""
    kinds = sorted(registry().items())
    left = max(len(kind) for kind, _ in kinds) + len("controller") + 4
    width = max(shutil.get_terminal_size((100, 24)).columns - left, 20)
    rows: list[list[str]] = []
    for kind, cls in kinds:
        first, *rest = textwrap.wrap(
            _first_sentence(cls.__doc__ or ""), width, break_on_hyphens=False
        ) or [""]
        rows += [[kind, cls.runs_on, first], *([["", "", line] for line in rest])]
    return table(["KIND", "RUNS ON", "WHAT IT OBSERVES"], rows)


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = re.search(r"[.!?](\s|$)", text)
    return text[: end.start() + 1] if end else text


def plan_table(plan: Plan) -> str:
    where: dict[str, set[str]] = {}
    for task in plan.tasks.values():
        where.setdefault(task.check.id, set()).add(task.target.name)
    rows = [
        [
            p.id,
            c.id,
            c.severity.value,
            c.probe.kind,
            ",".join(sorted(where.get(c.id, ()))) or "—",
            ",".join(c.needs) or "—",
        ]
        for p in plan.spec.phases
        for c in p.checks
    ]
    phases = table(
        ["PHASE", "TITLE", "WEIGHT", "NEEDS", "CHECKS"],
        [
            [p.id, p.title or "", f"{p.weight:g}", ",".join(p.needs) or "—", str(len(p.checks))]
            for p in plan.spec.phases
        ],
    )
    targets = table(
        ["TARGET", "VIA", "HOST"],
        [[t.name, t.via, t.host] for t in plan.targets.values()]
        or [["local", "local", "localhost"]],
    )
    checks = table(["PHASE", "CHECK", "SEVERITY", "PROBE", "ON", "NEEDS"], rows)
    return f"{plan.spec.name}: {plan.spec_path}\n\n{phases}\n\n{checks}\n\n{targets}"


def plan_tasks(plan: Plan) -> str:
    rows = [
        [
            t.id,
            t.phase.id,
            t.check.probe.kind,
            t.target.name,
            ",".join(n.task_id for n in t.needs[:3])
            + (f",+{len(t.needs) - 3}" if len(t.needs) > 3 else "")
            or "—",
            t.skip.text if t.skip else t.error or "",
        ]
        for t in (plan.tasks[i] for i in plan.order)
    ]
    return f"{len(rows)} tasks, in dependency order (nothing was probed)\n\n" + table(
        ["TASK", "PHASE", "PROBE", "TARGET", "NEEDS", "NOTE"], rows
    )


def explain(tasks: Sequence[Task]) -> str:
    first = tasks[0]
    check, kind = first.check, registry()[first.check.probe.kind]
    lines = [
        f"{check.id} — {_title(first)}",
        f"  phase:      {first.phase.id} ({first.phase.title or first.phase.id})",
        f"  category:   {check.category or '—'}",
        f"  failure:    {check.failure or '—'}",
        f"  severity:   {check.severity.value}",
        f"  runs on:    {', '.join(dict.fromkeys(t.target.name for t in tasks))}",
        f"  needs:      {', '.join(check.needs + first.phase.needs) or '—'}",
        f"  timeout:    {check.timeout:g}s"
        + (f", retry {check.retry.attempts}× from {check.retry.backoff:g}s" if check.retry else ""),
    ]
    if check.when is not None:
        lines.append(f"  when:       {check.when}")
    params = first.params.model_dump(exclude_defaults=True) if first.params else {}
    lines.append(f"  probe:      {kind.kind} {json.dumps(params) if params else '(defaults)'}")
    lines.append(f"              {(kind.__doc__ or '').strip().splitlines()[0]}")
    source = "declared" if check.expect is not None else "default for this probe"
    lines.append(f"  expects ({source}):")
    lines += [f"    {path} {matcher.text}" for path, matcher in first.expect.items()] or [
        "    the probe observes without error"
    ]
    lines.append(f"  diagnostic: {check.diagnostic or '(the unmet expectation or error)'}")
    lines.append(f"  fix:        {check.fix or '—'}")
    if kind.facts:
        lines.append("  facts it observes:")
        lines += [f"    {name:<14} {meaning}" for name, meaning in kind.facts.items()]
    return "\n".join(lines)


def _title(task: Task) -> str:
    """The title as reports will show it; one that needs facts stays a template here."""
    check = task.check
    title = check.title or check.failure or check.id
    try:
        return template.render_text(title, {**task.context, "facts": {}, "error": ""})
    except template.RenderError:
        return title
