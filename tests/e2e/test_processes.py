"""Timeouts and Ctrl-C kill whole process trees, and reports are still written."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest


def wait_until_gone(live_processes, needle: str, within: float = 3.0) -> list[str]:
    """Live processes matching `needle` still there after `within` seconds (ideally none)."""
    deadline = time.monotonic() + within
    while (left := live_processes(needle)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_timeout_is_an_error_and_kills_the_whole_process_group(
    cli, write_spec, tmp_path, report, live_processes
):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: hangs
                timeout: 0.5s
                probe: {kind: command, shell: "sleep 117.3 & sleep 117.4"}
              - id: hangs-argv
                timeout: 300ms
                probe: {kind: command, argv: ["sleep", "117.5"]}
              - id: fine
                probe: {kind: command, argv: ["true"]}
        """
    )
    started = time.monotonic()
    done = cli("run", "spec.yaml", "--json", "out.json", timeout=30)
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    results = report(tmp_path / "out.json")["by_id"]
    assert results["hangs"]["status"] == "error"
    assert "timed out after 0.5s" in results["hangs"]["diagnostic"]
    assert results["hangs-argv"]["status"] == "error"
    assert "timed out after 0.3s" in results["hangs-argv"]["diagnostic"]
    assert results["fine"]["status"] == "pass"
    assert "💥" in done.stdout and "timed out" in done.stdout
    assert wait_until_gone(live_processes, "sleep 117.") == []


def test_timeout_then_retry_still_leaves_nothing_behind(
    cli, write_spec, tmp_path, report, live_processes
):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: hangs
                timeout: 0.2s
                retry: {attempts: 2, backoff: 0.01s}
                probe: {kind: command, shell: "sleep 118.1 & sleep 118.2 & wait"}
        """
    )
    cli("run", "spec.yaml", "--json", "out.json", timeout=30)
    result = report(tmp_path / "out.json")["by_id"]["hangs"]
    assert (result["status"], result["attempts"]) == ("error", 2)
    assert wait_until_gone(live_processes, "sleep 118.") == []


class Lines:
    """Read a process's stdout on a thread so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True
        return False

    def rest(self) -> str:
        self._thread.join(timeout=5)
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)


@pytest.mark.parametrize(
    ("sig", "needle"), [(signal.SIGINT, "sleep 31.7"), (signal.SIGTERM, "sleep 31.9")]
)
def test_interrupt_writes_partial_reports_and_kills_children(
    cli, write_spec, tmp_path, report, live_processes, sig, needle
):
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: quick
                probe: {{kind: command, argv: ["true"]}}
              - id: sleeper
                probe: {{kind: command, shell: "{needle}"}}
        """
    )
    reports = ["--json", "out.json", "--junit", "out.xml", "--otel", "out.otlp.json"]
    proc = cli.popen("run", "spec.yaml", *reports, "--markdown", "out.md")
    lines = Lines(proc)
    try:
        assert lines.wait_for("quick", timeout=20), lines.rest()
        deadline = time.monotonic() + 5
        while not live_processes(needle) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live_processes(needle), "the sleeping check never started"
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        assert time.monotonic() - sent < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = lines.rest()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert "INTERRUPTED: 1 of 2 tasks finished" in stdout
    data = report(tmp_path / "out.json")
    assert data["interrupted"] is True
    assert data["by_id"]["quick"]["status"] == "pass"
    assert data["by_id"]["sleeper"]["status"] == "skip"
    assert data["by_id"]["sleeper"]["reason"].startswith("interrupted")
    assert data["by_id"]["sleeper"]["skip"] == {"kind": "interrupted", "detail": ""}
    # nothing failed before the stop, and yet no format may call the cut-short run a pass
    assert data["verdict"] == "INCOMPLETE"
    assert "READY" not in stdout and "no verdict" in stdout
    assert "INCOMPLETE: no verdict" in (tmp_path / "out.md").read_text()
    junit = ET.parse(tmp_path / "out.xml").getroot()
    assert junit.get("errors") == "1"
    verdicts = {p.get("value") for p in junit.iter("property") if p.get("name") == "matrix.verdict"}
    assert verdicts == {"INCOMPLETE"}
    (cut,) = [c for c in junit.iter("testcase") if c.find("error") is not None]
    assert cut.find("error").get("type") == "incomplete"
    spans = json.loads((tmp_path / "out.otlp.json").read_text())["resourceSpans"][0]
    (root,) = [s for s in spans["scopeSpans"][0]["spans"] if "parentSpanId" not in s]
    assert root["status"]["code"] == 2  # ERROR
    assert root["status"]["message"].startswith("INCOMPLETE: 1 of 2 tasks finished")
    assert wait_until_gone(live_processes, needle) == []
    assert not list(tmp_path.glob(".*.partial"))
