"""`http.load` against real HTTP servers (python's http.server in a process of its own), and
`alone`: a check that runs with no other task of the run beside it."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from http_server import script_servers

from matrix.results import Result, Run

# A server that sleeps `delay` s per request, keeps `leak` bytes more each time, and answers
# `status`.
SERVER = """
import http.server, os, sys, time
delay, leak, status = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
kept = []

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(delay)
        kept.append(bytearray(os.urandom(16)) * (leak // 16))
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """serve(delay=, leak=, status=) → (its URL, its pid file); stopped after the test."""
    with script_servers(tmp_path) as servers:

        def start(delay: float = 0.0, leak: int = 0, status: int = 200) -> tuple[str, Path]:
            port, pid = servers.start(SERVER, delay, leak, status)
            return f"http://127.0.0.1:{port}/", pid

        yield start


def load(run_spec: Callable[..., Run], rows: dict[str, dict]) -> dict[str, Result]:
    checks = [
        {"id": name, "probe": {"kind": "http.load", **row.pop("probe")}, **row}
        for name, row in rows.items()
    ]
    spec = {"version": 1, "name": "load", "phases": [{"id": "p", "checks": checks}]}
    run = run_spec(json.dumps(spec))
    return {result.check_id: result for result in run.results}


def test_latency_percentiles_statuses_and_throughput(run_spec, serve) -> None:
    url, _ = serve(delay=0.01)

    found = load(run_spec, {"api": {"probe": {"url": url, "requests": 20, "concurrency": 4}}})

    api = found["api"]
    assert api.status.value == "pass", api.reason
    facts = api.facts
    assert (facts["requests"], facts["statuses"], facts["errors"]) == (40, {"200": 40}, 0)
    assert 10 <= facts["p50_ms"] <= facts["p95_ms"] <= facts["p99_ms"] <= facts["max_ms"]
    assert facts["sequential"]["rps"] < facts["concurrent"]["rps"] == facts["rps"]
    assert facts["concurrent"]["concurrency"] == 4 and facts["concurrent"]["requests"] == 20
    phases = (facts["sequential"], facts["concurrent"])
    assert facts["p95_over_p50"] == max(phase["p95_over_p50"] for phase in phases)
    for phase in phases:  # the tail is the server's spread beyond the control's, never more
        assert phase["control_p50_ms"] <= phase["control_p95_ms"]
        assert 1 <= phase["p95_over_p50"] <= round(phase["p95_ms"] / phase["p50_ms"], 2)


def test_errors_are_counted_by_status_and_fail_the_default_expectation(run_spec, serve) -> None:
    url, _ = serve(status=503)

    found = load(run_spec, {"api": {"probe": {"url": url, "requests": 5, "concurrency": 1}}})

    api = found["api"]
    assert api.status.value == "fail"
    assert (api.facts["statuses"], api.facts["errors"], api.facts["error_rate"]) == (
        {"503": 5},
        5,
        1.0,
    )
    assert api.facts["concurrent"] is None


def test_a_redirect_that_leads_nowhere_is_an_error_of_the_load(run_spec, serve) -> None:
    url, _ = serve(status=302)  # a 302 with no Location: nothing to follow to a 2xx

    found = load(run_spec, {"api": {"probe": {"url": url, "requests": 5, "concurrency": 1}}})

    api = found["api"]
    assert api.status.value == "fail"
    assert (api.facts["statuses"], api.facts["errors"]) == ({"302": 5}, 5)


def test_a_server_that_leaks_shows_memory_growth_and_a_steady_one_does_not(run_spec, serve) -> None:
    leaky, leaky_pid = serve(leak=1 << 20)  # 1 MiB kept per request
    steady, steady_pid = serve()
    growth = {"rss_growth_pct": {"lt": 20}}

    servers = {"leaky": (leaky, leaky_pid), "steady": (steady, steady_pid)}
    found = load(
        run_spec,
        {
            name: {"probe": {"url": url, "requests": 50, "concurrency": 1, "process": str(pid)},
                   "expect": growth}
            for name, (url, pid) in servers.items()
        },
    )  # fmt: skip

    assert found["leaky"].status.value == "fail"
    assert found["leaky"].facts["rss_growth_pct"] > 100  # 50+ MiB onto a ~20 MiB python
    assert found["leaky"].facts["pid"] == int(leaky_pid.read_text())
    assert found["steady"].status.value == "pass", found["steady"].reason


def test_a_process_that_is_not_there_and_a_server_that_is_not_there_are_clear_errors(
    run_spec, serve, tmp_path
) -> None:
    url, _ = serve()

    found = load(
        run_spec,
        {
            "named": {"probe": {"url": url, "requests": 1, "process": "no-such-server-xyz"}},
            "down": {"probe": {"url": "http://127.0.0.1:9/", "requests": 1}},
        },
    )

    assert found["named"].status.value == "error"
    assert found["named"].reason.startswith("no process named 'no-such-server-xyz' runs on ")
    assert found["down"].status.value == "error"
    assert found["down"].reason == "GET http://127.0.0.1:9/ failed: connection refused"


def test_a_check_that_runs_alone_has_the_run_to_itself(run_spec) -> None:
    sleep = {"kind": "command", "argv": [sys.executable, "-c", "import time; time.sleep(0.4)"]}
    checks = [{"id": f"other{i}", "probe": sleep} for i in range(3)]
    checks.insert(1, {"id": "solo", "alone": True, "probe": sleep})
    checks.append({"id": "beside", "alone": False, "probe": sleep})
    spec = {"version": 1, "name": "alone", "phases": [{"id": "p", "checks": checks}]}

    run = run_spec(json.dumps(spec), concurrency=8)

    spans = {r.check_id: (r.started_at, r.started_at + r.duration) for r in run.results}
    solo = spans.pop("solo")
    for name, (start, end) in spans.items():
        assert end <= solo[0] + 0.01 or start >= solo[1] - 0.01, (name, spans, solo)
    others = sorted(spans.values())
    assert any(b[0] < a[1] for a, b in itertools.pairwise(others))  # the rest ran side by side
