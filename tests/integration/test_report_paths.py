"""Where a report goes, nothing there is destroyed: a symlink keeps pointing at the report, a
FIFO and a device are written in place (never replaced by a regular file), `-` is stdout for
every format, and a report that cannot be written is exit 3 with no partial file left."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

SPEC = """
version: 1
name: t
phases:
  - id: p
    checks:
      - {id: ok, probe: {kind: command, argv: ["true"]}}
"""


@pytest.mark.parametrize("flag", ["--json", "--junit", "--markdown", "--otel"])
def test_a_symlink_is_followed_not_replaced(flag, cli, write_spec, tmp_path: Path) -> None:
    write_spec(SPEC)
    (tmp_path / "reports").mkdir()
    link = tmp_path / "report.out"
    link.symlink_to(tmp_path / "reports" / "real.out")
    done = cli("run", "spec.yaml", flag, "report.out", "--quiet")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and (tmp_path / "reports" / "real.out").stat().st_size > 0
    assert [p.name for p in tmp_path.rglob("*.partial")] == []


@pytest.mark.parametrize("flag", ["--json", "--junit", "--markdown", "--otel"])
def test_a_fifo_is_written_in_place(flag, cli, write_spec, tmp_path: Path) -> None:
    write_spec(SPEC)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = cli("run", "spec.yaml", flag, "pipe", "--quiet", timeout=30)
    reader.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and received and received[0].strip()


@pytest.mark.parametrize("flag", ["--json", "--junit", "--markdown", "--otel"])
def test_dash_is_stdout_and_the_console_moves_to_stderr(flag, cli, write_spec) -> None:
    write_spec(SPEC)
    done = cli("run", "spec.yaml", flag, "-")
    assert done.returncode == 0, done.stderr
    assert "READY" in done.stderr and "✅ ok" in done.stderr
    if flag in ("--json", "--otel"):
        json.loads(done.stdout)  # nothing but the report on stdout
    else:
        assert done.stdout.lstrip().startswith("<?xml" if flag == "--junit" else "## ")
    assert not (cli.cwd / "-").exists()


def test_a_device_is_written_in_place_and_a_failed_write_is_exit_3(
    cli, write_spec, tmp_path: Path
) -> None:
    """/dev/full takes the write in place and refuses it (ENOSPC): it stays a device, the
    other report is written, and the exit code says a report is missing."""
    write_spec(SPEC)
    done = cli("run", "spec.yaml", "--json", "/dev/full", "--junit", "junit.xml", "--quiet")
    assert done.returncode == 3
    assert "JsonReporter could not write its report" in done.stderr
    assert stat.S_ISCHR(Path("/dev/full").stat().st_mode)
    assert (tmp_path / "junit.xml").read_text().startswith("<?xml")


def test_an_unwritable_destination_is_exit_3_and_leaves_no_partial(
    cli, write_spec, tmp_path: Path
) -> None:
    write_spec(SPEC)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "report.json").mkdir()  # a directory where the file should go
    done = cli("run", "spec.yaml", "--json", "locked/report.json", "--quiet")
    assert done.returncode == 3 and "is a directory" in done.stderr
    assert [p.name for p in tmp_path.rglob("*.partial")] == []
