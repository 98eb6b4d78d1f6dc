"""Big and odd answers from a real server (tests/prefork_server.py): bodies and headers over
the cap, a chunked body that never ends, a 100k-line /metrics page, and redirects. A probe
keeps what fits, says what it cut, and a row that reads a cut fact is an error, never a
pass on part of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from http_server import script_servers

from matrix.results import Result, Run


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    with script_servers(tmp_path) as servers:
        port, _ = servers.prefork("--workers", 1, "--metrics-lines", 100_000)
        yield f"http://127.0.0.1:{port}"


def rows(run_spec: Callable[..., Run], checks: dict[str, dict]) -> dict[str, Result]:
    phases = [{"id": "p", "checks": [{"id": name, **row} for name, row in checks.items()]}]
    run = run_spec(json.dumps({"version": 1, "name": "answers", "phases": phases}))
    return {result.check_id: result for result in run.results}


def test_bodies_and_headers_past_the_cap_are_cut_and_said_to_be(run_spec, base: str) -> None:
    http = {"kind": "http", "timeout": 5}
    found = rows(
        run_spec,
        {
            "big": {"probe": {**http, "url": f"{base}/big"}},
            "big-body": {"probe": {**http, "url": f"{base}/big"}, "expect": {"body": {"len": 1}}},
            "endless": {"probe": {**http, "url": f"{base}/endless", "max_bytes": 131072}},
            "headers": {"probe": {**http, "url": f"{base}/headers"}},
            "a-header": {
                "probe": {**http, "url": f"{base}/headers"},
                "expect": {"headers.x-big-89": {"len": 16384}},
            },
        },
    )

    big = found["big"]
    assert big.status.value == "pass"  # the status is whole: the default expectation holds
    assert big.facts["truncated"] is True and len(big.facts["body"]) == 65536
    assert found["big-body"].status.value == "error"
    assert found["big-body"].error_type == "incomplete"
    assert found["big-body"].reason == (
        "expect reads body, but the body is longer than max_bytes (65536 bytes): only its "
        "start was read"
    )
    endless = found["endless"]
    assert endless.status.value == "pass" and len(endless.facts["body"]) == 131072
    headers = found["headers"].facts
    assert headers["incomplete"]["headers"].startswith("over 32768 bytes of headers")
    assert 0 < len(headers["headers"]) < 90
    # a header that was not kept may have been cut: not judged; one that was kept is whole
    assert found["a-header"].status.value == "error"
    assert found["a-header"].reason.startswith("expect reads headers.x-big-89, but over 32768")


def test_a_100k_line_metrics_page_is_read_as_it_streams(run_spec, base: str) -> None:
    metrics = {"kind": "prometheus.metrics", "url": f"{base}/metrics"}
    one = 'values.app_requests_999_total{code="200",route="/r42"}'
    found = rows(
        run_spec,
        {
            "page": {"probe": {**metrics, "required": ["request_latency_seconds"]}},
            "a-value": {
                "probe": {**metrics, "required": ["app_requests_999"]},
                "expect": {one: 42},
            },
            "not-kept": {
                "probe": metrics,
                "expect": {'values.app_requests_998_total{code="200",route="/r1"}': 1},
            },
        },
    )

    page = found["page"]
    assert page.status.value == "pass", page.reason
    assert page.facts["samples"] == 100_003 and page.facts["lines"] == 102_005
    assert len(page.facts["families"]) == 1001
    assert page.facts["families"]["app_requests_0"] == {
        "type": "counter",
        "help": "Requests of shard 0.",
        "samples": 100,
    }
    assert page.facts["families"]["request_latency_seconds"]["samples"] == 3
    assert "values" in page.facts["incomplete"]
    assert found["a-value"].status.value == "pass", found["a-value"].reason
    assert found["not-kept"].status.value == "error"
    assert found["not-kept"].error_type == "incomplete"


def test_redirects_are_followed_to_an_answer_and_refused_when_they_lead_nowhere(
    run_spec, base: str
) -> None:
    http = {"kind": "http", "timeout": 5}
    found = rows(
        run_spec,
        {
            "hop": {"probe": {**http, "url": f"{base}/hop"}, "expect": {"json.outputs": "hi"}},
            "loop": {"probe": {**http, "url": f"{base}/loop"}},
            "file": {"probe": {**http, "url": f"{base}/file"}},
            "as-is": {
                "probe": {**http, "url": f"{base}/file", "follow_redirects": False},
                "expect": {"status": 302, "headers.location": "file:///etc/passwd"},
            },
            "load": {"probe": {"kind": "http.load", "url": f"{base}/hop", "requests": 5}},
        },
    )

    assert found["hop"].status.value == "pass", found["hop"].reason
    assert found["hop"].facts["redirects"] == [f"{base}/v1/predict"]
    assert found["loop"].status.value == "error"
    assert found["loop"].reason == (
        f"GET {base}/loop redirects in a loop (302): {base}/loop → {base}/loop"
    )
    assert found["file"].status.value == "error"
    assert "to file:///etc/passwd: only http and https redirects are followed" in (
        found["file"].reason
    )
    assert found["as-is"].status.value == "pass", found["as-is"].reason
    load = found["load"]
    assert load.status.value == "pass" and load.facts["statuses"] == {"200": 10}


def test_checks_asking_the_same_share_one_observation_and_judge_it_each(run_spec) -> None:
    from http_server import Handler, serving

    asked: list[str] = []

    class Counting(Handler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.reply(200, b'{"ready": false}')

    with serving(Counting) as url:
        probe = {"kind": "http", "url": f"{url}/health"}
        found = rows(
            run_spec,
            {
                "up": {"probe": probe},
                "ready": {"probe": probe, "expect": {"json.ready": True}},
                "retried": {"probe": probe, "retry": {"attempts": 2, "backoff": "10ms"}},
                "other": {"probe": {**probe, "url": f"{url}/other"}},
            },
        )

    assert {name: r.status.value for name, r in found.items()} == {
        "up": "pass",
        "ready": "fail",
        "retried": "pass",
        "other": "pass",
    }
    # up and ready asked one question; a check that retries looks for itself
    assert sorted(asked) == ["/health", "/health", "/other"]
