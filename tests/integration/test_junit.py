"""`--junit`: real specs through the CLI, the file validated against Jenkins' junit-10.xsd with
xmlschema and read back with junitparser, every number and message compared with the JSON
report of the same run (one source: the Run)."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from junitparser import Error, Failure, JUnitXml, Skipped
from required import unavailable

from matrix.results import PhaseInfo, Result, Run, Status
from reporters.junit import JunitReporter

SHARED_XSD = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "junit-10.xsd"
XSD = Path(os.environ.get("MATRIX_JUNIT_XSD") or SHARED_XSD)
TIME = re.compile(r"^\d+\.\d{3}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
# what XML 1.0 forbids (C0 controls but \t \n \r, surrogates, U+FFFE/FFFF), plus ESC's partners
ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

SPEC = r"""
version: 1
name: ci-demo
targets:
  alt: {via: local}
phases:
  - id: basics
    title: Basics & Tools
    weight: 60
    checks:
      - id: ok
        title: Echo works
        probe: {kind: command, argv: [echo, hi]}
      - id: broken
        title: Exit code zero
        severity: critical
        probe: {kind: command, shell: "exit 3"}
        diagnostic: "exit code {{ facts.exit_code }}"
        fix: Make it exit 0
      - id: soft
        title: Soft limit
        severity: warning
        probe: {kind: command, argv: [echo, "7"]}
        expect: {stdout: {eq: "8"}}
        diagnostic: "limit is {{ facts.stdout }}, want 8"
        fix: Raise the limit
      - id: slow
        title: Slow probe
        probe: {kind: command, argv: [sleep, "5"]}
        timeout: 0.3s
        fix: Speed it up
      - id: missing
        title: Tool installed
        probe: {kind: command, argv: [no-such-program-for-matrix]}
        fix: Install the tool
      - id: unset
        title: Token present
        probe: {kind: command, argv: [echo, "{{ env.MATRIX_JUNIT_TEST_UNSET }}"]}
      - id: after
        title: After broken
        needs: [broken]
        probe: {kind: command, argv: ["true"]}
      - id: plain
        probe: {kind: command, shell: "exit 1"}
  - id: grid
    weight: 40
    checks:
      - id: cells
        title: Batch fits
        matrix: {batch_size: [8, 16]}
        probe: {kind: command, argv: [echo, "{{ matrix.batch_size }}"]}
      - id: cells-alt
        title: Batch fits
        on: alt
        matrix: {batch_size: [8, 16]}
        probe: {kind: command, argv: [echo, "{{ matrix.batch_size }}"]}
"""


@cache
def schema() -> xmlschema.XMLSchema:
    """Jenkins' published schema. It is not part of the repository: CI has it in shared/
    beside the checkout and requires it (MATRIX_REQUIRE_SHARED=1); elsewhere these tests skip
    and say how to provide it."""
    if not XSD.is_file():
        why = (
            f"Jenkins' junit-10.xsd not found at {XSD}: put it at shared/schemas/junit-10.xsd "
            "beside the checkout (as CI has it), or set MATRIX_JUNIT_XSD to a copy of it"
        )
        unavailable(why, "MATRIX_REQUIRE_SHARED")
    return xmlschema.XMLSchema(XSD)


def validated(path: Path) -> JUnitXml:
    """The file as CI reads it, after it passed the schema and a raw scan for illegal chars."""
    schema().validate(path)
    text = path.read_text(encoding="utf-8")
    assert not ILLEGAL.search(text)
    assert "disabled=" not in text
    return JUnitXml.fromfile(str(path))


def expected_name(result: dict[str, Any]) -> str:
    """The check's stable name (its plain title, else its id): the same whatever the outcome."""
    name = result["name"]
    if result["target"] != "local":
        name += f" @ {result['target']}"
    if result["cell"]:
        name += " [" + ",".join(f"{k}={v}" for k, v in result["cell"].items()) + "]"
    return name


def expected_tag(result: dict[str, Any]) -> str | None:
    """The mapping: critical failures and errors are red; a failed warning or info check is a
    skip, like a task that did not run; a pass has no element."""
    if result["status"] in ("fail", "error") and result["severity"] != "critical":
        return "skipped"
    return {"fail": "failure", "error": "error", "skip": "skipped"}.get(result["status"])


def expected_message(result: dict[str, Any]) -> str:
    return " — ".join(filter(None, [result["failure"], result["diagnostic"]]))


def wall(results: list[dict[str, Any]]) -> float:
    timed = [r for r in results if r["started_at"] is not None]
    if not timed:
        return 0.0
    return max(r["started_at"] + r["duration"] for r in timed) - min(r["started_at"] for r in timed)


def cases_of(xml: JUnitXml) -> dict[tuple[str, str], Any]:
    found = {}
    for suite in xml:
        for case in suite:
            key = (case.classname, case.name)
            assert key not in found, f"duplicate testcase {key}"
            found[key] = case
    return found


def test_junit_matches_the_json_report_of_the_same_run(write_spec, cli, report, tmp_path):
    write_spec(SPEC)
    done = cli("run", "spec.yaml", "--junit", "out.xml", "--json", "out.json", "--quiet")
    assert done.returncode == 1, done.stderr  # BLOCKED
    assert "MATRIX_JUNIT_TEST_UNSET" not in cli.env()
    xml = validated(tmp_path / "out.xml")
    data = report(tmp_path / "out.json")
    results = data["results"]

    # root: spec name, totals and the run's own duration
    assert xml.name == "ci-demo"
    tags = [expected_tag(r) for r in results]
    assert (xml.tests, xml.failures, xml.errors) == (
        len(results),
        tags.count("failure"),
        tags.count("error"),
    )
    assert abs(xml.time - data["duration"]) <= 0.001

    # one suite per phase, split by target group where a phase spans two
    assert [s.name for s in xml] == ["basics", "grid @ local", "grid @ alt"]
    members = {
        "basics": [r for r in results if r["phase_id"] == "basics"],
        "grid @ local": [r for r in results if r["phase_id"] == "grid" and r["target"] == "local"],
        "grid @ alt": [r for r in results if r["phase_id"] == "grid" and r["target"] == "alt"],
    }
    phases = {p["id"]: p for p in data["phases"]}
    for suite in xml:
        mine = members[suite.name]
        tags = [expected_tag(r) for r in mine]
        assert suite.tests == len(mine)
        assert suite.failures == tags.count("failure")
        assert suite.errors == tags.count("error")
        assert suite.skipped == tags.count("skipped")
        assert suite.time == pytest.approx(wall(mine), abs=0.0011)  # wall time, not a sum
        assert TIME.match(suite._elem.get("time"))
        assert TIMESTAMP.match(suite.timestamp)
        assert suite.hostname
        phase = phases[mine[0]["phase_id"]]
        props = {p.name: p.value for p in suite.properties()}
        assert props["matrix.spec"] == "ci-demo"
        assert props["matrix.verdict"] == data["verdict"] == "BLOCKED"
        assert float(props["matrix.score"]) == data["score"]
        assert float(props["matrix.phase.weight"]) == phase["weight"]
        assert props["matrix.phase.title"] == phase["title"]
        assert [(c.classname, c.name) for c in suite] == [
            (f"matrix.{r['phase_id']}.{r['check_id']}", expected_name(r)) for r in mine
        ]

    cases = cases_of(xml)
    assert len(cases) == len(results)
    by_task = {
        r["task_id"]: cases[(f"matrix.{r['phase_id']}.{r['check_id']}", expected_name(r))]
        for r in results
    }
    for result in results:
        case = by_task[result["task_id"]]
        assert TIME.match(case._elem.get("time"))
        assert abs(case.time - result["duration"]) <= 0.0006
        outcome = case.result
        if result["status"] == "pass":
            assert outcome == [] and case.is_passed
            continue
        (only,) = outcome
        if result["status"] == "skip":
            assert isinstance(only, Skipped) and only.message == result["reason"]
            assert only.text == result["reason"]  # not self-closing: Codecov reads it right
            continue
        if expected_tag(result) == "skipped":
            assert only.message == f"{result['severity']}: {expected_message(result)}"
            continue
        assert isinstance(only, Failure if result["status"] == "fail" else Error)
        assert only.message == expected_message(result)
        if result["fix"]:
            assert f"Fix: {result['fix']}" in only.text
            assert case.system_out == f"Fix: {result['fix']}"

    def outcome(task_id: str) -> tuple[str, str | None, str | None]:
        (only,) = by_task[task_id].result
        return type(only).__name__, only.type, only.message

    assert outcome("broken")[:2] == ("Failure", "critical")
    assert outcome("broken")[2].endswith("exit code 3")
    assert outcome("soft")[:2] == ("Skipped", None)
    assert outcome("soft")[2].startswith("warning: ") and outcome("soft")[2].endswith(
        "limit is 7, want 8"
    )
    assert outcome("slow") == ("Error", "timeout", "timed out after 0.3s (probe killed)")
    assert outcome("missing")[:2] == ("Error", "probe-error")
    assert "no-such-program-for-matrix" in outcome("missing")[2]
    assert outcome("unset")[:2] == ("Error", "not-configured")
    assert outcome("after") == ("Skipped", None, "blocked by broken")
    # no diagnostic in the spec: still a failure, carrying the reason the engine gave
    assert outcome("plain") == ("Failure", "critical", "exit_code is 1, expected == 0")
    assert '"exit_code":3' in by_task["broken"].result[0].text  # facts, compact JSON
    assert "Severity: warning" in by_task["soft"].result[0].text
    assert not list(tmp_path.glob(".out.xml.partial"))


def test_control_characters_and_invalid_utf8_in_probe_output(write_spec, cli, tmp_path):
    write_spec(
        r"""
        version: 1
        name: noisy
        phases:
          - id: output
            checks:
              - id: garbage
                title: Garbage out
                probe: {kind: command, shell: "printf 'bad \\001\\033[31m \\377\\376 end'; exit 1"}
                diagnostic: "said {{ facts.stdout }}"
                fix: "Clean up {{ facts.stdout }}"
        """
    )
    done = cli("run", "spec.yaml", "--junit", "out.xml", "--quiet")
    assert done.returncode == 1, done.stderr
    xml = validated(tmp_path / "out.xml")
    (case,) = cases_of(xml).values()
    (failure,) = case.result
    assert isinstance(failure, Failure)
    assert failure.message.startswith("said bad") and failure.message.endswith("end")
    assert "\x01" not in failure.message and "\x1b" not in failure.message
    assert "[31m" not in failure.message  # the colour sequence goes whole
    assert "\ufffd" in failure.message  # the invalid bytes, as the probe decoded them
    assert case.system_out.startswith("Fix: Clean up bad")


def result(task_id: str, status: Status, **fields: Any) -> Result:
    base: dict[str, Any] = {
        "check_id": task_id.split("[")[0].split("@")[0],
        "phase_id": "p",
        "target": "local",
        "host": "localhost",
        "cell": {},
        "severity": "critical",
        "title": "T",
        "name": "N",
        "failure": "F",
        "duration": 0.0123456,
        "started_at": 1_700_000_000.0,
    }
    return Result(task_id=task_id, status=status, **(base | fields))


def run_of(*results: Result) -> Run:
    return Run(
        spec_name="direct",
        spec_path="spec.yaml",
        vars={},
        phases=[PhaseInfo("p", "Phase", 10, {})],
        results=list(results),
        order=[r.task_id for r in results],
        started_at=1_700_000_000.0,
        duration=1.23456789,
    )


def write(run: Run, path: Path) -> JUnitXml:
    reporter = JunitReporter(str(path))
    reporter.finish(run)
    return validated(path)


def test_a_failure_with_no_diagnostic_and_no_reason_still_fails(tmp_path):
    # junit-xml's add_failure_info() with no message and no output yields a passing case
    run = run_of(
        result("f", Status.failed, diagnostic=None, reason=None),
        result("e", Status.error, diagnostic=None, reason=None),
    )
    xml = write(run, tmp_path / "out.xml")
    assert (xml.tests, xml.failures, xml.errors) == (2, 1, 1)
    failure, error = (case.result[0] for case in next(iter(xml)))
    assert (type(failure), failure.message, failure.type) == (Failure, "F", "critical")
    assert (type(error), error.message, error.type) == (Error, "F", "probe-error")
    assert xml._elem.get("time") == "1.235"


def test_illegal_xml_characters_anywhere_never_break_the_file(tmp_path):
    nasty = "a\x00b\x07c\x1b[1;31md\ud800e\udfffg\ufffeh\uffffi\x85j\tk"
    run = run_of(
        result(
            "c",
            Status.error,
            title=f"title {nasty}",
            name=f"name {nasty}",
            failure=f"failure {nasty}",
            diagnostic=f"diag {nasty}",
            reason=f"probe c crashed: ValueError: {nasty}",
            error_type="crash",
            fix=f"fix {nasty}",
            facts={"out": nasty, "blob": "x" * 50_000},
        )
    )
    xml = write(run, tmp_path / "out.xml")
    ((_, case),) = cases_of(xml).items()
    (error,) = case.result
    assert error.type == "crash"
    assert error.message == "failure abcdeghi\x85j\tk — diag abcdeghi\x85j\tk"
    assert case.name == "name abcdeghi\x85j\tk"
    assert len(error.text) < 6_000  # facts bounded to a few KB
    assert "more chars" in error.text


def test_names_stay_unique_when_titles_collide(tmp_path):
    # two tasks of one check, same target and same rendered cell (1 and "1")
    run = run_of(
        result("c[x=1]", Status.passed, check_id="c", cell={"x": 1}),
        result("c[x='1']", Status.passed, check_id="c", cell={"x": "1"}),
        result("c[x=1]@alt", Status.passed, check_id="c", cell={"x": 1}, target="alt"),
    )
    names = [name for _, name in cases_of(write(run, tmp_path / "out.xml"))]
    assert names == ["N [x=1] (c[x=1])", "N [x=1] (c[x='1'])", "N @ alt [x=1]"]


def test_xsd_is_where_ci_puts_it():
    # CI has shared/ beside the checkout and sets MATRIX_REQUIRE_SHARED: there a missing
    # schema fails, it never skips
    assert schema() is not None


def test_case_name_does_not_change_with_the_outcome(tmp_path):
    # CI servers track history by classname+name: a check that starts failing keeps its name
    def python(status: Status, title: str) -> Run:
        return run_of(result("c", status, title=title, name="Python", failure="Wrong Python"))

    passing, failing = python(Status.passed, "Python 3.11.7"), python(Status.failed, "Python 3.8")
    names = [
        [name for _, name in cases_of(write(run, tmp_path / f"{i}.xml"))]
        for i, run in enumerate((passing, failing))
    ]
    assert names == [["Python"], ["Python"]]  # the check's name, not its failure mode


def test_codecovs_parser_reads_every_case_as_the_verdict_does(write_spec, cli, report, tmp_path):
    """Codecov's own parser (test-results-parser) counts a self-closing skip as a pass: every
    skip here must read as a skip, and only what blocks the run as a failure."""
    from test_results_parser import parse_junit_xml

    write_spec(SPEC)
    cli("run", "spec.yaml", "--junit", "out.xml", "--json", "out.json", "--quiet")
    results = report(tmp_path / "out.json")["results"]
    runs = parse_junit_xml((tmp_path / "out.xml").read_bytes()).testruns
    seen = {(run.classname, run.name): str(run.outcome).lower() for run in runs}
    wanted = {
        (f"matrix.{r['phase_id']}.{r['check_id']}", expected_name(r)): {
            None: "pass",
            "skipped": "skip",
            "failure": "failure",
            "error": "error",
        }[expected_tag(r)]
        for r in results
    }
    assert seen == wanted
    assert "skip" in seen.values() and "failure" in seen.values()


def test_junit_warnings_fail_makes_failed_warnings_failures(write_spec, cli, tmp_path):
    write_spec(SPEC)
    cli("run", "spec.yaml", "--junit", "out.xml", "--junit-warnings-fail", "--quiet")
    cases = {case.name: case for case in cases_of(validated(tmp_path / "out.xml")).values()}
    (soft,) = cases["Soft limit"].result
    assert (type(soft), soft.type) == (Failure, "warning")
