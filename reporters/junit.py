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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from junit_xml import TestCase, TestSuite

from matrix.results import PhaseScore, Result, Run, Status
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
    """`Disk full @ gpu-01 [batch_size=16]`: the failure mode, where it ran, and the matrix cell.

    Never the rendered title: CI servers track a test's history by classname+name, so the
    name must not change with the outcome or with observed facts."""
    name = result.failure or result.category or result.check_id
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


def _case(result: Result, classname: str, name: str) -> TestCase:
    case = TestCase(clean(name), classname=clean(classname), elapsed_sec=result.duration)
    # junit-xml drops a failure or error that has no message and no output, and the case then
    # passes: always give a message.
    message = clean(_shorten(result.diagnostic or result.reason or "", MESSAGE_LIMIT))
    if result.status is Status.failed:
        case.add_failure_info(message or "failed", _body(result), result.severity)
    elif result.status is Status.error:
        case.add_error_info(message or "error", _body(result), result.error_type or "probe-error")
    elif _cut_off(result):  # a task the run never reached is no pass: CI must not go green
        case.add_error_info(clean(result.why or "not run"), clean(result.why or ""), "incomplete")
    elif result.status is Status.skipped:
        case.add_skipped_info(clean(result.why or "skipped"))
    if result.bad and result.fix:
        case.stdout = clean(f"Fix: {result.fix}")
    return case


def _timestamp(results: Iterable[Result], fallback: float) -> str:
    """ISO 8601 local time of the first task start, to the second, no zone (as Ant writes it)."""
    starts = [r.started_at for r in results if r.started_at is not None]
    return datetime.fromtimestamp(min(starts, default=fallback)).isoformat(timespec="seconds")


def _cut_off(result: Result) -> bool:
    return result.skip is not None and result.skip.unfinished


def _counts(results: Sequence[Result]) -> dict[str, str]:
    return {
        "tests": str(len(results)),
        "failures": str(sum(r.status is Status.failed for r in results)),
        "errors": str(sum(r.status is Status.error or _cut_off(r) for r in results)),
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


def render(run: Run, hostname: str | None = None) -> str:
    """The whole document."""
    hostname = clean(hostname or socket.gethostname())
    ids = case_ids(run.results)
    # junit-10.xsd allows no `skipped` on the root (each suite carries its own); the root's
    # time is the run's wall time, the same number as the JSON report's `duration`.
    root = ET.Element("testsuites", {"name": clean(run.spec_name), **_counts(run.results)})
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
            [_case(r, *ids[r.task_id]) for r in results],
            properties={clean(k): clean(v) for k, v in properties.items()},
            stderr=clean("\n".join(f"warning: {w}" for w in run.warnings)) or None,
        )
        element = suite.build_xml_doc()
        millis = [_millis(r.duration) for r in results]
        element.attrib.clear()
        element.attrib.update(
            {
                "name": clean(suite_name),
                **_counts(results),
                "skipped": str(
                    sum(r.status is Status.skipped and not _cut_off(r) for r in results)
                ),
                "time": _format(sum(millis)),
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
            for outcome in (child for child in case if child.tag in OUTCOMES):
                message, kind = outcome.get("message"), outcome.get("type")
                outcome.attrib.clear()
                outcome.set("message", message or "")
                if outcome.tag != "skipped":  # junit-xml's constant "skipped" says nothing
                    outcome.set("type", kind or outcome.tag)
        root.append(element)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


class JunitReporter(Reporter):
    def __init__(self, destination: str):
        self.path = Path(destination)

    def finish(self, run: Run) -> None:
        write_report(self.path, render(run))
