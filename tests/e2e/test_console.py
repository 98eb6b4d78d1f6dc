"""The console as a person sees it: plain stable lines in pipes, live colour on a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

SPEC = """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: ok
        probe: {kind: command, argv: ["true"]}
      - id: broken
        probe: {kind: command, argv: ["false"]}
        fix: Repair it
"""
COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*9[0-7]m")


def run_on_terminal(cwd, env: dict[str, str], expect_rc: int = 1) -> str:
    """Run `matrix run` with a pseudo-terminal as stdout and return everything it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "matrix", "run", "spec.yaml"],
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done writing
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == expect_rc
    return b"".join(chunks).decode(errors="replace")


def test_piped_output_is_plain_stable_text(cli, write_spec):
    write_spec(SPEC)
    first = cli("run", "spec.yaml", env={"NO_COLOR": ""})
    second = cli("run", "spec.yaml", env={"NO_COLOR": ""})
    assert "\x1b" not in first.stdout
    assert "✅ ok" in first.stdout and "❌ broken" in first.stdout
    body = [line for line in first.stdout.splitlines() if "passed ·" not in line]
    assert body == [line for line in second.stdout.splitlines() if "passed ·" not in line]


def test_terminal_gets_live_progress_in_colour(cli, write_spec, tmp_path):
    write_spec(SPEC)
    env = {k: v for k, v in cli.env().items() if k != "NO_COLOR"}
    out = run_on_terminal(tmp_path, {**env, "TERM": "xterm-256color"})
    assert "running" in out or "waiting" in out  # the live status line
    assert COLOUR.search(out)
    assert "DEPLOYMENT BLOCKED: 1 critical issue" in out


def test_terminal_honours_no_color(cli, write_spec, tmp_path):
    write_spec(SPEC)
    out = run_on_terminal(tmp_path, {**cli.env(), "NO_COLOR": "1", "TERM": "xterm-256color"})
    assert "DEPLOYMENT BLOCKED: 1 critical issue" in out
    assert not COLOUR.search(out)


def test_a_reader_that_stops_early_costs_no_traceback_and_no_report(tmp_path):
    """`matrix run ... | head -1`: the pipe closes after one line; the run and its other
    reports go on, and nothing is printed about it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n"
        + "".join(
            f"      - id: c{i}\n        probe: {{kind: command, argv: [echo, {i}]}}\n"
            for i in range(40)
        )
    )
    out = tmp_path / "out.json"
    command = f"{sys.executable} -m matrix run {spec} --json {out} | head -1"
    done = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo), "NO_COLOR": "1"},
        timeout=60,
    )
    assert done.stderr == ""
    assert out.exists() and '"verdict": "READY"' in out.read_text()


WHAT_MATTERS = """
version: 1
name: t
phases:
  - id: setup
    title: Setup
    weight: 3000
    checks:
      - {id: a, probe: {kind: command, argv: ["true"]}}
      - {id: b, probe: {kind: command, argv: ["true"]}}
      - {id: c, probe: {kind: command, argv: ["true"]}}
      - id: lr
        title: Learning rate converges
        failure: Learning rate diverges
        probe: {kind: command, argv: ["false"]}
        fix: Lower the learning rate
  - id: hygiene
    title: Hygiene
    weight: 1
    checks:
      - id: early-warning
        severity: warning
        probe: {kind: command, argv: ["false"]}
      - {id: clean, probe: {kind: command, argv: ["true"]}}
  - id: later
    title: Later
    checks:
      - {id: after, needs: [lr], probe: {kind: command, argv: ["true"]}}
"""


def test_the_summary_says_what_matters_first(cli, write_spec):
    """A phase holding the blocking failure is ❌ however high its score; criticals lead the
    fix list even after an earlier warning; a failed row leads with its `failure`; a half
    point rounds up (0.5 of 1 shows as 1/1)."""
    write_spec(WHAT_MATTERS)
    out = cli("run", "spec.yaml", "--markdown", "report.md", env={"NO_COLOR": ""}).stdout
    assert "❌ Learning rate diverges" in out and "Learning rate converges" not in out
    fixes = out[out.index("DEPLOYMENT BLOCKED") :]
    assert fixes.index("1. Learning rate diverges") < fixes.index("2. early-warning")
    lines = {line.split()[1]: line for line in fixes.splitlines() if "passed  " in line}
    assert lines["Setup"].lstrip().startswith("❌")
    assert "(2250/3000)" in lines["Setup"] and lines["Setup"].endswith(" - 1 critical issue")
    assert lines["Hygiene"].lstrip().startswith("⚠️") and "(1/1)" in lines["Hygiene"]
    assert lines["Hygiene"].endswith(" - 1 warning")
    assert lines["Later"].lstrip().startswith("⏭") and lines["Later"].endswith("1 blocked task")
    markdown = (cli.cwd / "report.md").read_text()
    assert "| ❌ Setup | 3/4 | 2250/3000 - 1 critical issue |" in markdown
    assert "| ⚠️ Hygiene | 1/2 | 1/1 - 1 warning |" in markdown
    assert markdown.index("**Learning rate diverges**") < markdown.index("**early-warning**")


SLOW_THEN_FAST = """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: slow
        probe: {kind: command, argv: [sleep, "2.5"]}
      - id: fast
        probe: {kind: command, argv: ["true"]}
"""


def test_a_terminal_sees_each_result_as_it_finishes(cli, write_spec, tmp_path):
    """A person watching sees the fast check at once, not after the slow one listed above
    it, and a status line names what is still running and for how long."""
    write_spec(SLOW_THEN_FAST)
    env = {**cli.env(), "TERM": "xterm-256color", "COLUMNS": "120"}
    out = run_on_terminal(tmp_path, env, expect_rc=0)
    assert out.index("✅ fast") < out.index("✅ slow")
    assert re.search(r"running slow", out), out
    assert re.search(r"0:00:0[12]", out), out  # the elapsed time ticks


def test_a_pipe_keeps_plan_order(cli, write_spec):
    """A CI log is the same run after run: results come in spec order whatever finished
    first."""
    write_spec(SLOW_THEN_FAST)
    out = cli("run", "spec.yaml", env={"NO_COLOR": ""}).stdout
    assert out.index("✅ slow") < out.index("✅ fast")
    assert "\x1b" not in out
