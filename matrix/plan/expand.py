"""Spec → tasks: vars rendered, target groups expanded into hosts, and each check × target ×
matrix cell made a task with validated params and a compiled expectation.

Everything that can be known without touching the world is decided here (probe params valid,
expectations compiled, `when` evaluated), so `validate` catches it and the engine only executes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from matrix.errors import TransportError
from matrix.plan.model import Need, Task
from matrix.probe import ProbeClass, ProbeParams, registry
from matrix.results import Skip, SkipKind
from matrix.spec import template
from matrix.spec.expect import Expectation, ExpectError, compile_expect
from matrix.spec.load import Loaded
from matrix.spec.locate import template_problems, validation_problems
from matrix.spec.models import (
    MAX_SECONDS,
    SLURM_OPTIONS,
    SSH_OPTIONS,
    Check,
    Phase,
    ProbeRef,
    TargetSpec,
)
from matrix.spec.problems import Position, Problem, did_you_mean
from matrix.spec.yaml import YMap
from matrix.transport import TRANSPORTS, Gate, load, transport
from matrix.transport.base import (
    LOCAL,
    LOCAL_NAMES,
    MANY_HOSTS,
    TargetRef,
    expand_hosts,
    host_count,
    hostlist_problem,
)

_UNRENDERED = object()  # a template in it could not be rendered; the problem is reported
# Tasks per spec, counted before any is made: a fleet of 1,000 hosts × 30 checks fits with
# room to spare; a typo'd range or matrix (100 × 100 × 100) is refused in milliseconds.
MAX_TASKS = 500_000  # 10,000 hosts × 50 checks; a task costs about 1.5 KB


class Planner:
    """Collects every problem as it expands, each at its file:line and key."""

    def __init__(self, loaded: Loaded, environ: Mapping[str, str]):
        self.loaded = loaded
        self.spec = loaded.spec
        static = template_problems(loaded.spec, loaded.source)
        self.problems: list[Problem] = loaded.problems + [problem for _, problem in static]
        self.unrenderable = {loc[:4] for loc, _ in static}
        self.kinds = registry()
        self.warnings: list[str] = []
        self.hosts = 0  # hosts listed so far, across groups
        self.planned = 0  # tasks counted so far
        self.capped = False  # MAX_TASKS was crossed: no more tasks are made
        self.refused: set[str] = set()  # groups with a host pattern over the cap
        env = template.EnvView(environ, "environment variable")
        secret = template.EnvView(environ, "secret", frozenset(self.spec.secrets))
        self.base: dict[str, Any] = {"env": env, "secret": secret}
        self.vars = self._render_vars()
        self.base["vars"] = self.vars
        self.groups = self._expand_targets()

    def problem(
        self, loc: Sequence[Any], message: str, *, key: bool = False, code: str = ""
    ) -> None:
        where, name = self.loaded.where(loc, key=key)
        self.problems.append(Problem(where, name, message, code))

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
            if not transport(spec.via).remote:
                groups[name] = [TargetRef(name, "localhost", name, "local", spec)]
                continue
            refs = []
            for where, host in self._host_patterns(name, spec):
                if (wrong := hostlist_problem(host)) is not None:
                    self.problem(where, wrong)
                    self.refused.add(name)
                    continue
                count = host_count(host)
                if not self._fits(where, f"{_short(host)} names", count, "hosts", self.hosts):
                    self.refused.add(name)
                    continue
                self.hosts += count
                refs += [TargetRef(h, h, name, spec.via, spec) for h in expand_hosts(host)]
            groups[name] = refs
            if spec.insecure and refs:
                self.warnings.append(
                    f"host keys are NOT verified for target group '{name}' (insecure: true): "
                    "anyone on the network path could impersonate its hosts"
                )
        return groups

    def _host_patterns(self, name: str, spec: TargetSpec) -> list[tuple[tuple, str]]:
        """(where, pattern) of each host pattern of a remote group: its `hosts:` rendered, or
        what its transport's inventory lists (a Slurm partition's nodes)."""
        self._options_fit(name, spec)
        row = transport(spec.via)
        if row.inventory is None:
            patterns = []
            for i, host in enumerate(spec.hosts):
                where = ("targets", name, "hosts", i)
                try:
                    patterns.append((where, template.render_text(host, self.base).strip()))
                except template.RenderError as exc:
                    if where not in self.unrenderable:
                        self.problem(where, str(exc))
            return patterns
        where = (
            "targets",
            name,
            next((k for k in ("nodes", "partition") if getattr(spec, k)), "via"),
        )
        try:
            return [(where, pattern) for pattern in load(row.inventory)(spec)]
        except TransportError as exc:
            self.problem(where, str(exc))
            self.refused.add(name)  # its checks are not told again that it has no hosts
            return []

    def _options_fit(self, name: str, spec: TargetSpec) -> None:
        """An option of another transport is a mistake (a Slurm group's `user:`), said at
        its key."""
        given = spec.model_fields_set - {
            "via",
            "python",
            "agent",
            "max_sessions",
            "connect_timeout",
        }
        others = given - (SLURM_OPTIONS if spec.via == "slurm" else SSH_OPTIONS)
        for key in sorted(others):
            if spec.via == "slurm":
                why = (
                    "a `via: slurm` group lists its nodes with `nodes:` (a Slurm hostlist) or "
                    "takes its partition's"
                    if key == "hosts"
                    else f"`{key}` is an SSH option; a `via: slurm` group reaches its nodes "
                    "through srun"
                )
            else:
                why = f"`{key}` is a Slurm option: set `via: slurm` for a group of Slurm nodes"
            self.problem(("targets", name, key), why, key=True)

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

    def tasks(self) -> dict[str, Task]:
        """Every check's tasks by id, in spec order; duplicate ids are problems."""
        tasks: dict[str, Task] = {}
        seen: set[str] = set()
        duplicate = "duplicate id (ids must be unique across the spec)"
        if not self.spec.phases and not self.loaded.problems:
            self.problem(("phases",), "no phases: the spec would check nothing; add a phase")
        for p, phase in enumerate(self.spec.phases):
            if phase.id in seen:
                self.problem(("phases", p, "id"), duplicate)
            seen.add(phase.id)
            if not phase.checks and not self.loaded.problems:  # else its checks may be set aside
                message = "no checks: the phase would check nothing; add checks or remove it"
                self.problem(("phases", p), message)
            for c, check in enumerate(phase.checks):
                if check.id in seen:
                    self.problem(("phases", p, "checks", c, "id"), duplicate)
                    continue
                seen.add(check.id)
                for task in self._tasks_for(p, phase, c, check):
                    if task.id in tasks:
                        clash = f"two tasks would share the id '{task.id}'"
                        message = f"{clash}: make matrix values and host names distinct"
                        self.problem(("phases", p, "checks", c, "id"), message)
                    tasks[task.id] = task
        return tasks

    def _tasks_for(self, p: int, phase: Phase, c: int, check: Check) -> list[Task]:
        loc = ("phases", p, "checks", c)
        kind = self.kinds.get(check.probe.kind)
        replaced = self.kinds.replaced.get(check.probe.kind)
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
                for module, why in self.kinds.broken.items()
            )
            message = f"unknown probe kind '{check.probe.kind}'{hint}{broken}"
            self.problem((*loc, "probe", "kind"), message)
        targets = self._targets_of(loc, check)
        spans = self._spans(loc, check, kind, targets)
        if spans:
            targets = targets[:1]  # one task a cell, on the group's first host, spanning all
        axes = self._axes(loc, check)
        if axes is None:
            return []
        count = _product([len(targets), *map(len, axes.values())])
        hosts = f"{len(targets):,} host{'' if len(targets) == 1 else 's'}"
        sizes = [hosts, *(f"{len(values):,} {axis}" for axis, values in axes.items())]
        where = (*loc, "matrix") if axes else (*loc, "on")
        if not self._fits(where, f"{' × '.join(sizes)} =", count, "tasks", self.planned):
            return []
        self.planned += count
        cells = list(enumerate(itertools.product(*axes.values())))
        shared: dict[int, _Outcome] | None = None if _reads_target(check) else {}
        made = [
            self._task(loc, phase, check, target, dict(zip(axes, cell)), kind, (shared, i))
            for target, (i, cell) in itertools.product(targets, cells)
        ]
        group = TargetRef(spans[0].group, spans[0].group, spans[0].group) if spans else None
        for task in made if group else ():  # reported on the group, run on its hosts
            task.id = f"{task.id.rpartition('@')[0]}@{group.name}"
            task.target, task.spans = group, spans
        if check.consistent:
            made += self._comparisons(loc, phase, check, made)
        return made

    def _spans(
        self, loc: tuple, check: Check, kind: ProbeClass | None, targets: list[TargetRef]
    ) -> tuple[TargetRef, ...]:
        """The hosts a check `across` a group spans as one task; () for any other check."""
        if check.across is None:
            return ()
        if kind is not None and not kind.spans:
            message = f"probe kind '{check.probe.kind}' runs on one host: use `on:` to fan it out"
            self.problem((*loc, "across"), message)
            return ()
        if "on" in check.model_fields_set:
            self.problem((*loc, "across"), "give `on:` (a task per host) or `across:`, not both")
            return ()
        return tuple(targets)

    def _comparisons(self, loc: tuple, phase: Phase, check: Check, made: list[Task]) -> list[Task]:
        """A check's `consistent` rows: per matrix cell, one task on the group that waits for
        every host's task of that cell and compares their facts (matrix/consistency.py)."""
        hosts = [task for task in made if task.target is not LOCAL]
        if not hosts:
            message = "needs a check `on` a group of hosts: there is nothing to compare on one"
            self.problem((*loc, "consistent"), message)
            return []
        cells: dict[str, list[Task]] = {}
        for task in hosts:
            cells.setdefault(task.id.rpartition("@")[0], []).append(task)
        group = hosts[0].target.group
        where = TargetRef(group, group, group)
        comparisons = []
        for name, members in cells.items():
            task = Task(
                f"{name}@{group}:consistent", check, phase, where, members[0].cell,
                members[0].context,
                needs=[Need(member.id, strict=False, blocks=False) for member in members],
                compares=tuple(check.consistent),
            )  # fmt: skip
            task.skip = next((m.skip for m in members if m.skip and not m.skip.applies), None)
            comparisons.append(task)
        return comparisons

    def _fits(self, loc: tuple, what: str, count: int, noun: str, before: int) -> bool:
        """Whether `count` more hosts or tasks keep the spec within MAX_TASKS. Past it no more
        are made; each item over the cap by itself is reported, and the one that crosses it
        only with those before it."""
        if not self.capped and before + count <= MAX_TASKS:
            return True
        if count > MAX_TASKS or not self.capped:
            shown = f"{count:,}" if count < MANY_HOSTS else "over 10^18"
            earlier = f" on top of the {before:,} before it" if count <= MAX_TASKS else ""
            message = (
                f"{what} {shown} {noun}{earlier}: a spec may plan at most {MAX_TASKS:,} tasks; "
                "narrow the range or the matrix, or split the spec"
            )
            self.problem(loc, message)
        self.capped = True
        return False

    def _targets_of(self, loc: tuple, check: Check) -> list[TargetRef]:
        key = "on" if check.across is None else "across"
        loc = (*loc, key)
        try:
            name = template.render_text(getattr(check, key), self.base)
        except template.RenderError as exc:
            self.problem(loc, str(exc))
            return []
        if name not in self.groups:
            if name in self.loaded.dropped:
                return []
            hint = did_you_mean(name, self.groups)
            self.problem(loc, f"unknown target '{name}'{hint}; declare it under targets:")
            return []
        if not self.groups[name] and name not in self.refused:
            message = f"target group '{name}' has no hosts: set its hosts (or the vars they use)"
            self.problem(loc, message)
        return self.groups[name]

    def _axes(self, loc: tuple, check: Check) -> dict[str, list[Any]] | None:
        """The check's matrix axes rendered, each a non-empty list; None (the problem
        reported) when one is not."""
        axes = {}
        for axis, values in check.matrix.items():
            try:
                axes[axis] = template.render_tree(values, self.base)
            except template.RenderError as exc:
                self.problem((*loc, "matrix", axis), str(exc))
                return None
            if not isinstance(axes[axis], list):
                message = f"expected a list of values, got {axes[axis]!r}"
                self.problem((*loc, "matrix", axis), message)
                return None
            if not axes[axis]:
                message = (
                    "no values: the check would make no tasks and silently drop out of the "
                    "verdict; give the axis at least one value or remove it"
                )
                self.problem((*loc, "matrix", axis), message)
                return None
        return axes

    def _task(
        self,
        loc: tuple,
        phase: Phase,
        check: Check,
        target: TargetRef,
        cell: dict[str, Any],
        kind: ProbeClass | None,
        sharing: tuple[dict[int, _Outcome] | None, int] = (None, 0),
    ) -> Task:
        """One task. `sharing`: where the outcome of rendering the check for a matrix cell is
        kept, so that a check whose templates never read `target` is rendered and validated
        once per cell, not once per host of a fleet (None: it reads `target`)."""
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
        shared, key = sharing
        outcome = shared.get(key) if shared is not None else None
        if outcome is None:
            outcome = self._outcome(loc, check, kind, context)
            if shared is not None:
                shared[key] = outcome
        task.skip, task.params, task.expect, task.error = outcome
        return task

    def _outcome(
        self, loc: tuple, check: Check, kind: ProbeClass | None, context: dict
    ) -> _Outcome:
        """The check rendered in one context: (skip, params, expectation, error)."""
        skip: Skip | None = None
        params: ProbeParams | None = None
        expect: Expectation = {}
        try:
            if check.when is not None and not self._applies(loc, check.when, context):
                condition = str(check.when).replace("{{", "").replace("}}", "").strip()
                because = self._rendered(loc, "skip_reason", check.skip_reason or "", context)
                because = "" if because is _UNRENDERED else str(because)
                skip = Skip(SkipKind.not_applicable, condition, because)
            if kind is not None:
                params = self._params(loc, check, kind, context, unused=skip is not None)
                expect = self._expect(loc, check, kind, context)
        except template.NotConfigured as exc:
            return skip, params, expect, str(exc)
        return skip, params, expect, None

    def _applies(self, loc: tuple, when: str | bool, context: dict) -> bool:
        """Whether `when` renders true. One that cannot render (an undefined name, a division
        by zero, any failure at all) is a problem at the check's `when:`, and the task is
        treated as not applying, so its params are held only to known keys; a missing env var
        or secret is the task's error (NotConfigured goes up)."""
        try:
            return template.truthy(template.render(when, context))
        except template.NotConfigured:
            raise
        except Exception as exc:
            if loc not in self.unrenderable:
                self.problem((*loc, "when"), str(exc) or type(exc).__name__)
            return False

    def _rendered(self, loc: tuple, key: str, value: Any, context: dict, **options: Any) -> Any:
        """`value` rendered for one task, or _UNRENDERED with the problem reported at the
        check's `key` (once: the static check may have found it already). A missing env var
        or secret (NotConfigured) is the task's error, not the spec's: it goes up."""
        try:
            return template.render_tree(value, context, **options)
        except template.NotConfigured:
            raise
        except template.RenderError as exc:
            if loc not in self.unrenderable:
                self.problem((*loc, key), str(exc))
            return _UNRENDERED

    def _params(
        self, loc: tuple, check: Check, kind: ProbeClass, context: dict, *, unused: bool
    ) -> ProbeParams | None:
        """The probe's params, validated. A task that will not run (`unused`: its `when` is
        false) is excused bad values — its vars are often blank then — but not unknown keys."""
        raw = dict(check.probe.model_extra or {})
        for name in kind.secret_fields:
            if name in raw and not _SECRET_ONLY.match(str(raw[name])):
                self.problem((*loc, "probe", name), _secret_only(name))
                return None
        rendered = self._rendered(loc, "probe", raw, context, shell_keys=frozenset({"shell"}))
        if rendered is _UNRENDERED:
            return None
        rendered = _without_omitted(raw, rendered)
        try:
            return kind.model_validate(rendered)
        except ValidationError as exc:
            _from_environment(exc, raw, rendered)
            source = self.loaded.source["phases"][loc[1]]["checks"][loc[3]]["probe"]
            prefix = self.loaded.where((*loc, "probe"))[1]
            for problem in validation_problems(exc, source, kind, only_keys=unused):
                name = f"{prefix}.{problem.key}" if problem.key else prefix
                param = raw.get(problem.key.split(".")[0].split("[")[0])
                message = problem.message + self._overrides_in(param)
                self.problems.append(Problem(problem.where, name, message))
            return None

    def _overrides_in(self, value: Any) -> str:
        """` (vars.port is --var port=abc)`: a bad value that came from the command line or a
        vars file says so, since the spec line it is reported at looks right."""
        if not isinstance(value, str) or not template.is_template(value):
            return ""
        declared = self.loaded.source.get("vars")
        try:
            names = {attr for root, attr in template.references(value) if root == "vars"}
        except template.RenderError:
            return ""
        spec_file = self.loaded.where(())[0].file
        given = [
            f"vars.{name} = {self.vars.get(name)!r} from {_origin(name, declared.values_at[name])}"
            for name in sorted(n for n in names if n)
            if isinstance(declared, YMap)
            and name in declared.values_at
            and declared.values_at[name].file != spec_file
        ]
        return f" ({'; '.join(given)})" if given else ""

    def _expect(self, loc: tuple, check: Check, kind: ProbeClass, context: dict) -> Expectation:
        declared = check.expect is not None
        raw = self._rendered(
            loc, "expect", check.expect if declared else kind.default_expect, context
        )
        if raw is _UNRENDERED:
            return {}
        try:
            return compile_expect(raw)
        except ExpectError as exc:
            if not declared:
                raise
            self.problem((*loc, "expect", *exc.path), str(exc), key=True)
            return {}

    # ── gates ───────────────────────────────────────────────────────────────

    def gate_tasks(self, tasks: dict[str, Task]) -> dict[str, Task]:
        """Put the transport's gate (`ssh.connect` for SSH) before the first task of every host
        that has one, and make all the host's tasks need it: a dead host gives one error, not
        N copies of a timeout. A check of the gate's kind already on that host plays that part
        instead."""
        kinds = {row.gate.kind for row in TRANSPORTS.values() if row.gate}
        explicit: dict[str, Task] = {}
        for task in tasks.values():
            if task.check.probe.kind in kinds:
                explicit.setdefault(task.target.name, task)
        gated: dict[str, Task] = {}
        ordered: dict[str, Task] = {}
        for task in tasks.values():
            for ref in task.spans or (task.target,):
                gate = transport(ref.via).gate
                if gate is not None and task.skip is None and ref.name not in gated:
                    gated[ref.name] = explicit.get(ref.name) or self._gate_task(task, gate, ref)
                    ordered.setdefault(gated[ref.name].id, gated[ref.name])
            ordered.setdefault(task.id, task)
        for task in ordered.values():
            for ref in task.spans or (task.target,):
                first = gated.get(ref.name)
                if first is not None and first is not task:
                    task.needs.append(Need(first.id, True))
        return ordered

    def _gate_task(self, first: Task, gate: Gate, ref: TargetRef) -> Task:
        """The gate of host `ref`, in the phase of `first`, the first task that needs it."""
        options = ref.options
        check = Check(
            id=gate.id,
            title=gate.title,
            category=gate.category,
            failure=gate.failure,
            probe=ProbeRef(kind=gate.kind),
            diagnostic="{{ error }}",
            fix=gate.fix,
            on=ref.group,
            timeout=min(_gate_timeout(gate, options), MAX_SECONDS),
        )
        p = self.spec.phases.index(first.phase)
        return self._task(("phases", p), first.phase, check, ref, {}, self.kinds[gate.kind])


def _gate_timeout(gate: Gate, options: TargetSpec | None) -> float:
    """The gate's own budget, or the group's connect timeout plus the gate's slack."""
    if gate.budget is not None and options is not None:
        return float(load(gate.budget)(options))
    return (options.connect_timeout if options else 10) + gate.slack


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")


_Outcome = tuple[Skip | None, ProbeParams | None, Expectation, str | None]


def _reads_target(check: Check) -> bool:
    """Whether a template of the check's `when`, probe or expect reads `target` (or cannot be
    read, to be safe): only then do its hosts render it differently."""
    pending: list[Any] = [check.when, check.probe.model_extra or {}, check.expect or {}]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            pending += value
        elif template.is_template(value):
            try:
                if any(name == "target" for name, _ in template.references(value)):
                    return True
            except template.RenderError:
                return True
    return False


def _product(sizes: Sequence[int]) -> int:
    """The product, saturating at MANY_HOSTS: a thousand axes of two values stay a number
    that can be printed."""
    count = 1
    for size in sizes:
        count = min(count * size, MANY_HOSTS)
    return count


def _without_omitted(raw: dict[str, Any], rendered: dict[str, Any]) -> dict[str, Any]:
    """A param whose template renders to none is left out, so the probe's default applies:
    `d_model: "{{ none if vars.entrypoint else vars.d_model }}"` sizes the built-in model only
    when there is no entrypoint. A literal `null` is kept (the param's type decides)."""
    return {
        name: value
        for name, value in rendered.items()
        if value is not None or not template.is_template(raw.get(name))
    }


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


def _origin(name: str, at: Position) -> str:
    """`--var port`, or the vars file and line a value came from."""
    return f"--var {name}" if at.file == "--var" else f"{at.file}:{at.line}"


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
