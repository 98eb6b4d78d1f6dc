"""Ctrl-C, SIGTERM or SIGHUP (a dropped terminal) at any moment of `matrix run` — while it
imports, loads, plans, probes or writes — ends in exit 130 with every requested report written,
no traceback and no probe process left. Matrix keeps the signals from its first line
(matrix.launch); a signal in the interpreter's own start-up before that, the site imports, is
outside any Python program's reach: the tests send theirs from the moment the process has a
handler for it, as /proc says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


def spec(checks: int) -> str:
    """Enough checks that loading and planning take a while, and probing much longer."""
    return "version: 1\nname: signals\nphases:\n  - id: p\n    checks:\n" + "".join(
        f"      - {{id: c{i}, probe: {{kind: command, argv: [sleep, '0.{i % 10}']}}}}\n"
        for i in range(checks)
    )


MOMENTS = [0.3, 0.6, 1.0, 1.6, 2.5]  # seconds after start: imports, planning, probing
# seconds after the process first has a handler: the CLI's imports, its first 100 ms
EARLY = [0.0, 0.002, 0.01, 0.03, 0.06, 0.1]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def handles(pid: int, sig: int) -> bool:
    """Whether the process has a handler of its own for `sig` (SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def left_in(directory: Path) -> list[str]:
    """Processes still running in `directory` (the probes run where matrix was started)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(directory):
                found.append((entry / "cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("moment", [*[("early", m) for m in EARLY], *MOMENTS])
@pytest.mark.parametrize("sig", SIGNALS, ids=["INT", "TERM", "HUP"])
def test_a_signal_at_any_moment_exits_130_with_every_report(cli, write_spec, tmp_path, sig, moment):
    write_spec(spec(300))
    reports = ["--json", "r.json", "--junit", "r.xml", "--markdown", "r.md"]
    proc = cli.popen("run", "spec.yaml", *reports, "--otel", "trace.json")
    if isinstance(moment, tuple):
        while not all(handles(proc.pid, each) for each in SIGNALS):  # all three at once
            assert proc.poll() is None
        time.sleep(moment[1])
    else:
        with pytest.raises(subprocess.TimeoutExpired):  # the run takes far longer than `moment`
            proc.wait(moment)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert left_in(tmp_path) == []
    assert "Traceback" not in err, err
    assert proc.returncode == 130, out + err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "INCOMPLETE"
    assert len(data["results"]) == 300
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert sum(int(s.get("tests")) for s in suites) == 300
    assert "INCOMPLETE: no verdict" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "trace.json").read_text())["resourceSpans"]


def test_a_signal_while_validating_exits_130_without_a_traceback(cli, write_spec):
    write_spec(spec(3000))  # about a second to validate
    proc = cli.popen("validate", "spec.yaml")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == 130, out + err
