"""`matrix serve` answering /healthz and /metrics from its last run, scraped by a real
Prometheus server (Debian's `prometheus`) and read back through Prometheus's HTTP API; and
`run --prometheus FILE` read by Prometheus's own Python parser."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus import binary, get, prometheus, query, until
from prometheus_client.parser import text_fd_to_metric_families, text_string_to_metric_families

from matrix.commands import answering

SPEC = """\
version: 1
name: served
phases:
  - id: host
    checks:
      - id: marker
        title: No bad mark
        failure: Marked bad
        probe: {{kind: file, path: "{marker}"}}
        expect: {{exists: false}}
        diagnostic: "{marker} exists"
        fix: Remove {marker}
      - {{id: tmp, probe: {{kind: disk, path: /tmp}}}}
"""


@pytest.fixture
def served(cli, tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """(base URL, marker path, process) of `matrix serve` on a free port, every second."""
    marker = tmp_path / "bad"
    (tmp_path / "spec.yaml").write_text(SPEC.format(marker=marker))
    process = cli.popen("serve", "spec.yaml", "--listen", "127.0.0.1:0", "--interval", "1s")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base = line.split()[-1].rsplit("/", 1)[0]  # …; http://127.0.0.1:PORT/metrics
        assert base.startswith("http://127.0.0.1:"), line + (process.stderr.read() or "")
        yield base, marker, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_healthz_follows_the_last_run_and_sigterm_stops_serving(served) -> None:
    base, marker, process = served

    def ready() -> dict | None:
        """/healthz says READY"""
        code, body = get(f"{base}/healthz")
        return json.loads(body) if code == 200 else None

    body = until(ready)
    assert body["verdict"] == "READY" and body["failing"] == [] and body["score"] == 100

    marker.touch()

    def blocked() -> dict | None:
        """/healthz says BLOCKED"""
        code, body = get(f"{base}/healthz")
        return json.loads(body) if code == 503 else None

    body = until(blocked)
    assert body["verdict"] == "BLOCKED"
    assert body["failing"] == [
        {"check": "marker", "target": "local", "severity": "critical", "status": "fail",
         "reason": f"{marker} exists"},
    ]  # fmt: skip
    assert get(f"{base}/nothing")[0] == 404

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert process.stdout is not None
    logged = process.stdout.read().splitlines()  # one line per run, numbered
    assert all(line.startswith("matrix serve: 20") for line in logged), logged
    assert re.search(
        r" run 1: READY 100/100 in \d+\.\ds: 2 passed, 0 failed, 0 errors, 0 skipped$", logged[0]
    ), logged[0]
    blocked_line = next(line for line in logged if " BLOCKED " in line)
    assert blocked_line.endswith(
        f"BLOCKED 50/100 in {blocked_line.split(' in ')[1].split(':')[0]}: 1 passed, 1 failed, "
        f"0 errors, 0 skipped; first: marker@localhost: {marker} exists"
    )


def request(base: str, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, whatever the status."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_head_answers_as_get_does_without_a_body_and_other_methods_are_refused(served) -> None:
    base, _, _ = served
    until(lambda: get(f"{base}/healthz")[0] == 200 or None)
    for path in ("/healthz", "/metrics"):
        got, head = request(base, "GET", path), request(base, "HEAD", path)
        assert (head[0], head[2]) == (got[0], b"")
        assert head[1]["Content-Length"] == str(len(got[2]))
        assert head[1]["Content-Type"] == got[1]["Content-Type"]
    status, headers, body = request(base, "POST", "/healthz")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert body == b"matrix serve answers GET and HEAD, not POST\n"


def test_slowloris_connections_neither_starve_answers_nor_grow_threads(served) -> None:
    """1,500 sockets that send their request a byte at a time: a scrape is still answered,
    serve keeps its few threads and a bounded number of sockets, and drops each slow one."""
    base, _, process = served
    host, port = base.removeprefix("http://").rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1500 + 100
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, wanted)), hard))
    slow = []
    try:
        for _ in range(min(1500, min(hard, wanted) - 100)):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            slow.append(sock)
        until(lambda: get(f"{base}/healthz")[0] == 200 or None)  # answered among them
        status = Path(f"/proc/{process.pid}/status").read_text()
        threads = int(status.split("Threads:")[1].split()[0])
        sockets = len(os.listdir(f"/proc/{process.pid}/fd"))
        assert threads <= 4, status  # the main one, the HTTP loop's, perhaps a run's helper
        assert sockets <= answering.MAX_READING + 64
        for sock in slow[-10:]:  # the newest were kept until their deadline, then dropped
            sock.settimeout(answering.REQUEST_SECONDS + 10)
            sock.sendall(b"x")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
    finally:
        for sock in slow:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nowhere"], "matrix: --listen: expected HOST:PORT such as 127.0.0.1:9469, "
         "got 'nowhere'"),
        (["--interval", "0s"], "matrix: --interval: expected a duration like 30s, 5m or 1h "
         "(more than 0, at most a week), got '0s'"),
    ],
)  # fmt: skip
def test_bad_serve_options_are_usage_errors(cli, tmp_path, args, message) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC.format(marker=tmp_path / "bad"))

    done = cli("serve", "spec.yaml", *args)

    assert (done.returncode, done.stderr.strip()) == (2, message)


def test_a_real_prometheus_scrapes_serve_and_reads_the_values_back(served, tmp_path) -> None:
    base, _, _ = served
    with prometheus(tmp_path, {"matrix": base.removeprefix("http://")}) as server:
        score = until(lambda: query(server, "matrix_readiness_score"), 60)
        status = until(lambda: query(server, 'matrix_check_status{check="marker",status="pass"}'))
        verdict = until(lambda: query(server, "matrix_verdict == 1"))
        up = until(lambda: query(server, 'up{job="matrix"}'))

    assert score[0]["metric"]["spec"] == "served" and score[0]["value"][1] == "100"
    assert status[0]["metric"]["target"] == "local" and status[0]["value"][1] == "1"
    assert verdict[0]["metric"]["verdict"] == "READY"
    assert up[0]["value"][1] == "1"


def test_run_writes_metrics_prometheus_parses_as_the_json_report_counts(cli, tmp_path) -> None:
    marker = tmp_path / "bad"
    marker.touch()
    spec = SPEC.format(marker=marker).replace("name: served", 'name: "our \\"ml\\" spec\\\\1"')
    (tmp_path / "spec.yaml").write_text(spec)

    done = cli("run", "spec.yaml", "--prometheus", "out.prom", "--json", "out.json")

    assert done.returncode == 1
    report = json.loads((tmp_path / "out.json").read_text())
    families = {
        family.name: family.samples
        for family in text_string_to_metric_families((tmp_path / "out.prom").read_text())
    }
    spec_name = 'our "ml" spec\\1'
    assert {s.labels["spec"] for samples in families.values() for s in samples} == {spec_name}
    counts = {s.labels["status"]: s.value for s in families["matrix_tasks"]}
    assert counts == {status: float(n) for status, n in report["counts"].items()}
    statuses = {
        (s.labels["check"], s.labels["status"]): s.value for s in families["matrix_check_status"]
    }
    assert statuses[("marker", "fail")] == 1 and statuses[("marker", "pass")] == 0
    assert statuses[("tmp", "pass")] == 1
    verdicts = {s.labels["verdict"]: s.value for s in families["matrix_verdict"]}
    assert verdicts == {"READY": 0, "CAUTION": 0, "BLOCKED": 1, "INCOMPLETE": 0}
    assert families["matrix_readiness_score"][0].value == report["score"]


def test_a_run_on_a_slurm_node_labels_its_results_and_metrics_with_the_node(cli, tmp_path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC.format(marker=tmp_path / "bad"))

    done = cli(
        "run", "spec.yaml", "--prometheus", "out.prom", "--json", "out.json",
        env={"SLURMD_NODENAME": "gpu-07"},  # as slurmd sets it for a prolog
    )  # fmt: skip

    assert done.returncode == 0, done.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["node"] == "gpu-07"
    assert {r["host"] for r in report["results"]} == {"gpu-07"}
    samples = [
        sample
        for family in text_string_to_metric_families((tmp_path / "out.prom").read_text())
        for sample in family.samples
    ]
    assert samples and {s.labels.get("node") for s in samples} == {"gpu-07"}


AXES = """\
version: 1
name: "axes\\r\\u2028"
phases:
  - id: p
    checks:
      - id: c
        matrix: {"a-b": ["x\\ry"], a_b: ["2"], "ünï": ["\\u0000z"], "a.b": ["\\t"]}
        probe: {kind: command, argv: ["true"]}
"""


def test_axes_and_values_prometheus_would_reject_are_written_so_promtool_reads_them(
    cli, tmp_path
) -> None:
    """Two axes never share a label (`a-b` beside `a_b`); no label value carries a raw `\\r`."""
    (tmp_path / "spec.yaml").write_text(AXES)

    done = cli("run", "spec.yaml", "--prometheus", "out.prom")

    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run(
        [binary("promtool"), "check", "metrics"],
        stdin=(tmp_path / "out.prom").open("rb"),
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with (tmp_path / "out.prom").open() as stream:  # universal newlines: a raw \r ends a line
        families = {family.name: family.samples for family in text_fd_to_metric_families(stream)}
    [labels] = [sample.labels for sample in families["matrix_check_duration_seconds"]]
    assert {name: value for name, value in labels.items() if "cell" in name} == {
        "U__cell__a_2d_b": "x\u240dy",
        "cell_a_b": "2",
        "U__cell___fc_n_ef_": "\u2400z",
        "U__cell__a_2e_b": "\u2409",
    }
    assert labels["spec"] == "axes\u240d\ufffd"


def test_an_ipv6_listen_address_is_printed_as_a_url_and_answers(cli, tmp_path) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine ({exc.strerror}): nothing to listen on")
    (tmp_path / "spec.yaml").write_text(SPEC.format(marker=tmp_path / "bad"))
    process = cli.popen("serve", "spec.yaml", "--listen", "[::1]:0", "--interval", "1s")
    try:
        assert process.stdout is not None
        metrics = process.stdout.readline().split()[-1]
        assert re.fullmatch(r"http://\[::1\]:\d+/metrics", metrics), metrics
        until(lambda: get(metrics)[0] == 200 or None)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
