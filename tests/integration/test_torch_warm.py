"""torch is imported once per target and run: the target's agent imports it and forks each
torch probe from itself. Counted for real: a sitecustomize on the run's PYTHONPATH logs each
process that imports torch for itself (a fork finds it imported and logs nothing)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)

WATCH = """
import os, sys

class _Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            with open(os.environ["TORCH_IMPORTS"], "a") as log:
                log.write(f"{os.getpid()}\\n")
        return None

sys.meta_path.insert(0, _Watch())
"""

SPEC = """
version: 1
name: warm
phases:
  - id: torch
    checks:
      - {id: env, probe: {kind: torch.env}}
      - {id: train, probe: {kind: torch.train, steps: 3, d_model: 32, layers: 1, seq_len: 8}}
      - {id: lr, probe: {kind: torch.lr, steps: 3, d_model: 32, layers: 1, seq_len: 8}}
      - {id: serve, probe: {kind: torch.inference, d_model: 32, layers: 1, seq_len: 8}}
      - {id: ddp, probe: {kind: torch.distributed, world_size: 2, elements: 1024}}
"""


def agent_probes() -> list[int]:
    """Processes still carrying a local agent's task mark in their environment."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(e.startswith(b"MATRIX_PROBE=") and b".agent." in e for e in environ.split(b"\0")):
            found.append(int(pid))
    return found


def test_a_run_imports_torch_once_for_all_its_torch_probes(cli, write_spec, tmp_path) -> None:
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "sitecustomize.py").write_text(WATCH)
    log = tmp_path / "imports.log"
    write_spec(SPEC)
    env = {
        "PYTHONPATH": f"{tmp_path / 'watch'}{os.pathsep}{cli.env()['PYTHONPATH']}",
        "TORCH_IMPORTS": str(log),
        "OMP_NUM_THREADS": "1",
    }
    done = cli("run", "spec.yaml", "--json", "out.json", env=env, timeout=100)
    results = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [(r["task_id"], r["status"]) for r in results] == [
        ("env", "pass"), ("train", "pass"), ("lr", "pass"), ("serve", "pass"), ("ddp", "pass"),
    ], done.stdout  # fmt: skip
    assert len(log.read_text().split()) == 1  # five torch probes, two ranks: one torch import
    assert agent_probes() == []


def test_a_torch_probe_past_its_timeout_is_killed_with_all_it_started(
    cli, write_spec, tmp_path
) -> None:
    write_spec(
        """
        version: 1
        name: slow
        phases:
          - id: torch
            checks:
              - id: long
                timeout: 4s
                probe: {kind: torch.train, steps: 100000000, d_model: 32, layers: 1, seq_len: 8}
              - {id: after, probe: {kind: torch.env}}
        """
    )
    started = time.monotonic()
    cli("run", "spec.yaml", "--json", "out.json", env={"OMP_NUM_THREADS": "1"}, timeout=100)
    results = {r["task_id"]: r for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    assert results["long"]["status"] in ("fail", "error"), results["long"]
    assert results["after"]["status"] == "pass"  # the agent serves on after a killed probe
    assert time.monotonic() - started < 60
    assert agent_probes() == []
