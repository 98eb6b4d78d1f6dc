"""net.bandwidth through the real engine: a throttled HTTP server on loopback whose rate we
know, and an S3 object on moto's server fetched by a URL presigned on the controller."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from matrix.results import Result, Run

RATE = 1_000_000  # bytes per second the server sends: 8 Mbps
BLOB = 4 * RATE


class Throttled(BaseHTTPRequestHandler):
    """GET /blob sends BLOB bytes at RATE; /small sends 1000 bytes; anything else is 404."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        size = {"/blob": BLOB, "/small": 1000}.get(path)
        if size is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk, started, sent = 50_000, time.perf_counter(), 0
        try:
            while sent < size:
                part = min(chunk, size - sent)
                self.wfile.write(b"x" * part)
                sent += part
                ahead = sent / RATE - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the probe stops reading when its time is up

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def checks(*rows: dict[str, Any]) -> str:
    for row in rows:
        row.setdefault("diagnostic", "{{ facts.estimate or error }}")
    return yaml.safe_dump({"version": 1, "name": "bw", "phases": [{"id": "p", "checks": rows}]})


def row(id: str, expect: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"id": id, "probe": {"kind": "net.bandwidth", **params}}
    if expect is not None:
        found["expect"] = expect
    return found


def test_measures_a_known_rate_and_estimates_the_download(
    server: str,
    run_spec: Callable[..., Run],
    by_id: Callable[[Run], dict[str, Result]],
) -> None:
    results = by_id(
        run_spec(
            checks(
                row("fast-enough", {"mbps": {"ge": 4}}, url=f"{server}/blob", seconds=1.5),
                row(
                    "too-slow",
                    {"mbps": {"ge": 200}},
                    url=f"{server}/blob?token=abc",
                    seconds=1.5,
                    size_gb=27,
                ),
            )
        )
    )
    fast, slow = results["fast-enough"], results["too-slow"]
    assert fast.status.value == "pass", fast.reason
    assert 4 <= fast.facts["mbps"] <= 12  # 8 Mbps sent; generous for a busy 2-core machine
    assert fast.facts["complete"] is False
    assert 1.4 <= fast.facts["seconds"] <= 3
    assert slow.status.value == "fail"
    assert slow.facts["source"] == f"{server}/blob"  # the query (a token) is never shown
    hours = 27 * 1024**3 * 8 / (slow.facts["mbps"] * 1e6) / 3600
    assert slow.facts["hours"] == pytest.approx(hours, rel=0.01)
    assert slow.diagnostic == (
        f"Speed {slow.facts['mbps']:.0f}Mbps, will take {hours:.1f}h for 27GB"
    )


def test_a_small_object_completes_and_a_missing_one_is_an_error(
    server: str, run_spec: Callable[..., Run], by_id: Callable[[Run], dict[str, Result]]
) -> None:
    results = by_id(
        run_spec(checks(row("small", url=f"{server}/small"), row("gone", url=f"{server}/gone")))
    )
    assert results["small"].facts["bytes"] == 1000
    assert results["small"].facts["complete"] is True
    assert results["gone"].status.value == "error"
    assert results["gone"].diagnostic == f"GET {server}/gone answered 404 Not Found"


def test_s3_object_is_presigned_and_never_shown(
    aws, cli, tmp_path: Path, report: Callable[[Path], dict[str, Any]]
) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="training-data")
    s3.put_object(Bucket="training-data", Key="shard-000.jsonl", Body=b"x" * 300_000)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        checks(
            row("s3", url="s3://training-data/shard-000.jsonl", endpoint_url=aws.url, size_gb=1),
            row("missing", url="s3://training-data/nope", endpoint_url=aws.url),
        )
    )
    done = cli("run", spec, "--json", tmp_path / "out.json", env=aws.credentials())
    assert done.returncode in (0, 1), done.stderr
    text = (tmp_path / "out.json").read_text()
    results = report(tmp_path / "out.json")["by_id"]
    got = results["s3"]
    assert got["status"] == "pass", got
    assert got["facts"]["bytes"] == 300_000 and got["facts"]["complete"] is True
    assert got["facts"]["source"] == "s3://training-data/shard-000.jsonl"
    assert "X-Amz-Signature" not in text and "Signature=" not in text
    assert results["missing"]["status"] == "error"
    assert "s3://training-data/nope answered 404" in results["missing"]["diagnostic"]
    assert json.loads(text)["results"]


def test_url_scheme_is_checked_at_plan_time(spec_problems: Callable[..., list[Any]]) -> None:
    problems = spec_problems(checks(row("ftp", url="ftp://example.invalid/x")))
    assert any("http:// or https:// or s3://" in p.message for p in problems)
