"""specs/training-readiness.yaml on models written outside the project (tests/data/models/),
each drawing a fresh random batch per call as a data loader does: the ones that learn pass
the training rows, a leaking one reaches the soak and is blocked for running out of memory
in the planned run, and the soak's slowdown verdict holds with the machine loaded by
competing processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "training-readiness.yaml"
MODELS = REPO / "tests" / "data" / "models"
ROWS = ["training-step", "memory-stability", "planned-run-memory"]


def rows(cli, tmp_path: Path, model: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    out = tmp_path / f"{model}.json"
    checks = [arg for row in ROWS for arg in ("--check", row)]
    done = cli(
        "run", SPEC, *checks, "--var", f"entrypoint={model}:build", "--var", f"model_src={MODELS}",
        "--var", "device=cpu", "--json", out, timeout=240,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(out.read_text())
    return report, {r["task_id"]: r for r in report["results"]}


@pytest.mark.parametrize("model", ["mlp", "bn_dropout", "two_input"])
def test_a_model_that_learns_on_fresh_batches_is_ready(cli, tmp_path: Path, model: str) -> None:
    report, found = rows(cli, tmp_path, model)

    ran = {t: r for t, r in found.items() if t in ["torch", *ROWS]}
    bad = {t: r["diagnostic"] or r["reason"] for t, r in ran.items() if r["status"] != "pass"}
    assert len(ran) == 4 and bad == {} and report["verdict"] == "READY"
    step = found["training-step"]["facts"]
    assert step["loss_decreased"] is True and len(step["losses"]) == 10
    soak = found["memory-stability"]["facts"]
    assert soak["clock"] == "own" and soak["oom_projected"] is False
    assert soak["planned_steps"] == 100_000 and soak["memory_limit_gb"] > 0


def test_a_leaking_model_reaches_the_soak_and_is_blocked_for_the_planned_run(
    cli, tmp_path: Path
) -> None:
    report, found = rows(cli, tmp_path, "leaky")

    assert report["verdict"] == "BLOCKED"
    assert found["training-step"]["status"] == "pass"  # it learns: the leak is measured
    assert found["memory-stability"]["status"] == "fail"  # a warning: a leak
    planned = found["planned-run-memory"]
    assert planned["status"] == "fail" and planned["severity"] == "critical"
    assert planned["title"] == "A leak runs the training out of memory before it ends"
    facts = planned["facts"]
    assert facts["memory_slope_mb"] > 50 and facts["oom_projected"] is True
    assert 0 < facts["runs_out_at_step"] < 100_000
    assert f"it runs out of memory at step ~{facts['runs_out_at_step']}" in planned["diagnostic"]
    # one soak answered both rows
    assert found["memory-stability"]["facts"]["seconds"] == facts["seconds"]


def test_the_slowdown_verdict_holds_on_a_loaded_machine(
    cli, tmp_path: Path, loaded_machine: None
) -> None:
    _, steady = rows(cli, tmp_path, "bn_dropout")
    _, slowing = rows(cli, tmp_path, "slowing")

    soak = steady["memory-stability"]
    assert soak["status"] == "pass", soak["diagnostic"]
    assert soak["facts"]["step_time_drift"] < 1.5
    slow = slowing["memory-stability"]
    assert slow["status"] == "fail" and slow["facts"]["slowdown"] is True
    assert "of own time" in slow["diagnostic"]


def test_an_error_of_a_row_is_worded_as_an_error_not_as_its_failure_mode(
    cli, tmp_path: Path
) -> None:
    """A model the latency row cannot call is not "Inference too slow", and its fix is not
    "Serve on a GPU"."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "pair.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Pair(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.lin = nn.Linear(4, 1)\n\n"
        "    def forward(self, x, mask):\n        return self.lin(x * mask)\n\n\n"
        "def build(batch_size, device):\n"
        "    model = Pair().to(device)\n"
        "    return model, lambda: torch.randn(batch_size, 4, device=device)\n"
    )
    out = tmp_path / "out.json"
    done = cli(
        "run", SPEC, "--check", "latency", "--var", "entrypoint=pair:build",
        "--var", f"model_src={code}", "--var", "device=cpu", "--json", out, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr  # a warning row: CAUTION
    latency = {r["task_id"]: r for r in json.loads(out.read_text())["results"]}["latency"]
    assert latency["status"] == "error"
    assert latency["title"] == "p99 latency at batch 1 under 250 ms"
    assert (
        "raised TypeError: Pair.forward() missing 1 required positional argument"
        in (latency["diagnostic"])
    )
    assert latency["fix"].startswith("Fix what the error names")
