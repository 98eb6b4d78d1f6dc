"""`--otel`: the run as one OpenTelemetry trace, sent to a real OTLP/HTTP receiver (decoded with
opentelemetry-proto) or written as OTLP-JSON, by the CLI as a user runs it."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from otlp_receiver import OtlpReceiver, Received, flatten

REPO = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SECRET = "s3cr3t-hunter2-value"

SPEC = """
version: 1
name: otel-demo
secrets: [OTEL_TEST_TOKEN]
phases:
  - id: core
    title: Core checks
    checks:
      - id: traced
        category: Tracing
        probe: {kind: command, shell: 'echo "$TRACEPARENT"'}
      - id: leaky
        category: Secrets
        probe: {kind: command, argv: ["false"]}
        diagnostic: "login refused for token {{ secret.OTEL_TEST_TOKEN }}"
        fix: rotate the token
      - id: hangs
        probe: {kind: command, argv: [sleep, "10"]}
        timeout: 0.3s
      - id: flaky
        severity: warning
        probe: {kind: command, argv: ["false"]}
        retry: {attempts: 2, backoff: 0.05s}
  - id: later
    needs: [core]
    checks:
      - id: blocked
        probe: {kind: command, argv: ["true"]}
"""

PASSING = """
version: 1
name: small
phases:
  - id: only
    checks:
      - id: fine
        probe: {kind: command, argv: ["true"]}
"""

# Inherited settings that would steer the run elsewhere than the test means it to go.
CLEARED = ("TRACEPARENT", "TRACESTATE", "GITHUB_", "CI_", "JOB_NAME", "BUILD_")


def matrix(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m matrix ARGS` in cwd with a clean OTEL_*/CI environment plus `env`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", *CLEARED)) and k not in CLEARED
    }
    base.update({"NO_COLOR": "1", "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "matrix", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=base,
        timeout=60,
    )


def write(directory: Path, text: str, name: str = "spec.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@dataclass
class Traced:
    """One run of SPEC with --otel otlp, as the receiver got it and as --json reported it."""

    spans: list[Received]
    report: dict[str, Any]
    done: subprocess.CompletedProcess[str]

    def named(self, name: str) -> Received:
        (found,) = [s for s in self.spans if s.name == name]
        return found

    def children(self, span: Received) -> list[Received]:
        return [s for s in self.spans if s.parent_id == span.span_id]

    @property
    def root(self) -> Received:
        return self.named("matrix run otel-demo")

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {r["task_id"]: r for r in self.report["results"]}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    cwd = tmp_path_factory.mktemp("otel")
    write(cwd, SPEC)
    with OtlpReceiver() as receiver:
        done = matrix(
            cwd,
            "run",
            "spec.yaml",
            "--quiet",
            "--otel",
            "otlp",
            "--json",
            "report.json",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "TRACEPARENT": TRACEPARENT,
                "OTEL_TEST_TOKEN": SECRET,
                "GITHUB_WORKFLOW": "Deploy gate",
                "GITHUB_RUN_ID": "4242",
                "GITHUB_REPOSITORY": "acme/trainer",
            },
        )
        assert done.returncode == 1, done.stderr  # BLOCKED: leaky and hangs are critical
        assert done.stderr == ""
        report = json.loads((cwd / "report.json").read_text())
        yield Traced(receiver.spans, report, done)


def tree(spans: list[Any], parent: str, name=lambda s: s.name, ids=None) -> list[Any]:
    """[(name, [children…]), …] under `parent`, sorted by name: the shape of a trace."""
    span_id, parent_id = ids or (lambda s: s.span_id, lambda s: s.parent_id)
    return sorted(
        (name(s), tree(spans, span_id(s), name, ids)) for s in spans if parent_id(s) == parent
    )


SHAPE = [
    (
        "matrix run otel-demo",
        [
            (
                "Core checks",
                [
                    ("flaky", [("attempt 1", []), ("attempt 2", [])]),
                    ("hangs", []),
                    ("leaky", []),
                    ("traced", []),
                ],
            ),
            ("later", [("blocked", [])]),
        ],
    )
]


def test_one_trace_under_the_callers_span(traced: Traced) -> None:
    assert {s.trace_id for s in traced.spans} == {TRACE_ID}
    assert [s.name for s in traced.spans if s.parent_id == CALLER_SPAN] == ["matrix run otel-demo"]
    assert tree(traced.spans, CALLER_SPAN) == SHAPE
    assert len(traced.spans) == 10


def test_root_carries_the_verdict_score_and_pipeline(traced: Traced) -> None:
    root = traced.root
    attributes = root.attributes
    assert attributes["matrix.spec"] == "otel-demo"
    assert attributes["matrix.verdict"] == traced.report["verdict"] == "BLOCKED"
    assert attributes["matrix.score"] == traced.report["score"]
    assert attributes["matrix.tasks.fail"] == 2
    assert attributes["cicd.pipeline.name"] == "Deploy gate"
    assert attributes["cicd.pipeline.run.id"] == "4242"
    assert attributes["cicd.pipeline.run.url.full"].endswith("/acme/trainer/actions/runs/4242")
    assert root.span.status.code == Status.STATUS_CODE_ERROR
    assert root.resource["service.name"] == "matrix"


def test_phase_spans_are_test_suites(traced: Traced) -> None:
    core, later = traced.named("Core checks"), traced.named("later")
    assert core.attributes["test.suite.name"] == "Core checks"
    assert core.attributes["matrix.phase"] == "core"
    assert core.attributes["test.suite.run.status"] == "failure"
    assert core.span.status.code == Status.STATUS_CODE_ERROR
    assert later.attributes["test.suite.run.status"] == "skipped"
    assert later.span.status.code == Status.STATUS_CODE_UNSET


def test_task_spans_are_test_cases_with_status(traced: Traced) -> None:
    expected = {
        # task: (test.case.result.status, span status code, error.type)
        "traced": ("pass", Status.STATUS_CODE_UNSET, None),
        "leaky": ("fail", Status.STATUS_CODE_ERROR, "assertion"),
        "hangs": ("fail", Status.STATUS_CODE_ERROR, "timeout"),
        "flaky": ("fail", Status.STATUS_CODE_ERROR, "assertion"),
        "blocked": (None, Status.STATUS_CODE_UNSET, None),
    }
    for task_id, (case, code, error_type) in expected.items():
        span = traced.named(task_id)
        attributes = span.attributes
        result = traced.results[task_id]
        assert attributes["test.case.name"] == task_id
        assert attributes.get("test.case.result.status") == case, task_id
        assert attributes["matrix.status"] == result["status"]
        assert attributes["matrix.check.id"] == task_id
        assert attributes["matrix.check.severity"] == result["severity"]
        assert attributes.get("matrix.check.category") == result["category"]
        assert attributes["matrix.target"] == "local"
        assert attributes["host.name"] == "localhost"
        assert "server.address" not in attributes  # only SSH targets have one
        assert span.span.status.code == code, task_id
        assert attributes.get("error.type") == error_type, task_id
    assert traced.named("blocked").attributes["matrix.skip.reason"] == "blocked by leaky"
    assert traced.named("leaky").span.status.message == "login refused for token ***"
    assert traced.named("hangs").span.status.message == "timed out after 0.3s (probe killed)"
    assert traced.named("traced").span.status.message == ""


def test_errors_become_exception_events(traced: Traced) -> None:
    hangs = traced.named("hangs")
    (event,) = hangs.span.events
    attributes = {kv.key: kv.value.string_value for kv in event.attributes}
    assert event.name == "exception"
    assert attributes == {
        "exception.type": "TimeoutError",
        "exception.message": "timed out after 0.3s (probe killed)",
    }
    assert not traced.named("leaky").span.events  # a failed expectation is no exception


def test_retries_are_attempt_spans(traced: Traced) -> None:
    flaky = traced.named("flaky")
    attempts = sorted(traced.children(flaky), key=lambda s: s.start)
    tries = traced.results["flaky"]["tries"]
    assert [s.name for s in attempts] == ["attempt 1", "attempt 2"]
    assert [s.attributes["matrix.attempt"] for s in attempts] == [1, 2]
    assert flaky.attributes["matrix.attempts"] == 2
    for span, attempt in zip(attempts, tries):
        assert span.span.status.code == Status.STATUS_CODE_ERROR
        assert span.attributes["error.type"] == "assertion"
        assert span.start == pytest.approx(attempt["started_at"], abs=0.002)
        assert span.end - span.start == pytest.approx(attempt["duration"], abs=0.002)
    assert attempts[0].end <= attempts[1].start  # the backoff lies between them


def test_command_probe_gets_its_task_spans_traceparent(traced: Traced) -> None:
    echoed = traced.results["traced"]["facts"]["stdout"]
    assert echoed == f"00-{TRACE_ID}-{traced.named('traced').span_id}-01"


def test_secret_is_redacted_everywhere(traced: Traced) -> None:
    everything = [s.span.SerializeToString() for s in traced.spans]
    assert not any(SECRET.encode() in blob for blob in everything)
    assert "***" in traced.named("leaky").span.status.message


def test_span_times_are_the_reports_times(traced: Traced) -> None:
    for task_id, result in traced.results.items():
        span = traced.named(task_id)
        if result["started_at"] is None:  # never ran: a moment, with its reason
            assert span.end == span.start
            continue
        assert span.start == pytest.approx(result["started_at"], abs=0.002), task_id
        assert span.end - span.start == pytest.approx(result["duration"], abs=0.002), task_id
    for phase in traced.report["phases"]:
        span = traced.named(phase["title"])
        children = traced.children(span)
        assert span.start == min(c.start for c in children)
        assert span.end == max(c.end for c in children)
        if phase["id"] == "core":
            assert span.end - span.start == pytest.approx(phase["duration"], abs=0.002)
    root = traced.root
    assert root.start == pytest.approx(traced.report["started_at"], abs=0.002)
    assert root.end - root.start == pytest.approx(traced.report["duration"], abs=0.002)
    assert all(root.start <= s.start and s.end <= root.end for s in traced.spans)


def test_file_export_is_otlp_json_with_the_same_tree(tmp_path: Path, traced: Traced) -> None:
    write(tmp_path, SPEC)
    done = matrix(
        tmp_path,
        "run",
        "spec.yaml",
        "--quiet",
        "--otel",
        "traces.json",
        env={"TRACEPARENT": TRACEPARENT, "OTEL_TEST_TOKEN": SECRET},
    )
    assert done.returncode == 1, done.stderr
    text = (tmp_path / "traces.json").read_text()
    assert SECRET not in text
    document = json.loads(text)
    (spans_json,) = [
        scope["spans"] for rs in document["resourceSpans"] for scope in rs["scopeSpans"]
    ]
    assert {s["traceId"] for s in spans_json} == {TRACE_ID}  # OTLP-JSON ids are hex
    assert all(isinstance(s["startTimeUnixNano"], str) for s in spans_json)
    assert not list(tmp_path.glob(".*partial"))

    request = json_format.Parse(json.dumps(_base64_ids(document)), ExportTraceServiceRequest())
    spans = flatten(request)
    assert tree(spans, CALLER_SPAN) == SHAPE == tree(traced.spans, CALLER_SPAN)
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert spans[0].resource["service.name"] == "matrix"


def _base64_ids(node: Any) -> Any:
    """OTLP-JSON ids are hex; protobuf's own JSON parser reads bytes as base64."""
    if isinstance(node, list):
        return [_base64_ids(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: base64.b64encode(bytes.fromhex(value)).decode()
        if key in ("traceId", "spanId", "parentSpanId")
        else _base64_ids(value)
        for key, value in node.items()
    }


def test_endpoint_in_the_environment_turns_it_on(tmp_path: Path) -> None:
    write(tmp_path, PASSING)
    with OtlpReceiver() as receiver:
        done = matrix(
            tmp_path,
            "run",
            "spec.yaml",
            "--quiet",
            env={
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.endpoint}/v1/traces",
                "OTEL_SERVICE_NAME": "gpu-preflight",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                "TRACEPARENT": "not-a-traceparent",
            },
        )
        assert done.returncode == 0, done.stderr
        assert receiver.headers[0]["Content-Encoding"] == "gzip"
        spans = receiver.spans
    assert "ignoring TRACEPARENT" in done.stderr
    assert sorted(s.name for s in spans) == ["fine", "matrix run small", "only"]
    (root,) = [s for s in spans if s.name == "matrix run small"]
    assert root.parent_id == ""  # a fresh trace, not a child of the malformed one
    assert root.attributes["matrix.verdict"] == "READY"
    assert root.span.status.code == Status.STATUS_CODE_UNSET
    assert root.resource["service.name"] == "gpu-preflight"


def test_a_dead_collector_costs_seconds_and_one_clear_line(tmp_path: Path) -> None:
    write(tmp_path, PASSING)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the run: nobody listens there
    began = time.monotonic()
    done = matrix(
        tmp_path,
        "run",
        "spec.yaml",
        "--quiet",
        "--otel",
        "otlp",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
    )
    assert time.monotonic() - began < 10
    assert done.returncode == 0  # the verdict decides the exit code, not the collector
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"matrix: could not send OpenTelemetry traces to http://127.0.0.1:{port}/v1/traces: "
        "connection refused; the run's result is unchanged"
    ]


def test_without_opentelemetry_it_says_what_to_install(tmp_path: Path) -> None:
    write(tmp_path, PASSING)
    blocked = (
        "import sys; sys.modules['opentelemetry'] = None; from matrix.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked, "run", "spec.yaml", "--otel", "t.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'preflight-matrix[otel]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t.json").exists()


SSH_SPEC = """
version: 1
name: remote
targets:
  gpu:
    via: ssh
    hosts: [10.0.0.5, "gpu-2.internal:2222"]
    insecure: true
phases:
  - id: infra
    checks:
      - id: disk
        on: gpu
        probe: {kind: command, argv: ["true"]}
"""


def test_ssh_tasks_name_their_server(tmp_path: Path, plan_spec: Any) -> None:
    """In process, with the Run made by hand: no sshd needed to see the attributes."""
    from matrix.results import Result, Run, Status, phase_infos
    from matrix.transport import address
    from reporters.otel import OtelReporter

    plan = plan_spec(SSH_SPEC)
    reporter = OtelReporter(str(tmp_path / "t.json"))
    reporter.start(plan)
    results, handed = [], {}
    now = time.time()
    for task in plan.tasks.values():
        reporter.task_started(task)
        handed[task.id] = reporter.probe_env(task)["TRACEPARENT"]
        host, port = address(task.target)  # what the engine records on every result
        result = Result(
            task.id, "disk", "infra", task.target.name, task.target.host, {}, Status.passed,
            "critical", "disk", started_at=now, duration=0.25, attempts=1, group="gpu",
            address=host, port=port,
        )  # fmt: skip
        reporter.task_finished(result)
        results.append(result)
    run = Run("remote", "spec.yaml", {}, phase_infos(plan.spec.phases), results, [], now, 0.5)
    reporter.finish(run)

    document = json.loads((tmp_path / "t.json").read_text())
    request = json_format.Parse(json.dumps(_base64_ids(document)), ExportTraceServiceRequest())
    spans = {s.name: s for s in flatten(request)}
    first, second = spans["disk@10.0.0.5"], spans["disk@gpu-2.internal:2222"]
    assert (first.attributes["server.address"], first.attributes["server.port"]) == (
        "10.0.0.5",
        22,
    )
    assert (second.attributes["server.address"], second.attributes["server.port"]) == (
        "gpu-2.internal",
        2222,
    )
    assert first.attributes["host.name"] == "10.0.0.5"
    assert first.attributes["matrix.target.group"] == "gpu"
    for name in ("disk@10.0.0.5", "disk@gpu-2.internal:2222"):
        span = spans[name]
        assert handed[name] == f"00-{span.trace_id}-{span.span_id}-01"
        assert span.end - span.start == pytest.approx(0.25, abs=1e-6)
