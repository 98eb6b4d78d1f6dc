"""`prometheus.metrics`, `prometheus.query` and `prometheus.alert` against a real exporter (an
HTTP server in this process) and a real Prometheus scraping it, with an alerting rule that
fires once the exporter is stopped: the alert path, end to end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus import prometheus, query, rule_health, until

from matrix.results import Result, Run

REPO = Path(__file__).resolve().parents[2]

METRICS = """\
# HELP trainer_steps_total Optimizer steps taken.
# TYPE trainer_steps_total counter
trainer_steps_total 1234
# HELP trainer_loss Last training loss.
# TYPE trainer_loss gauge
trainer_loss{run="a7"} 0.42
# TYPE trainer_gpu_temp gauge
trainer_gpu_temp{gpu="0"} 71
# HELP training_loss Loss of the last optimizer step.
# TYPE training_loss gauge
training_loss 0.42
# HELP training_step_seconds Seconds the last optimizer step took.
# TYPE training_step_seconds gauge
training_step_seconds 0.31
# HELP training_heartbeat_timestamp_seconds When the trainer last beat (unix time).
# TYPE training_heartbeat_timestamp_seconds gauge
training_heartbeat_timestamp_seconds NOW
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
      - alert: TrainerMetricsOdd
        expr: '{__name__=~"trainer_.+"} * on() vector(1) > 0'
        annotations: {summary: "never evaluates: many series match one"}
"""


@pytest.fixture
def exporter() -> Iterator[tuple[str, Callable[[], None]]]:
    """(host:port of an exporter serving METRICS, or `broken` text at /broken; stop())."""

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = METRICS.replace("NOW", f"{time.time():.3f}")
            body = (page if self.path == "/metrics" else "not metrics {{{\n").encode()
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
        until(lambda: rule_health(server, "TrainerMetricsOdd") == "err")
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
                {"id": "broken", "probe": {**alert, "alert": "TrainerMetricsOdd"}},
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
    broken = healthy["broken"]
    assert (broken.status.value, broken.facts["health"]) == ("fail", "err")
    assert "many-to-one matching must be explicit" in broken.facts["last_error"]
    assert healthy["typo"].status.value == "error"
    assert "has no alerting rule 'TrainerDwn' (it has TrainerDown, TrainerMetricsOdd)" in (
        healthy["typo"].reason
    )
    assert healthy["bad-query"].status.value == "error"
    assert healthy["bad-query"].reason.startswith("Prometheus at ")
    fires = fired["fires"]
    assert fires.status.value == "pass", fires.reason
    assert fires.facts["alerts"][0]["annotations"]["summary"] == (
        f"Trainer {address} stopped answering"
    )


# The pipeline's failure alerts, as a team would write them: the stalled one lacks its runbook
# and SpotInterruption is not loaded at all.
PIPELINE_RULES = """\
groups:
  - name: training
    rules:
      - alert: TrainingOutOfMemory
        expr: increase(training_oom_total[5m]) > 0
        annotations: {summary: "CUDA OOM on {{ $labels.instance }}", runbook_url: "https://runbooks/oom"}
      - alert: TrainingLossNaN
        expr: training_loss != training_loss
        annotations: {summary: "Loss is NaN on {{ $labels.instance }}", runbook_url: "https://runbooks/nan"}
      - alert: TrainingStalled
        expr: time() - training_heartbeat_timestamp_seconds > 300
        annotations: {summary: "No heartbeat from {{ $labels.instance }} for 5 minutes"}
"""


def test_the_pipeline_monitoring_rows_run_against_prometheus_without_a_team_script(
    cli, exporter, tmp_path: Path
) -> None:
    address, _ = exporter
    with prometheus(tmp_path, {"trainer": address}, PIPELINE_RULES) as server:
        until(lambda: query(server, "training_heartbeat_timestamp_seconds"))
        out = tmp_path / "monitoring.json"
        done = cli(
            "run", REPO / "specs" / "pipeline.yaml", "--phase", "monitoring",
            "--var", f"prometheus_url={server}", "--var", "slack_alerts=false",
            "--var", f"trainer_metrics_url=http://{address}/metrics", "--json", out,
        )  # fmt: skip

    assert done.returncode in (0, 1), done.stderr
    rows = {r["task_id"]: r for r in json.loads(out.read_text())["results"]}
    status = {task: row["status"] for task, row in rows.items() if row["status"] != "skip"}
    assert status == {
        "alert-rules[failure_type=oom]": "pass",
        "alert-rules[failure_type=nan_loss]": "pass",
        "alert-rules[failure_type=stalled_progress]": "fail",
        "alert-rules[failure_type=spot_interruption]": "error",
        "heartbeat-metric": "pass",
        "trainer-metrics@trainer": "fail",
        "aws-credentials": "error",  # what s3-monitoring needs: no AWS credentials here
    }, {task: rows[task]["diagnostic"] or rows[task]["reason"] for task in status}
    stalled = rows["alert-rules[failure_type=stalled_progress]"]
    assert stalled["diagnostic"] == "TrainingStalled has no runbook_url"
    assert stalled["fix"] == "Give the rule summary and runbook_url annotations"
    assert rows["trainer-metrics@trainer"]["diagnostic"] == (
        f"No HELP text on trainer_gpu_temp at http://{address}/metrics"
    )
    assert rows["s3-monitoring"]["reason"] == "blocked by aws-credentials"
    spot = rows["alert-rules[failure_type=spot_interruption]"]
    assert "has no alerting rule 'SpotInterruption'" in spot["diagnostic"]
    assert "Load an alerting rule SpotInterruption for spot_interruption" in spot["fix"]
