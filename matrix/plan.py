"""Spec → Plan: vars rendered, checks × targets × matrix cells expanded into tasks, a DAG.

Everything that can be known without touching the world is decided here (probe params valid,
expectations compiled, `when` evaluated, dependencies resolved, cycles found), so `validate`
catches it and the engine only executes.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

from pydantic import ValidationError

from matrix import template
from matrix.expect import Expectation, ExpectError, compile_expect
from matrix.load import Loaded, display_name, template_problems, validation_problems
from matrix.probe import BROKEN_PLUGINS, REPLACED, ProbeClass, ProbeParams, registry
from matrix.problems import Problem, SpecInvalid, did_you_mean
from matrix.spec import Check, Phase, ProbeRef, Spec, TargetSpec

LOCAL_NAMES = ("local", "controller")


@dataclass(frozen=True)
class TargetRef:
    """One concrete place a task runs: `local` or one host of a group."""

    name: str
    host: str
    group: str
    via: str = "local"
    options: TargetSpec | None = None


LOCAL = TargetRef("local", "localhost", "local")


@dataclass(frozen=True)
class Need:
    """`strict` needs must pass; phase needs only block on critical failures."""

    task_id: str
    strict: bool


@dataclass
class Task:
    """One (check × target × matrix cell): what the engine runs and reports on."""

    id: str
    check: Check
    phase: Phase
    target: TargetRef
    cell: dict[str, Any]
    context: dict[str, Any]
    params: ProbeParams | None = None
    expect: Expectation = field(default_factory=dict)
    needs: list[Need] = field(default_factory=list)
    skip: str | None = None
    not_applicable: str | None = None
    error: str | None = None


@dataclass
class Filters:
    phases: Sequence[str] = ()
    checks: Sequence[str] = ()
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()
    limit: Sequence[str] = ()

    def reason(self, check: Check, phase: Phase, target: TargetRef) -> str | None:
        """Why a task is filtered out, or None when selected."""
        limited = self.limit and target.via == "ssh"
        if limited and not any(fnmatch(target.name, pattern) for pattern in self.limit):
            return "filtered out by --limit"
        if self.phases and phase.id not in self.phases:
            return "filtered out by --phase"
        if self.checks and not any(fnmatch(check.id, pattern) for pattern in self.checks):
            return "filtered out by --check"
        if self.tags and not set(self.tags) & set(check.tags):
            return "filtered out by --tags"
        if set(self.skip_tags) & set(check.tags):
            return "filtered out by --skip-tags"
        return None


@dataclass
class Plan:
    spec: Spec
    spec_path: str
    vars: dict[str, Any]
    tasks: dict[str, Task]
    order: list[str]
    targets: dict[str, TargetRef]
    warnings: list[str] = field(default_factory=list)
    # the values of `secrets:` in the environment the plan was rendered with, for redaction
    secret_values: dict[str, str] = field(default_factory=dict)


class _Planner:
    def __init__(self, loaded: Loaded, environ: Mapping[str, str]):
        self.loaded = loaded
        self.spec = loaded.spec
        static = template_problems(loaded.spec, loaded.source)
        self.problems: list[Problem] = loaded.problems + [problem for _, problem in static]
        self.unrenderable = {loc[:4] for loc, _ in static}
        self.kinds = registry()
        self.warnings: list[str] = []
        env = template.EnvView(environ, "environment variable")
        secret = template.EnvView(environ, "secret", frozenset(self.spec.secrets))
        self.base: dict[str, Any] = {"env": env, "secret": secret}
        self.vars = self._render_vars()
        self.base["vars"] = self.vars
        self.groups = self._expand_targets()

    def problem(self, loc: Sequence[Any], message: str, *, key: bool = False) -> None:
        where, name = self.loaded.where(loc, key=key)
        self.problems.append(Problem(where, name, message))

    def _render_vars(self) -> dict[str, Any]:
        rendered: dict[str, Any] = dict(self.spec.vars)
        for name, value in self.spec.vars.items():
            try:
                rendered[name] = template.render_tree(value, {**self.base, "vars": rendered})
            except template.RenderError as exc:
                self.problem(("vars", name), str(exc))
        return rendered

    def _expand_targets(self) -> dict[str, list[TargetRef]]:
        groups = {name: [LOCAL] for name in LOCAL_NAMES}
        for name, spec in self.spec.targets.items():
            spec = self._render_target(name, spec)
            if spec.via == "local":
                groups[name] = [TargetRef(name, "localhost", name, "local", spec)]
                continue
            refs = []
            for i, host in enumerate(spec.hosts):
                try:
                    host = str(template.render(host, self.base)).strip()
                except template.RenderError as exc:
                    if ("targets", name, "hosts", i) not in self.unrenderable:
                        self.problem(("targets", name, "hosts", i), str(exc))
                    continue
                refs += [TargetRef(h, h, name, spec.via, spec) for h in expand_hosts(host)]
            groups[name] = refs
            if spec.insecure and refs:
                self.warnings.append(
                    f"host keys are NOT verified for target group '{name}' (insecure: true): "
                    "anyone on the network path could impersonate its hosts"
                )
        return groups

    def _render_target(self, name: str, spec: TargetSpec) -> TargetSpec:
        """Templated target options (key, user, python, …); hosts are rendered one by one."""
        if spec.password is not None and not _SECRET_ONLY.match(spec.password):
            self.problem(("targets", name, "password"), _secret_only("password"))
            spec = spec.model_copy(update={"password": None})
        options = spec.model_dump(exclude={"hosts"}, exclude_defaults=True)
        try:
            rendered = template.render_tree(options, self.base)
        except template.RenderError as exc:
            if ("targets", name) not in {loc[:2] for loc in self.unrenderable}:
                self.problem(("targets", name), str(exc))
            return spec
        return spec.model_copy(update=rendered)

    # ── tasks ───────────────────────────────────────────────────────────────

    def tasks_for(self, p: int, phase: Phase, c: int, check: Check, filters: Filters) -> list[Task]:
        loc = ("phases", p, "checks", c)
        kind = self.kinds.get(check.probe.kind)
        replaced = REPLACED.get(check.probe.kind)
        if replaced:
            first, now = replaced
            warning = (
                f"probe kind '{check.probe.kind}' comes from {now}, which replaced the one in "
                f"{first}: uninstall one of them if that is not intended"
            )
            if warning not in self.warnings:
                self.warnings.append(warning)
        if kind is None:
            hint = did_you_mean(check.probe.kind, self.kinds)
            broken = "".join(
                f"; plugin {module} failed to import ({why})"
                for module, why in BROKEN_PLUGINS.items()
            )
            message = f"unknown probe kind '{check.probe.kind}'{hint}{broken}"
            self.problem((*loc, "probe", "kind"), message)
        targets = self._targets_of(loc, check)
        tasks = []
        for target, cell in itertools.product(targets, self._cells(loc, check)):
            task = self._task(loc, phase, check, target, cell, kind)
            task.skip = filters.reason(check, phase, target) or task.not_applicable
            tasks.append(task)
        return tasks

    def _targets_of(self, loc: tuple, check: Check) -> list[TargetRef]:
        try:
            name = str(template.render(check.on, self.base))
        except template.RenderError as exc:
            self.problem((*loc, "on"), str(exc))
            return []
        if name not in self.groups:
            if name in self.loaded.dropped:
                return []
            hint = did_you_mean(name, self.groups)
            self.problem((*loc, "on"), f"unknown target '{name}'{hint}; declare it under targets:")
            return []
        if not self.groups[name]:
            message = f"target group '{name}' has no hosts: set its hosts (or the vars they use)"
            self.problem((*loc, "on"), message)
        return self.groups[name]

    def _cells(self, loc: tuple, check: Check) -> list[dict[str, Any]]:
        axes = {}
        for axis, values in check.matrix.items():
            try:
                axes[axis] = template.render_tree(values, self.base)
            except template.RenderError as exc:
                self.problem((*loc, "matrix", axis), str(exc))
                return []
            if not isinstance(axes[axis], list):
                message = f"expected a list of values, got {axes[axis]!r}"
                self.problem((*loc, "matrix", axis), message)
                return []
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]

    def _task(
        self,
        loc: tuple,
        phase: Phase,
        check: Check,
        target: TargetRef,
        cell: dict[str, Any],
        kind: ProbeClass | None,
    ) -> Task:
        task_id = check.id
        if cell:
            task_id += "[" + ",".join(f"{k}={v}" for k, v in cell.items()) + "]"
        if target is not LOCAL:
            task_id += f"@{target.name}"
        context = {
            **self.base,
            "target": {"name": target.name, "host": target.host, "group": target.group},
            "check": {
                "id": check.id,
                "title": check.title or check.category or check.id,
                "category": check.category,
                "failure": check.failure,
                "severity": check.severity.value,
                "phase": phase.id,
            },
            "matrix": cell,
        }
        task = Task(task_id, check, phase, target, cell, context)
        try:
            if check.when is not None and not template.truthy(template.render(check.when, context)):
                condition = str(check.when).replace("{{", "").replace("}}", "").strip()
                task.not_applicable = f"when: {condition} is false"
            if kind is not None:
                task.params = self._params(loc, check, kind, context, task.not_applicable)
                task.expect = self._expect(loc, check, kind, context)
        except template.NotConfigured as exc:
            task.error = str(exc)
        return task

    def _params(
        self, loc: tuple, check: Check, kind: ProbeClass, context: dict, unused: str | None
    ) -> ProbeParams | None:
        """The probe's params, validated. A task that will not run (`unused`: its `when` is
        false) is excused bad values — its vars are often blank then — but not unknown keys."""
        raw = dict(check.probe.model_extra or {})
        for name in kind.secret_fields:
            if name in raw and not _SECRET_ONLY.match(str(raw[name])):
                self.problem((*loc, "probe", name), _secret_only(name))
                return None
        try:
            rendered = template.render_tree(raw, context, shell_keys=frozenset({"shell"}))
        except template.NotConfigured:
            raise
        except template.RenderError as exc:
            if loc not in self.unrenderable:
                self.problem((*loc, "probe"), str(exc))
            return None
        try:
            return kind.model_validate(rendered)
        except ValidationError as exc:
            _from_environment(exc, raw, rendered)
            source = self.loaded.source["phases"][loc[1]]["checks"][loc[3]]["probe"]
            prefix = self.loaded.where((*loc, "probe"))[1]
            for problem in validation_problems(exc, source, kind, only_keys=bool(unused)):
                name = f"{prefix}.{problem.key}" if problem.key else prefix
                self.problems.append(Problem(problem.where, name, problem.message))
            return None

    def _expect(self, loc: tuple, check: Check, kind: ProbeClass, context: dict) -> Expectation:
        declared = check.expect is not None
        try:
            raw = template.render_tree(check.expect if declared else kind.default_expect, context)
        except template.NotConfigured:
            raise
        except template.RenderError as exc:
            if loc not in self.unrenderable:
                self.problem((*loc, "expect"), str(exc))
            return {}
        try:
            return compile_expect(raw)
        except ExpectError as exc:
            if not declared:
                raise
            self.problem((*loc, "expect", *exc.path), str(exc), key=True)
            return {}

    # ── SSH connections ─────────────────────────────────────────────────────

    def connect_tasks(self, tasks: dict[str, Task]) -> dict[str, Task]:
        """Put one `ssh.connect` task before the first task of every SSH host and make all
        the host's tasks need it: a dead host gives one error, not N copies of a timeout.
        A check of kind `ssh.connect` already on that host plays that part instead."""
        explicit = {t.target.name: t for t in tasks.values() if t.check.probe.kind == "ssh.connect"}
        ordered: dict[str, Task] = {}
        connect: dict[str, Task] = {}
        for task in tasks.values():
            ref = task.target
            if ref.via == "ssh" and task.skip is None and ref.name not in connect:
                connect[ref.name] = explicit.get(ref.name) or self._connect_task(task)
                ordered.setdefault(connect[ref.name].id, connect[ref.name])
            ordered.setdefault(task.id, task)
        for task in ordered.values():
            gate = connect.get(task.target.name)
            if gate is not None and gate is not task:
                task.needs.append(Need(gate.id, True))
        return ordered

    def _connect_task(self, first: Task) -> Task:
        check = Check(
            id="ssh-connect",
            title="SSH connection",
            category="SSH Access",
            failure="Cannot connect to the host",
            probe=ProbeRef(kind="ssh.connect"),
            diagnostic="{{ error }}",
            fix=(
                "Check the address and port of {{ target.host }}, that sshd runs there, the "
                "user, the key (chmod 600) and known_hosts"
            ),
            on=first.target.group,
            timeout=(first.target.options.connect_timeout if first.target.options else 10) + 5,
        )
        p = self.spec.phases.index(first.phase)
        return self._task(
            ("phases", p), first.phase, check, first.target, {}, self.kinds["ssh.connect"]
        )

    # ── dependencies ────────────────────────────────────────────────────────

    def link(self, tasks: dict[str, Task]) -> None:
        by_check: dict[str, list[Task]] = {}
        by_phase: dict[str, list[Task]] = {}
        for task in tasks.values():
            by_check.setdefault(task.check.id, []).append(task)
            by_phase.setdefault(task.phase.id, []).append(task)
        phase_ids = {phase.id for phase in self.spec.phases}
        check_ids = {check.id for phase in self.spec.phases for check in phase.checks}
        known = phase_ids | check_ids | self.loaded.dropped
        for p, phase in enumerate(self.spec.phases):
            for i, ref in enumerate(phase.needs):
                if ref not in known:
                    message = f"unknown phase '{ref}'{did_you_mean(ref, phase_ids)}"
                    self.problem(("phases", p, "needs", i), message)
            for c, check in enumerate(phase.checks):
                for i, ref in enumerate(check.needs):
                    if ref not in known:
                        hint = did_you_mean(ref, [*check_ids, *phase_ids])
                        self.problem(
                            ("phases", p, "checks", c, "needs", i),
                            f"unknown check or phase '{ref}'{hint}",
                        )
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

    def find_cycle(self) -> None:
        """Dependency cycles over checks and phases, reported with the loop spelled out."""
        edges: dict[str, list[str]] = {}
        where: dict[str, tuple] = {}
        for p, phase in enumerate(self.spec.phases):
            node = f"phase {phase.id}"
            edges[node] = [f"check {c.id}" for c in phase.checks] + [
                f"phase {r}" for r in phase.needs
            ]
            where[node] = ("phases", p, "needs")
            for c, check in enumerate(phase.checks):
                refs = [*check.needs, *phase.needs]
                edges[f"check {check.id}"] = [
                    f"phase {r}" if r in {ph.id for ph in self.spec.phases} else f"check {r}"
                    for r in refs
                ]
                where[f"check {check.id}"] = ("phases", p, "checks", c, "needs")
        cycle = _first_cycle(edges)
        if cycle:
            loop = " → ".join(cycle)
            self.problem(where[cycle[0]], f"dependency cycle: {loop}")


def _from_environment(exc: ValidationError, raw: dict[str, Any], rendered: Any) -> None:
    """A bad value that came from this machine's environment (`{{ env.PORT }}` with
    PORT=abc) is that task's error, not a broken spec: one bad row never sinks the run."""
    for error in exc.errors(include_url=False):
        field = error["loc"][0] if error["loc"] else None
        text = raw.get(field) if isinstance(field, str) else None
        if not isinstance(text, str) or not _reads_environment(text):
            continue
        value = rendered.get(field) if isinstance(rendered, dict) else None
        why = error["msg"].removeprefix("Value error, ")
        raise template.NotConfigured(f"{field}={value!r} (from {text.strip()}): {why}")


def _reads_environment(text: str) -> bool:
    try:
        return any(name in ("env", "secret") for name, _ in template.references(text))
    except template.RenderError:
        return False


_SECRET_ONLY = re.compile(r"^\s*\{\{\s*secret(?:\.\w+|\[[^\]{}]+\])\s*\}\}\s*$")


def _secret_only(key: str) -> str:
    return (
        f'{key} must come from a secret: {key}: "{{{{ secret.NAME }}}}" with NAME listed under '
        "secrets: (a literal would end up in reports and shell history)"
    )


_RANGE = re.compile(r"\[(\d+)-(\d+)\]")


def expand_hosts(pattern: str) -> list[str]:
    """`gpu-[01-16]` → gpu-01 … gpu-16 (zero padding kept); ranges may repeat."""
    found = _RANGE.search(pattern)
    if not found:
        return [pattern] if pattern else []
    first, last = found[1], found[2]
    width = len(first) if first.startswith("0") else 0
    head, tail = pattern[: found.start()], pattern[found.end() :]
    return [
        host
        for number in range(int(first), int(last) + 1)
        for host in expand_hosts(f"{head}{number:0{width}d}{tail}")
    ]


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


def _topological(tasks: Mapping[str, Task]) -> list[str]:
    """Spec order, moved only as far as dependencies require (for the fix list)."""
    order, seen = [], set()

    def visit(task_id: str) -> None:
        if task_id in seen:
            return
        seen.add(task_id)
        for need in tasks[task_id].needs:
            visit(need.task_id)
        order.append(task_id)

    for task_id in tasks:
        visit(task_id)
    return order


def _include_dependencies(tasks: dict[str, Task], selected: Iterable[Task]) -> None:
    """A selected check pulls in the checks it strictly needs: they cannot be skipped."""
    pending = [t for t in selected if t.skip is None]
    while pending:
        for need in pending.pop().needs:
            needed = tasks[need.task_id]
            if need.strict and (needed.skip or "").startswith("filtered"):
                needed.skip = needed.not_applicable
                if needed.skip is None:
                    pending.append(needed)


def build_plan(
    loaded: Loaded, filters: Filters | None = None, environ: Mapping[str, str] | None = None
) -> Plan:
    """Expand the spec; raise SpecInvalid listing every problem found."""
    filters = filters or Filters()
    environ = os.environ if environ is None else environ
    planner = _Planner(loaded, environ)
    tasks: dict[str, Task] = {}
    seen_ids: dict[str, tuple] = {}
    for p, phase in enumerate(loaded.spec.phases):
        if phase.id in seen_ids:
            planner.problem(
                ("phases", p, "id"), "duplicate id (ids must be unique across the spec)"
            )
        seen_ids.setdefault(phase.id, ("phases", p))
        for c, check in enumerate(phase.checks):
            if check.id in seen_ids:
                planner.problem(
                    ("phases", p, "checks", c, "id"),
                    "duplicate id (ids must be unique across the spec)",
                )
                continue
            seen_ids[check.id] = ("phases", p, "checks", c)
            for task in planner.tasks_for(p, phase, c, check, filters):
                if task.id in tasks:
                    clash = f"two tasks would share the id '{task.id}'"
                    message = f"{clash}: make matrix values and host names distinct"
                    planner.problem(("phases", p, "checks", c, "id"), message)
                tasks[task.id] = task
    planner.find_cycle()
    planner.link(tasks)
    if planner.problems:
        raise SpecInvalid(planner.problems)
    _include_dependencies(tasks, tasks.values())
    tasks = planner.connect_tasks(tasks)
    targets = {t.target.name: t.target for t in tasks.values()}
    return Plan(
        loaded.spec,
        display_name(loaded.path),
        planner.vars,
        tasks,
        _topological(tasks),
        targets,
        planner.warnings,
        {name: environ[name] for name in loaded.spec.secrets if name in environ},
    )
