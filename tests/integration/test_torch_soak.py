"""`torch.soak` with real torch on the CPU: a healthy model stays inside the default limits
(the probe's own noise must not trip them), and models that leak on purpose, slow down, or
starve on their loader are caught, each with its cause."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_probes import check, run_checks

pytest.importorskip("torch")

# Entrypoints built the way users write them, each with one fault.
MODELS = '''
import time
import torch
from torch import nn

kept = []


def _regression(batch_size, device):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    x = torch.randn(batch_size, 16, device=device)
    y = x.sum(dim=1, keepdim=True)

    def loss(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    return model, x, y, loss


def leaky(batch_size, device):
    """Keeps 1 MB per step, as a loop that appends what it should have dropped."""
    model, x, y, loss = _regression(batch_size, device)

    def keep(model, batch):
        kept.append(torch.ones(256 * 1024))
        return loss(model, batch)

    return {"model": model, "batch": lambda: (x, y), "loss": keep}


def slowing(batch_size, device):
    """Each step takes a little longer than the one before, as with a list scanned each step."""
    model, x, y, loss = _regression(batch_size, device)
    calls = []

    def slower(model, batch):
        calls.append(None)
        time.sleep(len(calls) * 0.0002)
        return loss(model, batch)

    return {"model": model, "batch": lambda: (x, y), "loss": slower}


class Slow:
    """A loader whose every 25th batch takes 150 ms to arrive (a cold read)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        for i in range(40):
            if i % 25 == 24:
                time.sleep(0.15)
            yield self.x, self.y


def starving(batch_size, device):
    model, x, y, loss = _regression(batch_size, device)
    return {"model": model, "batch": lambda: (x, y), "loss": loss, "loader": Slow(x, y)}
'''


@pytest.fixture
def models(tmp_path: Path) -> Path:
    (tmp_path / "models" / "soakmodels.py").parent.mkdir()
    (tmp_path / "models" / "soakmodels.py").write_text(MODELS)
    return tmp_path / "models"


def soak(id: str, **params) -> dict:
    row = check(id, "torch.soak", device="cpu", steps=160, warmup=10, window=30, **params)
    return {**row, "timeout": "3m"}


def test_a_healthy_model_soaks_clean_and_a_leak_and_a_slowdown_are_named(
    tmp_path: Path, models: Path
) -> None:
    mine = {"pythonpath": str(models)}
    results = run_checks(
        tmp_path,
        [
            soak("healthy"),
            soak("leaky", entrypoint="soakmodels:leaky", **mine),
            soak("slowing", entrypoint="soakmodels:slowing", **mine),
        ],
    )

    healthy = results["healthy"]
    assert healthy.status.value == "pass", healthy.reason
    facts = healthy.facts
    assert facts["steps"] == 160 and facts["memory"] == "RSS" and facts["problem"] is None
    assert abs(facts["memory_slope_mb"]) < 2  # far under the default 10 MB per 100 steps
    assert facts["step_time_drift"] < 1.5 and facts["loader"] is False
    assert facts["model"].startswith("built-in transformer")

    leaky = results["leaky"]
    assert leaky.status.value == "fail"
    assert 80 < leaky.facts["memory_slope_mb"] < 120  # 1 MB a step
    assert leaky.facts["leak"] is True and leaky.facts["slowdown"] is False
    assert leaky.facts["problem"].startswith(
        f"RSS grows {leaky.facts['memory_slope_mb']:g} MB per 100 steps (over 10)"
    )

    slowing = results["slowing"]
    assert slowing.status.value == "fail"
    assert slowing.facts["slowdown"] is True and slowing.facts["leak"] is False
    assert slowing.facts["step_time_slope_pct"] > 20
    assert "steps slowed from " in slowing.facts["problem"]


def test_a_loader_that_keeps_the_step_waiting_shows_stalls(tmp_path: Path, models: Path) -> None:
    results = run_checks(
        tmp_path,
        [
            soak(
                "loader",
                entrypoint="soakmodels:starving",
                pythonpath=str(models),
                expect={"stalls": 0},
            )
        ],
    )

    loader = results["loader"]
    assert loader.status.value == "fail", loader.reason
    facts = loader.facts
    assert facts["loader"] is True and facts["epochs"] == 4  # 160 steps of a 40-batch loader
    # the 25th batch of each pass of 40 (steps 25, 65, 105, 145), all after the warm-up
    assert (facts["stalls"], facts["stall_steps"]) == (4, [25, 65, 105, 145])
    assert facts["data_wait_ms_max"] >= 150 and facts["data_wait_ms_p50"] < 5


def test_a_soak_longer_than_the_checks_timeout_is_refused_with_the_timeout_to_set(
    tmp_path: Path,
) -> None:
    row = {**check("long", "torch.soak", device="cpu", seconds=600), "timeout": "60s"}

    results = run_checks(tmp_path, [row])

    assert results["long"].status.value == "error"
    assert results["long"].reason == (
        "seconds: 600 does not fit the check's time bound (48s of its 60s timeout): raise the "
        "check's timeout to 780s"
    )
