"""`http.trace` against a real service instrumented with OpenTelemetry's SDK and its W3C
propagator: the trace must come back in the answer and reach the service's next hop, which
is the probe's own listener."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from http_server import script_servers

from matrix.results import Result, Run

# A service that takes `mode` and the port of its next hop. good: continues the caller's
# trace in a span of its own and passes it on (downstream and in its answer); fresh: starts
# a new trace; drop: calls downstream without trace headers; mute: never calls downstream.
SERVICE = """
import http.server, sys, urllib.request
from opentelemetry import context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

mode, downstream = sys.argv[1], int(sys.argv[2])
tracer = TracerProvider().get_tracer("service")
propagator = TraceContextTextMapPropagator()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        incoming = propagator.extract(headers) if mode != "fresh" else context.Context()
        with tracer.start_as_current_span("handle", context=incoming):
            carrier = {}
            propagator.inject(carrier)
            if mode != "mute":
                headers = carrier if mode != "drop" else {}
                url = f"http://127.0.0.1:{downstream}/v1/score"
                urllib.request.urlopen(urllib.request.Request(url, headers=headers)).read()
        self.send_response(200)
        for name, value in carrier.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, int]]]:
    """service(mode) → (its URL, the port its next hop must listen on)."""
    with script_servers(tmp_path) as servers:

        def start(mode: str) -> tuple[str, int]:
            downstream = free_port()
            port, _ = servers.start(SERVICE, mode, downstream)
            return f"http://127.0.0.1:{port}/predict", downstream

        yield start


def trace(run_spec: Callable[..., Run], rows: dict[str, dict]) -> dict[str, Result]:
    checks = [
        {"id": name, "probe": {"kind": "http.trace", "downstream_wait": 1, **probe}}
        for name, probe in rows.items()
    ]
    spec = {"version": 1, "name": "t", "phases": [{"id": "p", "checks": checks}]}
    run = run_spec(json.dumps(spec))
    return {result.check_id: result for result in run.results}


def test_an_instrumented_service_carries_the_trace_to_its_answer_and_its_next_hop(
    run_spec, service
) -> None:
    url, downstream = service("good")

    found = trace(
        run_spec,
        {"good": {"url": url, "response_header": "traceparent", "downstream_port": downstream}},
    )["good"]

    assert found.status.value == "pass", found.reason
    facts = found.facts
    assert facts["propagated"] is True and facts["problem"] is None
    assert facts["looked"] == ["response", "downstream"]
    sent = facts["traceparent"].split("-")
    assert sent[1] == facts["trace_id"] and len(sent[1]) == 32 and sent[3] == "01"
    for place in (facts["response"], facts["downstream"]):
        assert place["trace_id"] == facts["trace_id"] and place["same_trace"] is True
        assert place["new_span"] is True  # the service's own span, not ours passed on
    assert facts["downstream"]["calls"] == 1
    assert (facts["downstream"]["method"], facts["downstream"]["path"]) == ("GET", "/v1/score")


def test_each_way_of_losing_the_trace_fails_and_says_where(run_spec, service) -> None:
    rows = {}
    for mode in ("fresh", "drop", "mute"):
        url, downstream = service(mode)
        rows[mode] = {"url": url, "downstream_port": downstream}
    rows["no-header"] = {"url": service("mute")[0], "response_header": "x-trace-id"}

    found = trace(run_spec, rows)

    assert {name: result.status.value for name, result in found.items()} == dict.fromkeys(
        rows, "fail"
    )
    problems = {name: result.facts["problem"] for name, result in found.items()}
    fresh = found["fresh"].facts
    assert fresh["downstream"]["trace_id"] not in (None, fresh["trace_id"])
    assert f"carried trace {fresh['downstream']['trace_id']}, not ours" in problems["fresh"]
    assert "the service started a new trace" in problems["fresh"]
    assert problems["drop"] == (
        "its downstream call (GET /v1/score) carried no trace context: the service does not "
        "pass traceparent on"
    )
    assert problems["mute"].startswith("no downstream call reached 127.0.0.1:")
    assert problems["no-header"].startswith("the answer's x-trace-id header carried no trace")
    assert all(result.facts["propagated"] is False for result in found.values())


def test_a_spec_that_names_no_place_to_look_is_rejected(cli, tmp_path: Path) -> None:
    spec = tmp_path / "trace.yaml"
    spec.write_text(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n      - id: tr\n"
        "        probe: {kind: http.trace, url: 'http://127.0.0.1:1/'}\n"
    )

    done = cli("validate", str(spec))

    assert done.returncode == 2
    assert "trace.yaml:7:" in done.stderr and "give response_header" in done.stderr
    assert "Traceback" not in done.stderr
