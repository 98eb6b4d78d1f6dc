"""`prometheus.metrics`, `prometheus.query` and `prometheus.alert` against a real exporter (an
HTTP server in this process) and a real Prometheus scraping it, with an alerting rule that
fires once the exporter is stopped: the alert path, end to end."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus import prometheus, query, until

from matrix.results import Result, Run

METRICS = """\
# HELP trainer_steps_total Optimizer steps taken.
# TYPE trainer_steps_total counter
trainer_steps_total 1234
# HELP trainer_loss Last training loss.
# TYPE trainer_loss gauge
trainer_loss{run="a7"} 0.42
# TYPE trainer_gpu_temp gauge
trainer_gpu_temp{gpu="0"} 71
"""

RULES = """\
groups:
  - name: trainer
    rules:
      - alert: TrainerDown
        expr: up{job="trainer"} == 0
        labels: {severity: page}
        annotations:
          summary: "Trainer {{ $labels.instance }} stopped answering"
          runbook_url: ""
"""


@pytest.fixture
def exporter() -> Iterator[tuple[str, Callable[[], None]]]:
    """(host:port of an exporter serving METRICS, or `broken` text at /broken; stop())."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (METRICS if self.path == "/metrics" else "not metrics {{{\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()

    yield f"127.0.0.1:{server.server_address[1]}", stop
    stop()


def checks(run_spec: Callable[..., Run], rows: list[dict]) -> dict[str, Result]:
    spec = {"version": 1, "name": "monitoring", "phases": [{"id": "p", "checks": rows}]}
    return {result.check_id: result for result in run_spec(json.dumps(spec)).results}


def test_metrics_are_parsed_and_required_names_and_help_checked(run_spec, exporter) -> None:
    address, _ = exporter
    url = f"http://{address}/metrics"

    found = checks(
        run_spec,
        [
            {"id": "named", "probe": {"kind": "prometheus.metrics", "url": url,
                                      "required": ["trainer_steps_total", "trainer_loss"]},
             "expect": {"missing": [], "values.trainer_steps_total": {"ge": 1000}}},
            {"id": "gaps", "probe": {"kind": "prometheus.metrics", "url": url,
                                     "required": ["trainer_tokens_total"]}},
            {"id": "broken", "probe": {"kind": "prometheus.metrics",
                                       "url": f"http://{address}/broken"}},
        ],
    )  # fmt: skip

    named = found["named"]
    assert named.status.value == "pass", named.reason
    assert named.facts["families"]["trainer_steps"] == {
        "type": "counter", "help": "Optimizer steps taken.", "samples": 1,
    }  # fmt: skip
    assert named.facts["values"]['trainer_loss{run="a7"}'] == 0.42
    gaps = found["gaps"]
    assert gaps.status.value == "fail"
    assert gaps.facts["missing"] == ["trainer_tokens_total"]
    assert gaps.facts["without_help"] == ["trainer_gpu_temp"]
    assert found["broken"].status.value == "error"
    assert "is not the Prometheus text format" in found["broken"].reason


def test_a_query_and_an_alert_that_fires_once_the_exporter_stops(
    run_spec, exporter, tmp_path: Path
) -> None:
    address, stop = exporter
    with prometheus(tmp_path, {"trainer": address}, RULES) as server:
        until(lambda: query(server, 'up{job="trainer"} == 1'))
        alert = {"kind": "prometheus.alert", "server": server, "alert": "TrainerDown",
                 "annotations": ["summary"]}  # fmt: skip
        healthy = checks(
            run_spec,
            [
                {"id": "up", "probe": {"kind": "prometheus.query", "server": server,
                                       "query": 'up{job="trainer"}'}, "expect": {"value": 1}},
                {"id": "quiet", "probe": alert},
                {"id": "runbook", "probe": {**alert, "annotations": ["summary", "runbook_url"]}},
                {"id": "typo", "probe": {**alert, "alert": "TrainerDwn"}},
                {"id": "bad-query", "probe": {"kind": "prometheus.query", "server": server,
                                              "query": "up{"}},
            ],
        )  # fmt: skip
        stop()  # the failure: the trainer stops answering its scrapes
        until(lambda: query(server, 'ALERTS{alertname="TrainerDown",alertstate="firing"}'))
        fired = checks(run_spec, [{"id": "fires", "probe": alert, "expect": {"firing": True}}])

    assert healthy["up"].status.value == "pass", healthy["up"].reason
    assert healthy["up"].facts["results"][0]["metric"]["job"] == "trainer"
    quiet = healthy["quiet"]
    assert quiet.status.value == "pass", quiet.reason
    assert (quiet.facts["state"], quiet.facts["labels"]) == ("inactive", {"severity": "page"})
    assert healthy["runbook"].facts["missing_annotations"] == ["runbook_url"]
    assert healthy["runbook"].status.value == "fail"
    assert healthy["typo"].status.value == "error"
    assert "has no alerting rule 'TrainerDwn' (it has TrainerDown)" in healthy["typo"].reason
    assert healthy["bad-query"].status.value == "error"
    assert healthy["bad-query"].reason.startswith("Prometheus at ")
    fires = fired["fires"]
    assert fires.status.value == "pass", fires.reason
    assert fires.facts["alerts"][0]["annotations"]["summary"] == (
        f"Trainer {address} stopped answering"
    )
