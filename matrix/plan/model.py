"""The plan's values: one Task per (check × target × matrix cell), its needs, the selection
filters, and the Plan the engine executes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

from matrix.probe import ProbeParams
from matrix.results import Skip, SkipKind
from matrix.spec.expect import Expectation
from matrix.spec.models import Check, Phase, Spec
from matrix.spec.problems import Position, Problem, did_you_mean
from matrix.transport import transport
from matrix.transport.base import TargetRef


@dataclass(frozen=True)
class Need:
    """What a task waits for: one task, or every task of a group (`phase:<id>`, `check:<id>`,
    listed in Plan.groups), so that a phase need on a fleet is one link, not one per task of
    the phase. `strict` needs must pass; phase needs only block on critical failures."""

    task_id: str
    strict: bool
    blocks: bool = True  # False: only waited for (a comparison of hosts' facts runs anyway)


@dataclass
class Task:
    """One (check × target × matrix cell): what the engine runs and reports on. A task the
    engine will not probe has `skip` (filtered out, `when` false) or `error` (a missing env
    var or secret: it cannot be configured on this machine)."""

    id: str
    check: Check
    phase: Phase
    target: TargetRef
    cell: dict[str, Any]
    context: dict[str, Any]
    params: ProbeParams | None = None
    expect: Expectation = field(default_factory=dict)
    needs: list[Need] = field(default_factory=list)
    skip: Skip | None = None
    error: str | None = None
    compares: tuple[str, ...] = ()  # a check's `consistent` row: these facts across its hosts
    spans: tuple[TargetRef, ...] = ()  # a check `across` a group: every host of it, one task


@dataclass
class Filters:
    phases: Sequence[str] = ()
    checks: Sequence[str] = ()
    tags: Sequence[str] = ()
    skip_tags: Sequence[str] = ()
    limit: Sequence[str] = ()

    def reason(
        self, check: Check, phase: Phase, target: TargetRef, spans: Sequence[TargetRef] = ()
    ) -> Skip | None:
        """Why a task is filtered out, or None when selected; a task spanning hosts is
        filtered out by `--limit` when it selects none of them."""
        if not self.limited(spans or (target,)):
            return Skip(SkipKind.filtered, "--limit")
        if self.phases and phase.id not in self.phases:
            return Skip(SkipKind.filtered, "--phase")
        if self.checks and not any(fnmatch(check.id, pattern) for pattern in self.checks):
            return Skip(SkipKind.filtered, "--check")
        if self.tags and not set(self.tags) & set(check.tags):
            return Skip(SkipKind.filtered, "--tags")
        if set(self.skip_tags) & set(check.tags):
            return Skip(SkipKind.filtered, "--skip-tags")
        return None

    def limited(self, hosts: Sequence[TargetRef]) -> tuple[TargetRef, ...]:
        """The hosts `--limit` selects: every one without it, and every place not remote."""
        return tuple(
            host
            for host in hosts
            if not (self.limit and transport(host.via).remote)
            or any(fnmatch(host.name, pattern) for pattern in self.limit)
        )

    def unmatched(self, spec: Spec, hosts: Collection[str]) -> list[Problem]:
        """Usage errors: each filter value that matches nothing in the spec (a typo would
        otherwise select nothing, and nothing selected passes). `hosts`: the remote hosts."""
        checks = [check for phase in spec.phases for check in phase.checks]
        tags = sorted({tag for check in checks for tag in check.tags})
        rows = (
            ("--phase", self.phases, [phase.id for phase in spec.phases], "phase", _equal),
            ("--check", self.checks, [check.id for check in checks], "check", _glob),
            ("--tags", self.tags, tags, "tag", _equal),
            ("--skip-tags", self.skip_tags, tags, "tag", _equal),
            ("--limit", self.limit, sorted(hosts), "remote host", _glob),
        )
        problems = []
        for flag, values, known, noun, matches in rows:
            for i, value in enumerate(values, 1):
                if not any(matches(value, name) for name in known):
                    found = f"; the spec has: {', '.join(known[:12])}" if known else ""
                    hint = did_you_mean(value, known) or found
                    message = f"matches no {noun}{hint}" if known else f"the spec has no {noun}s"
                    problems.append(Problem(Position(flag, i, 1), value, message))
        return problems

    def describe(self) -> str:
        """The filters as typed: `--phase a --tags gpu`."""
        given = (
            ("--phase", self.phases),
            ("--check", self.checks),
            ("--tags", self.tags),
            ("--skip-tags", self.skip_tags),
            ("--limit", self.limit),
        )
        return " ".join(f"{flag} {value}" for flag, values in given for value in values)


def _equal(value: str, name: str) -> bool:
    return value == name


def _glob(pattern: str, name: str) -> bool:
    return fnmatch(name, pattern)


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
    # every group a Need names → its tasks, in plan order
    groups: dict[str, list[str]] = field(default_factory=dict)

    def budgets(self) -> dict[str, float]:
        """{target group: the longest its selected tasks can take}: per host, every task on
        it or spanning it run out to its timeout, each retry included, one after another; the
        group's is its slowest host's. A bound, not a guess: a Slurm group's job is given it
        as its time limit, so the job ends by itself whatever ends matrix."""
        per_host: dict[tuple[str, str], float] = {}
        for task in self.tasks.values():
            if task.skip is None and not task.compares:
                for host in task.spans or (task.target,):
                    key = (host.group, host.name)
                    per_host[key] = per_host.get(key, 0.0) + _budget(task.check)
        found: dict[str, float] = {}
        for (group, _), seconds in per_host.items():
            found[group] = max(found.get(group, 0.0), seconds)
        return found


def _budget(check: Check) -> float:
    """The most one task of `check` takes: every attempt to its timeout, and the backoffs."""
    retry = check.retry
    if retry is None:
        return check.timeout
    backoffs = sum(retry.backoff * 2**attempt for attempt in range(retry.attempts - 1))
    return check.timeout * retry.attempts + backoffs
