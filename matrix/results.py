"""Results of a run, the verdict and the readiness score: the one source every reporter reads."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
RUN_SCHEMA_VERSION = 2  # 2: verdict INCOMPLETE, results' skip


class Status(str, Enum):
    passed = "pass"
    failed = "fail"
    error = "error"
    skipped = "skip"


class SkipKind(str, Enum):
    """Why a task did not run. The first two leave it out of the score (it did not apply);
    the rest count it as not passed (it should have run)."""

    filtered = "filtered"  # a --phase/--check/--tags/--skip-tags/--limit selection left it out
    not_applicable = "not-applicable"  # its `when:` rendered false
    blocked = "blocked"  # a task it needs failed
    interrupted = "interrupted"  # Ctrl-C or SIGTERM came first
    stopped = "stopped"  # --fail-fast stopped the run after a critical failure
    not_run = "not-run"  # the run ended without it for another reason


@dataclass(frozen=True)
class Skip:
    """A skipped task's reason as a value: what (`kind`) and the one detail a person needs —
    the option that filtered it, the false condition, the task that blocked it or after which
    the run stopped. `text` is the standard wording; reporters may word it their own way."""

    kind: SkipKind
    detail: str = ""
    because: str = ""
    """The check's own `skip_reason`, said instead of the standard wording."""

    @property
    def text(self) -> str:
        if self.because:
            return self.because
        return {
            SkipKind.filtered: f"filtered out by {self.detail}",
            SkipKind.not_applicable: f"when: {self.detail} is false",
            SkipKind.blocked: f"blocked by {self.detail}",
            SkipKind.interrupted: "interrupted before it finished",
            SkipKind.stopped: f"not run: --fail-fast stopped after {self.detail}",
            SkipKind.not_run: "not run",
        }[self.kind]

    @property
    def unfinished(self) -> bool:
        """Cut off before it could run (not a property of the spec or the selection)."""
        return self.kind in (SkipKind.interrupted, SkipKind.stopped, SkipKind.not_run)

    @property
    def applies(self) -> bool:
        """It should have run: it counts toward the score as not passed."""
        return self.kind not in (SkipKind.filtered, SkipKind.not_applicable)


OBSERVED_ERRORS = frozenset({"probe-error"})  # error types that are evidence about the target


class Verdict(str, Enum):
    ready = "READY"
    caution = "CAUTION"
    blocked = "BLOCKED"
    incomplete = "INCOMPLETE"  # cut short (Ctrl-C, --fail-fast) before a failure was seen


@dataclass
class Attempt:
    """One try of a task's probe: reporters draw retry spans and timings from these.

    `error_type` says why it did not pass, the same words in every format: `assertion` (an
    expectation was not met), `timeout`, `crash` (the probe raised), `not-configured` (an env
    var or secret is missing), `probe-error` (the probe ran on its target and reported what
    stopped it there), `transport` (the probe never ran or lost its target: unreachable, a
    lost SSH session or Slurm step, a cancelled job), `no-answer` (the probe's program on
    the target ended without a result: killed, or never started) or `incomplete` (the
    expectation reads a fact the probe could not read whole: a body cut at its cap);
    `exception` is the exception class behind an error."""

    started_at: float
    duration: float
    status: Status
    reason: str | None = None
    error_type: str | None = None
    exception: str | None = None


@dataclass
class Result:
    """What one task observed and concluded; already redacted. `reason` explains a failure or
    an error; `skip` says why a skipped task did not run. `address` and `port` are where a
    remote target was reached (None for this machine)."""

    task_id: str
    check_id: str
    phase_id: str
    target: str
    host: str
    cell: dict[str, Any]
    status: Status
    severity: str
    title: str
    name: str = ""
    """The check's stable name: its title when that holds no template, else its id. Unlike
    `title`, it never changes with the outcome or the facts (CI keeps a test's history by it)."""
    group: str = "local"
    category: str | None = None
    failure: str | None = None
    diagnostic: str | None = None
    fix: str | None = None
    reason: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    duration: float = 0.0
    started_at: float | None = None
    tries: list[Attempt] = field(default_factory=list)
    error_type: str | None = None
    exception: str | None = None
    skip: Skip | None = None
    address: str | None = None
    port: int | None = None

    @property
    def why(self) -> str | None:
        """In words: why it was skipped, or what went wrong."""
        return self.skip.text if self.skip else self.reason

    @property
    def bad(self) -> bool:
        """Failed or errored: what the verdict and fix list care about."""
        return self.status in (Status.failed, Status.error)

    @property
    def observed(self) -> bool:
        """Whether the probe ran on its target and this outcome is what it saw there: a pass,
        a failed expectation, or the probe's own account of what stopped it. A timeout, a lost
        host, a crash of the probe's code or a missing setting teach nothing about the target:
        matrix never acts on a node for them (commands/nodes.py)."""
        if self.status in (Status.passed, Status.failed):
            return True
        return self.status is Status.error and self.error_type in OBSERVED_ERRORS


@dataclass
class PhaseInfo:
    id: str
    title: str
    weight: float
    check_weights: dict[str, float]
    budget: float | None = None


@dataclass
class PhaseScore:
    id: str
    title: str
    weight: float
    score: float
    passed: int
    total: int
    duration: float
    budget: float | None = None
    critical: int = 0
    """Critical tasks that failed or errored here: any one blocks the run."""
    warnings: int = 0
    """Warning tasks that failed or errored here."""
    blocked: int = 0
    """Tasks that did not run because something they need went wrong (counted as not passed)."""

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.duration > self.budget

    def budget_warning(self) -> str:
        """`Data Pipeline Validation took 12m03s, over its 10m budget`."""
        assert self.budget is not None
        return (
            f"{self.title} took {span(self.duration)}, over its {span(self.budget)} budget: "
            "find the slow checks with --junit or --json (each result has its duration)"
        )


@dataclass
class Run:
    """One execution of a plan. Verdict and score are derived, never stored twice."""

    spec_name: str
    spec_path: str
    vars: dict[str, Any]
    phases: list[PhaseInfo]
    results: list[Result]
    order: list[str]
    started_at: float
    duration: float
    interrupted: bool = False
    stopped_early: str | None = None
    warnings: list[str] = field(default_factory=list)
    node: str | None = None
    """The Slurm node a run on the node itself stood for (`--slurm-node`), else None."""

    @property
    def verdict(self) -> Verdict:
        """From the results. A critical failure blocks whatever else happened; a run cut short
        has no passing verdict (INCOMPLETE); a phase over its time budget makes READY a
        CAUTION."""
        found = verdict(self.results)
        if found is Verdict.blocked:
            return found
        if not self.complete:
            return Verdict.incomplete
        if found is Verdict.ready and self.over_budget():
            return Verdict.caution
        return found

    @property
    def complete(self) -> bool:
        """Every task came to an end: nothing was cut off by Ctrl-C or --fail-fast."""
        return not (self.interrupted or self.stopped_early) and not any(
            map(_unfinished, self.results)
        )

    def over_budget(self) -> list[PhaseScore]:
        return [p for p in self.phase_scores() if p.over_budget]

    def phase_scores(self) -> list[PhaseScore]:
        return [phase_score(info, self.results) for info in self.phases]

    @property
    def score(self) -> float:
        return total_score(self.phase_scores())

    def fixes(self) -> list[Result]:
        """Failing results, what blocks first: criticals, then warnings, each in dependency
        order (a fix for an earlier task may clear a later one)."""
        rank = {task_id: i for i, task_id in enumerate(self.order)}
        bad = [r for r in self.results if r.bad and r.severity != "info"]
        return sorted(bad, key=lambda r: (r.severity != "critical", rank.get(r.task_id, len(rank))))

    def finished(self) -> int:
        """Tasks that came to an end (not cut off by Ctrl-C or --fail-fast)."""
        return sum(not _unfinished(r) for r in self.results)

    def counts(self) -> dict[str, int]:
        found = {status.value: 0 for status in Status}
        for result in self.results:
            found[result.status.value] += 1
        return found

    def exit_code(self, *, strict: bool = False) -> int:
        if self.interrupted:
            return 130
        if self.verdict in (Verdict.blocked, Verdict.incomplete):
            return 1
        return 1 if strict and self.verdict is Verdict.caution else 0

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (docs/json-report.md), versioned by `schema_version`."""
        return {
            "schema_version": RUN_SCHEMA_VERSION,
            "spec": {"name": self.spec_name, "path": self.spec_path},
            "node": self.node,
            "vars": self.vars,
            "verdict": self.verdict.value,
            "score": round(self.score, 1),
            "started_at": self.started_at,
            "duration": round(self.duration, 3),
            "interrupted": self.interrupted,
            "stopped_early": self.stopped_early,
            "warnings": self.warnings,
            "counts": self.counts(),
            "phases": [
                asdict(p) | {"score": round(p.score, 2), "over_budget": p.over_budget}
                for p in self.phase_scores()
            ],
            "results": [_result_dict(r) for r in self.results],
        }


def _result_dict(result: Result) -> dict[str, Any]:
    data = asdict(result)
    data["status"] = result.status.value
    data["duration"] = round(result.duration, 4)
    data["reason"] = result.why
    if result.skip:
        data["skip"] = {"kind": result.skip.kind.value, "detail": result.skip.detail}
        if result.skip.because:
            data["skip"]["because"] = result.skip.because
    return data


def verdict(results: Sequence[Result]) -> Verdict:
    """BLOCKED if a critical check failed or errored, CAUTION if a warning did, else READY."""
    severities = {r.severity for r in results if r.bad}
    if "critical" in severities:
        return Verdict.blocked
    if "warning" in severities:
        return Verdict.caution
    return Verdict.ready


def _unfinished(result: Result) -> bool:
    return result.skip is not None and result.skip.unfinished


def _counts_toward_score(result: Result) -> bool:
    """Not applicable (when false, filtered out) is left out; blocked counts as not passed."""
    return result.skip is None or result.skip.applies


def phase_score(info: PhaseInfo, results: Sequence[Result]) -> PhaseScore:
    """weight × (check weight that passed / check weight that applied); tasks split a check."""
    mine = [r for r in results if r.phase_id == info.id]
    counted = [r for r in mine if _counts_toward_score(r)]
    per_check: dict[str, list[Result]] = {}
    for result in counted:
        per_check.setdefault(result.check_id, []).append(result)
    applied = sum(info.check_weights.get(c, 1.0) for c in per_check)
    earned = sum(
        info.check_weights.get(c, 1.0) * sum(r.status is Status.passed for r in rs) / len(rs)
        for c, rs in per_check.items()
    )
    share = earned / applied if applied else 1.0
    return PhaseScore(
        id=info.id,
        title=info.title,
        weight=info.weight if applied else 0.0,
        score=info.weight * share if applied else 0.0,
        passed=sum(r.status is Status.passed for r in counted),
        total=len(counted),
        duration=wall_time(mine),
        budget=info.budget,
        critical=sum(r.bad and r.severity == "critical" for r in counted),
        warnings=sum(r.bad and r.severity == "warning" for r in counted),
        blocked=sum(r.skip is not None and r.skip.kind is SkipKind.blocked for r in counted),
    )


def wall_time(results: Sequence[Result]) -> float:
    """From the first task's start to the last one's end: phases overlap, so not a sum."""
    timed = [r for r in results if r.started_at is not None]
    if not timed:
        return 0.0
    return max(r.started_at + r.duration for r in timed) - min(r.started_at for r in timed)


def total_score(scores: Sequence[PhaseScore]) -> float:
    """Out of 100: phases that applied, normalised by their weights."""
    weight = sum(s.weight for s in scores)
    return 100.0 * sum(s.score for s in scores) / weight if weight else 100.0


def phase_infos(phases: Sequence[Any]) -> list[PhaseInfo]:
    return [
        PhaseInfo(p.id, p.title or p.id, p.weight, {c.id: c.weight for c in p.checks}, p.budget)
        for p in phases
    ]


def whole(score: float) -> int:
    """A score as people read it: half rounds up (12.5 → 13, 37.5 → 38), the same for phase
    lines and the total; Python's round() would go half-to-even and print 12 and 38."""
    return int(Decimal(repr(round(score, 9))).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def span(seconds: float, digits: int = 1) -> str:
    """4.2s, 0.25s, 2m05s, 1h02m: how long, in the unit a person would say; under a minute
    with `digits` decimals, so columns of them line up."""
    if seconds < 60:
        return f"{seconds:.{digits}f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def json_safe(value: Any) -> Any:
    """What a probe reports, made fit for every format once, where it enters the run: text is
    valid UTF-8 (a lone surrogate, from a file name with invalid UTF-8 or a script's output,
    becomes U+FFFD), keys are text, and a number JSON cannot carry (NaN, infinity) becomes
    its name. A huge integer stays exact: the formats that cannot hold one convert it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {
            json_safe(k if isinstance(k, str) else str(k)): json_safe(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
