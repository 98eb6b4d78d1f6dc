"""`--junit PATH`: JUnit XML for CI test tabs (Jenkins, GitLab, GitHub Actions publishers).

One `<testsuite>` per phase (per phase × target group when a phase runs on several groups),
one `<testcase>` per task. junit-xml builds the cases and suites; the small adapter here owns
the rest: the `<testsuites>` root, the attribute set and the number formats. junit-xml 1.9
writes a `disabled` attribute and six-decimal times that Jenkins' junit-10.xsd rejects, and it
would write control characters from probe output raw, which no XML parser reads back.
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from junit_xml import TestCase, TestSuite

from matrix.results import PhaseScore, Result, Run, Status, wall_time
from reporters.base import Reporter, write_report

if TYPE_CHECKING:
    pass

MESSAGE_LIMIT = 2_000  # characters of a failure/error message attribute
FACTS_LIMIT = 4_000  # characters of compact JSON facts in a failure/error body
OUTCOMES = ("failure", "error", "skipped")

# XML 1.0 forbids C0 controls but tab, LF and CR, surrogates and U+FFFE/U+FFFF; C1 controls
# (but NEL) are allowed yet discouraged, and no CI viewer shows them, so they go as well.
_ILLEGAL = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # colour and cursor sequences, as a whole


def clean(text: Any) -> str:
    """Text that any XML 1.0 parser reads back: ANSI sequences and illegal characters removed."""
    return _ILLEGAL.sub("", _ANSI.sub("", str(text)))


def _millis(value: float) -> int:
    return round(max(value, 0.0) * 1000)


def _format(millis: int) -> str:
    return f"{millis // 1000}.{millis % 1000:03d}"


def seconds(value: float) -> str:
    """The one time format (`%.3f`): at most 3 decimals, as SUREFIRE_TIME requires."""
    return _format(_millis(value))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more chars)"


def case_name(result: Result) -> str:
    """`Disk space on /mnt/training @ gpu-01 [batch_size=16]`: the check's stable name (its
    plain title, else its id), where it ran, and the matrix cell.

    Never the failure mode, which reads as a problem on a passing case, and never the rendered
    title: CI servers track a test's history by classname+name, so the name must not change
    with the outcome or with observed facts."""
    name = result.name or result.check_id
    if result.target != "local":
        name += f" @ {result.target}"
    if result.cell:
        name += " [" + ",".join(f"{k}={v}" for k, v in result.cell.items()) + "]"
    return name


def case_ids(results: Sequence[Result]) -> dict[str, tuple[str, str]]:
    """task id → (classname, name), unique per check × host × matrix cell."""
    ids = {r.task_id: (f"matrix.{r.phase_id}.{r.check_id}", case_name(r)) for r in results}
    seen: dict[tuple[str, str], list[str]] = {}
    for task_id, key in ids.items():
        seen.setdefault(key, []).append(task_id)
    taken = set(ids.values())
    for (classname, name), task_ids in seen.items():
        if len(task_ids) < 2:
            continue
        for task_id in task_ids:
            unique, n = (classname, f"{name} ({task_id})"), 1
            while unique in taken:
                n += 1
                unique = (classname, f"{name} ({task_id} #{n})")
            taken.add(unique)
            ids[task_id] = unique
    return ids


def _body(result: Result) -> str:
    """The failure/error text: diagnostic, cause, fix, severity and the facts, bounded."""
    lines = [result.diagnostic or result.reason or ""]
    if result.reason and result.reason not in lines[0]:
        lines.append(f"Reason: {result.reason}")
    if result.fix:
        lines.append(f"Fix: {result.fix}")
    lines.append(f"Severity: {result.severity}")
    if result.attempts > 1:
        lines.append(f"Attempts: {result.attempts}")
    if result.facts:
        facts = json.dumps(result.facts, separators=(",", ":"), ensure_ascii=False, default=str)
        lines.append(f"Facts: {_shorten(facts, FACTS_LIMIT)}")
    return clean("\n".join(line for line in lines if line))


@dataclass(frozen=True)
class Outcome:
    """How one result shows in JUnit: its element (`failure`, `error`, `skipped`, or None for
    a pass), the message attribute, the element's text and, for failures and errors, `type`."""

    tag: str | None
    message: str = ""
    text: str = ""
    type: str | None = None


def outcome(result: Result, warnings_fail: bool = False) -> Outcome:
    """The mapping, so that the test tab agrees with the verdict. A critical failure or error
    is red. A failed or errored warning or info check does not block the run, so it is
    `<skipped>` with its severity leading the message; `warnings_fail` makes failed warnings
    red too. A task the run never reached is an error: CI must not go green on an
    interrupted run. Skips carry their reason as text as well (`<skipped message=…>why</…>`,
    as pytest writes it): some parsers (Codecov's) count a self-closing skip as a pass."""
    detail = result.diagnostic or result.reason or ""
    message = clean(_shorten(" — ".join(filter(None, [result.failure, detail])), MESSAGE_LIMIT))
    red = result.severity == "critical" or (warnings_fail and result.severity == "warning")
    if result.bad and not red:
        return Outcome("skipped", clean(f"{result.severity}: {message}"), _body(result))
    if result.status is Status.failed:
        return Outcome("failure", message or "failed", _body(result), result.severity)
    if result.status is Status.error:
        return Outcome(
            "error", message or "error", _body(result), result.error_type or "probe-error"
        )
    why = clean(result.why or "")
    if _cut_off(result):
        return Outcome("error", why or "not run", why, "incomplete")
    if result.status is Status.skipped:
        return Outcome("skipped", why or "skipped", why or "skipped")
    return Outcome(None)


def _case(result: Result, classname: str, name: str, warnings_fail: bool) -> TestCase:
    case = TestCase(clean(name), classname=clean(classname), elapsed_sec=result.duration)
    shown = outcome(result, warnings_fail)
    # junit-xml drops a failure or error with no message and no output (the case would pass),
    # so every outcome has a message
    if shown.tag == "failure":
        case.add_failure_info(shown.message, shown.text, shown.type)
    elif shown.tag == "error":
        case.add_error_info(shown.message, shown.text, shown.type)
    elif shown.tag == "skipped":
        case.add_skipped_info(shown.message, shown.text)
    if result.bad and result.fix:
        case.stdout = clean(f"Fix: {result.fix}")
    return case


def _timestamp(results: Iterable[Result], fallback: float) -> str:
    """ISO 8601 local time of the first task start, to the second, no zone (as Ant writes it)."""
    starts = [r.started_at for r in results if r.started_at is not None]
    return datetime.fromtimestamp(min(starts, default=fallback)).isoformat(timespec="seconds")


def _cut_off(result: Result) -> bool:
    return result.skip is not None and result.skip.unfinished


def _counts(results: Sequence[Result], warnings_fail: bool) -> dict[str, str]:
    tags = [outcome(r, warnings_fail).tag for r in results]
    return {
        "tests": str(len(results)),
        "failures": str(tags.count("failure")),
        "errors": str(tags.count("error")),
        "skipped": str(tags.count("skipped")),
    }


def _suites(run: Run) -> Iterable[tuple[str, PhaseScore, list[Result]]]:
    """(suite name, phase, its results): per phase, split by target group when it spans several."""
    for phase in run.phase_scores():
        by_group: dict[str, list[Result]] = {}
        for result in run.results:
            if result.phase_id == phase.id:
                by_group.setdefault(result.group, []).append(result)
        for group, results in by_group.items():
            name = phase.id if len(by_group) == 1 else f"{phase.id} @ {group}"
            yield name, phase, results


def render(run: Run, hostname: str | None = None, *, warnings_fail: bool = False) -> str:
    """The whole document. Every time is wall time, as in every other format: a suite's is
    from its first task's start to its last one's end (tasks overlap), not a sum."""
    hostname = clean(hostname or socket.gethostname())
    ids = case_ids(run.results)
    # the root's time is the run's wall time, the same number as the JSON report's `duration`
    counts = _counts(run.results, warnings_fail)
    counts.pop("skipped")  # junit-10.xsd has no `skipped` on the root; each suite has its own
    root = ET.Element("testsuites", {"name": clean(run.spec_name), **counts})
    root.set("time", seconds(run.duration))
    for suite_name, phase, results in _suites(run):
        properties = {
            "matrix.spec": run.spec_name,
            "matrix.verdict": run.verdict.value,
            "matrix.score": str(round(run.score, 1)),
            "matrix.phase": phase.id,
            "matrix.phase.title": phase.title,
            "matrix.phase.weight": f"{phase.weight:g}",
            "matrix.phase.score": str(round(phase.score, 2)),
            "matrix.target": results[0].group,
        }
        if phase.budget is not None:
            properties["matrix.phase.budget"] = f"{phase.budget:g}"
            properties["matrix.phase.over_budget"] = str(phase.over_budget).lower()
        # the run's warnings (host keys not verified, …) on every suite: as properties for
        # tools, and in system-err, which CI pages show
        for number, warning in enumerate(run.warnings, 1):
            properties[f"matrix.warning.{number}"] = warning
        suite = TestSuite(
            clean(suite_name),
            [_case(r, *ids[r.task_id], warnings_fail) for r in results],
            properties={clean(k): clean(v) for k, v in properties.items()},
            stderr=clean("\n".join(f"warning: {w}" for w in run.warnings)) or None,
        )
        element = suite.build_xml_doc()
        element.attrib.clear()
        element.attrib.update(
            {
                "name": clean(suite_name),
                **_counts(results, warnings_fail),
                "time": seconds(wall_time(results)),
                "timestamp": _timestamp(results, run.started_at),
                "hostname": hostname,
            }
        )
        for case, result in zip(element.iter("testcase"), results, strict=True):
            name, classname = case.get("name", ""), case.get("classname", "")
            case.attrib.clear()
            case.attrib.update(
                {"name": name, "classname": classname, "time": seconds(result.duration)}
            )
            for shown in (child for child in case if child.tag in OUTCOMES):
                message, kind = shown.get("message"), shown.get("type")
                shown.attrib.clear()
                shown.set("message", message or "")
                if shown.tag != "skipped":  # junit-xml's constant "skipped" says nothing
                    shown.set("type", kind or shown.tag)
        root.append(element)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


class JunitReporter(Reporter):
    def __init__(self, destination: str, warnings_fail: bool = False):
        self.path = Path(destination)
        self.warnings_fail = warnings_fail

    def finish(self, run: Run) -> None:
        write_report(self.path, render(run, warnings_fail=self.warnings_fail))
