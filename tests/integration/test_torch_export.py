"""`torch.export` with real torch on the CPU: the model through torch.export, ONNX (run by
onnxruntime), TorchScript and AOTInductor, each saved, loaded back and run at two batch sizes;
and the ways a model that looks exportable is not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_probes import check, run_checks

pytest.importorskip("torch")

# Models with the faults that break deployment, built the way users write them.
MODELS = '''
import torch
from torch import nn


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export refuses it, tracing bakes in one branch."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        if x.mean() > 0:
            return self.linear(x)
        return -self.linear(x)


def branchy(batch_size, device):
    sign = 1.0 if batch_size == 2 else -1.0  # the second batch takes the other branch
    x = torch.full((batch_size, 4), sign, device=device)
    return {"model": Branchy(), "batch": lambda: x, "loss": lambda m, b: m(b).sum()}


class Fixed(nn.Module):
    """A special case on the batch size: each exporter keeps only the case it saw."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 2)

    def forward(self, x):
        if x.shape[0] == 2:
            return self.linear(x)
        return self.linear(x) * 2.0


def fixed(batch_size, device):
    x = torch.randn(batch_size, 8, device=device)
    return {"model": Fixed(), "batch": lambda: x, "loss": lambda m, b: m(b).sum()}


class Eigh(nn.Module):
    """An op ONNX has no function for: the exporter's real complaint is two levels down."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        m = self.linear(x)
        return torch.linalg.eigh(m.transpose(-1, -2) @ m).eigenvalues.sum(-1)  # EIGH


def eigh(batch_size, device):
    x = torch.randn(batch_size, 4, 4, device=device)
    return {"model": Eigh(), "batch": lambda: x, "loss": lambda m, b: m(b).sum()}
'''


@pytest.fixture
def models(tmp_path: Path) -> str:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "exportmodels.py").write_text(MODELS)
    return str(tmp_path / "models")


def export(id: str, **params) -> dict:
    return {**check(id, "torch.export", device="cpu", **params), "timeout": "4m"}


@pytest.mark.timeout(300)
def test_every_format_round_trips_the_builtin_model_and_an_entrypoint(tmp_path: Path) -> None:
    every = ["export", "onnx", "torchscript", "aoti"]
    examples = str(Path(__file__).resolve().parents[2] / "examples")
    results = run_checks(
        tmp_path,
        [
            export("builtin", formats=every[:3]),
            # AOTInductor compiles C++: on the small model, so it costs seconds, not half a minute
            export("regressor", formats=every, entrypoint="torch_model.regressor:build",
                   pythonpath=examples),
        ],
    )  # fmt: skip

    for name, formats in (("builtin", every[:3]), ("regressor", every)):
        result = results[name]
        assert result.status.value == "pass", result.reason
        facts = result.facts
        assert facts["ok"] and facts["failed"] == [] and facts["batch_sizes"] == [2, 5]
        assert list(facts["formats"]) == formats
        for done in facts["formats"].values():
            assert done["ok"] and done["error"] is None and done["max_abs_diff"] <= 1e-4
            assert done["size_mb"] > 0 and done["seconds"] > 0
    onnx = results["builtin"].facts["formats"]["onnx"]
    assert onnx["runtime"].startswith("onnxruntime ")
    assert onnx["size_mb"] > 0.5  # the weights in model.onnx.data count too
    assert not list(Path("/tmp").glob("matrix-export-*"))  # the artifacts are removed


def test_what_breaks_deployment_is_named_by_format_and_step(tmp_path: Path, models: str) -> None:
    three = ["export", "onnx", "torchscript"]
    results = run_checks(
        tmp_path,
        [
            export("branchy", formats=three, entrypoint="exportmodels:branchy", pythonpath=models),
            export("fixed", formats=three, entrypoint="exportmodels:fixed", pythonpath=models),
        ],
    )

    branchy = results["branchy"].facts
    assert results["branchy"].status.value == "fail"
    assert branchy["failed"] == three
    assert branchy["formats"]["export"]["error"].startswith("torch.export.export failed: ")
    assert branchy["formats"]["onnx"]["error"].startswith("torch.onnx.export failed: ")
    assert "\x1b[" not in branchy["problem"]  # the exporter's colours stay out of reports
    # tracing took the first batch's branch and answers the second batch with it
    assert branchy["formats"]["torchscript"]["error"].startswith(
        "it answers differently from the eager model: max abs diff "
    )

    assert results["fixed"].status.value == "fail", results["fixed"].reason
    fixed = results["fixed"].facts
    assert fixed["failed"] == three
    # torch.export guards the batch size it saw; ONNX and a trace silently keep its branch
    assert fixed["formats"]["export"]["error"].startswith(
        "running it at batch 5 (exported at batch 2: is the batch size fixed?) failed: "
    )
    for name in ("onnx", "torchscript"):
        assert fixed["formats"][name]["error"].startswith("it answers differently"), name


def test_an_export_error_keeps_its_root_cause_and_the_users_line(
    tmp_path: Path, models: str
) -> None:
    results = run_checks(
        tmp_path,
        [export("eigh", formats=["onnx"], entrypoint="exportmodels:eigh", pythonpath=models)],
    )

    error = results["eigh"].facts["formats"]["onnx"]["error"]
    line = next(n for n, text in enumerate(MODELS.splitlines(), 1) if "# EIGH" in text)
    assert error.startswith("torch.onnx.export failed: ConversionError: ")
    assert (
        " — DispatchError: No ONNX function found for <OpOverload(op='aten._linalg_eigh'" in error
    )
    assert error.endswith(f"(at exportmodels.py:{line})")


def test_a_target_without_onnxruntime_is_told_what_to_install(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no onnxruntime here')\n")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shadow.parent} exec {sys.executable} "$@"\n')
    python.chmod(0o755)

    results = run_checks(
        tmp_path,
        [{**export("bare", formats=["onnx"], check_batch_size=None), "on": "bare"}],
        targets={"bare": {"via": "local", "python": str(python)}},
    )

    bare = results["bare"]
    assert bare.status.value == "fail"
    assert bare.facts["batch_sizes"] == [2]
    assert bare.facts["problem"] == (
        "onnx: onnxruntime is not installed on the target: pip install onnx onnxscript onnxruntime"
    )
