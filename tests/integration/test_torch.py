"""torch.* probes through the real engine on the local target: real torch steps on the CPU with
tiny models (d_model 32, 2 layers, seq_len 16), so the file runs in seconds. Nothing is mocked;
the CUDA paths are the only ones not run here."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from test_probes import check, run_checks, status

from matrix.results import Result
from matrix.spec.problems import SpecInvalid

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)

REPO = Path(__file__).resolve().parents[2]
TINY = {"d_model": 32, "layers": 2, "heads": 4, "seq_len": 16, "vocab": 64, "device": "cpu"}
EXAMPLE = {"entrypoint": "torch_model.regressor:build", "pythonpath": str(REPO / "examples")}
EXAMPLE_MODEL = "entrypoint torch_model.regressor:build"
EXAMPLE_PARAMS = 16 * 64 + 64 + 64 + 1  # examples/torch_model/regressor.py


# torch probes are exclusive per target (one at a time); dealt over two local targets, two run
# at once and keep both cores of a small CI machine busy
LOCALS = {"cpu-a": {"via": "local"}, "cpu-b": {"via": "local"}}


@pytest.fixture(autouse=True)
def one_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two probes at once on a couple of cores: with one thread each, OpenMP threads do not
    spin-wait against each other (the probes inherit this environment)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def run_torch(tmp_path: Path, checks: list[dict]) -> dict[str, Result]:
    dealt = [{**row, "on": name} for row, name in zip(checks, itertools.cycle(LOCALS))]
    return run_checks(tmp_path, dealt, LOCALS)


def write_modules(root: Path, modules: dict[str, str]) -> str:
    """User entrypoint modules as files under root; returns root for `pythonpath`."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    return str(root)


def test_training_learns_and_a_high_learning_rate_is_caught(tmp_path: Path) -> None:
    results = run_torch(
        tmp_path,
        [
            check("learns", "torch.train", **TINY, lr=0.01, dtype="bf16"),
            check("nan", "torch.train", **TINY, optimizer="sgd", lr=1e9, steps=5),
            check("lr-ok", "torch.lr", **TINY, lr=0.01, range=[0.001, 10], points=3),
            check("lr-high", "torch.lr", **TINY, lr=1.0),
        ],
    )

    assert status(results) == {
        "learns": "pass",
        "nan": "fail",
        "lr-ok": "pass",
        "lr-high": "fail",
    }
    learns = results["learns"].facts
    assert len(learns["losses"]) == 10 and learns["finite"] and learns["loss_decreased"]
    assert learns["first_nonfinite"] is None and learns["problem"] is None
    assert learns["step_seconds"] > 0 and learns["samples_per_s"] > 0
    assert learns["params"] > 10_000 and (learns["device"], learns["dtype"]) == ("cpu", "bf16")
    assert learns["peak_memory_gb"] >= 0  # RSS growth, read from /proc

    nan = results["nan"].facts  # the first step throws the weights out; the next loss is NaN
    assert (nan["finite"], nan["first_nonfinite"], nan["nonfinite_step"]) == (False, "loss", 2)
    assert nan["losses"][0] > 0 and nan["losses"][1] is None
    assert nan["problem"] == "the loss went NaN/Inf at step 2"
    assert results["nan"].reason.startswith("the loss went NaN/Inf at step 2 (finite is false")

    ok = results["lr-ok"].facts
    assert ok["diverged"] is False and ok["loss_ratio"] < 1 and ok["problem"] is None
    assert [r["lr"] for r in ok["range"]] == [0.001, 0.1, 10.0]
    assert ok["range"][-1]["diverged"] and ok["best_lr"] in (0.001, 0.1)

    high = results["lr-high"].facts
    assert high["diverged"] and high["loss_ratio"] > 4 and high["lr"] == 1.0
    assert high["problem"].startswith(f"Loss diverged at lr=1 (ratio {high['loss_ratio']:.1f}")
    assert results["lr-high"].reason.startswith("Loss diverged at lr=1 (")


def test_checkpoint_resumes_exactly_and_a_forgotten_rng_is_detected(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    results = run_torch(
        tmp_path,
        [
            check("exact", "torch.checkpoint", **TINY, dir=str(volume), dtype="fp16"),
            check("no-rng", "torch.checkpoint", **TINY, dir=str(volume), restore_rng=False),
            check("unwritable", "torch.checkpoint", **TINY, dir=str(not_a_dir / "ckpt")),
            check("missing", "torch.checkpoint", **TINY, dir=str(tmp_path / "unmounted")),
        ],
    )

    assert status(results) == {
        "exact": "pass",
        "no-rng": "fail",
        "unwritable": "error",
        "missing": "error",
    }
    exact = results["exact"].facts
    assert exact["resumed_exactly"] and exact["max_abs_diff"] == 0.0
    assert exact["checkpoint_mb"] > 0 and exact["write_mb_s"] > 0 and exact["read_mb_s"] > 0
    assert exact["left_behind"] is False and exact["rng_restored"] and exact["problem"] is None
    broken = results["no-rng"].facts
    assert broken["resumed_exactly"] is False and broken["max_abs_diff"] > 0
    assert "RNG state was not restored" in broken["problem"]
    assert results["unwritable"].reason == (
        f"cannot write checkpoint to {not_a_dir / 'ckpt'}: not a directory"
    )
    assert results["missing"].reason == (
        f"cannot write checkpoint to {tmp_path / 'unmounted'}: no such file or directory"
    )
    assert list(volume.iterdir()) == []


# A model whose state_dict holds a buffer sized by the batch (a cached mask): its checkpoint
# cannot resume at another batch size.
PER_BATCH = """
import torch
from torch import nn


class Masked(nn.Module):
    def __init__(self, batch_size):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.register_buffer("mask", torch.ones(batch_size, 1))

    def forward(self, x):
        return self.linear(x) * self.mask


def build(batch_size, device):
    x = torch.randn(batch_size, 4, device=device)
    loss = lambda model, batch: model(batch).pow(2).mean()
    return {"model": Masked(batch_size), "batch": lambda: x, "loss": loss}
"""


def test_a_checkpoint_resumes_at_another_batch_size_unless_its_state_depends_on_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "masked.py").write_text(PER_BATCH)
    mine = {"entrypoint": "masked:build", "pythonpath": str(tmp_path / "code")}
    resize = {"dir": str(tmp_path), "resume_batch_size": 3}
    results = run_torch(
        tmp_path,
        [
            check("builtin", "torch.checkpoint", **TINY, **resize),
            check("example", "torch.checkpoint", **EXAMPLE, **resize, device="cpu"),
            check("per-batch", "torch.checkpoint", **mine, **resize, device="cpu"),
        ],
    )

    assert status(results) == {"builtin": "pass", "example": "pass", "per-batch": "fail"}, {
        name: result.reason for name, result in results.items()
    }
    for name in ("builtin", "example"):
        facts = results[name].facts
        assert facts["resized"] == {"batch_size": 3, "loaded": True, "max_abs_diff": 0.0,
                                    "finite": True}  # fmt: skip
        assert facts["resized_ok"] is True and facts["resumed_exactly"] is True
    broken = results["per-batch"].facts
    assert broken["resumed_exactly"] is True  # at the same batch size all is well
    assert broken["resized_ok"] is False and broken["resized"]["loaded"] is False
    assert broken["problem"].startswith(
        "the checkpoint does not load into the model built for batch 3: "
    )
    assert "size mismatch for mask" in broken["problem"]


def test_batch_size_search_finds_the_limit_under_a_memory_cap(tmp_path: Path) -> None:
    wide = {**TINY, "seq_len": 64, "vocab": 1024}  # ~1MB of activations per sample
    results = run_torch(
        tmp_path,
        [
            check(
                "capped",
                "torch.batch_size",
                **wide,
                batch_size=128,
                max_batch_size=128,
                memory_limit_gb=0.1,
            ),
            check("bounded", "torch.batch_size", **TINY, batch_size=8, max_batch_size=12),
        ],
    )

    assert status(results) == {"capped": "fail", "bounded": "pass"}
    capped = results["capped"].facts
    largest = capped["max_batch_size"]
    assert 4 <= largest < 128 and capped["configured_fits"] is False
    assert capped["memory_gb_at_configured"] is None and capped["memory_limit_gb"] == 0.1
    assert capped["limit_source"] == "memory_limit_gb" and capped["search_complete"]
    assert capped["trials"][0]["batch_size"] == 128  # the configured size comes first
    tried = {t["batch_size"]: t for t in capped["trials"]}
    usable = 0.1 * 0.95  # the default headroom keeps 5% free
    assert tried[largest]["fits"] and not tried[128]["fits"]
    assert tried[128]["peak_gb"] > usable >= tried[largest]["peak_gb"]
    assert not any(t["fits"] for size, t in tried.items() if size > largest)
    assert capped["upper_bound"] == min(size for size, t in tried.items() if not t["fits"])
    assert re.fullmatch(
        rf"Batch size 128 needs [\d.]+GB, over 0\.1GB \(what the headroom leaves of 0\.1GB from "
        rf"memory_limit_gb\): the largest that fits is {largest}",
        capped["problem"].replace(f"over {round(usable, 2):g}GB", "over 0.1GB"),
    )
    bounded = results["bounded"].facts
    assert bounded["max_batch_size"] == 12 and bounded["configured_fits"]
    assert [t["batch_size"] for t in bounded["trials"]] == [8, 12]
    assert bounded["memory_gb_at_configured"] >= 0 and bounded["problem"] is None
    assert bounded["model"] == "built-in transformer (d_model 32, 2 layers, seq_len 16)"


def test_batch_size_answers_at_its_granularity_the_same_every_run(tmp_path: Path) -> None:
    """multiple_of: only multiples of it are tried (the configured size aside), and repeated
    runs agree on the answer."""
    wide = {**TINY, "seq_len": 64, "vocab": 1024}
    # a limit between the steps' peaks (48: ~0.09-0.10 GB, 56: ~0.10, 64: ~0.12), not on one:
    # a peak within a megabyte of the limit may land on either side from run to run
    same = {"batch_size": 6, "max_batch_size": 256, "memory_limit_gb": 0.11, "multiple_of": 8}
    results = run_torch(
        tmp_path, [check(f"run-{i}", "torch.batch_size", **wide, **same) for i in range(3)]
    )

    answers = {r.facts["max_batch_size"] for r in results.values()}
    searches = {  # what each run tried, to tell a time-bound stop from a memory reading
        name: (r.facts["search_complete"], [(t["batch_size"], t["peak_gb"]) for t in trials])
        for name, r in results.items()
        for trials in [r.facts["trials"]]
    }
    assert len(answers) == 1 and answers.pop() % 8 == 0, searches
    for result in results.values():
        sizes = [t["batch_size"] for t in result.facts["trials"]]
        assert sizes[0] == 6 and all(size % 8 == 0 for size in sizes[1:])


def test_batch_size_search_stops_in_time_with_the_best_bound(tmp_path: Path) -> None:
    """A cap far beyond what fits in a few seconds: the search stops before max_seconds and
    answers with what it found, instead of running into the check's timeout."""
    results = run_torch(
        tmp_path,
        [
            check(
                "bounded-time",
                "torch.batch_size",
                **TINY,
                batch_size=4,
                max_batch_size=10**7,
                max_seconds=4,
            )
        ],
    )

    facts = results["bounded-time"].facts
    assert status(results) == {"bounded-time": "pass"}, results["bounded-time"].reason
    assert facts["search_complete"] is False and facts["upper_bound"] is None
    assert facts["max_batch_size"] >= 8 and facts["configured_fits"]
    assert sum(t["seconds"] for t in facts["trials"]) < 4


def test_user_entrypoints_and_clear_errors_from_broken_ones(tmp_path: Path) -> None:
    path = write_modules(
        tmp_path,
        {
            "hf_style": """
                import types
                import torch

                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.embed = torch.nn.Embedding(32, 16)
                        self.head = torch.nn.Linear(16, 32)

                    def forward(self, input_ids, labels):
                        logits = self.head(self.embed(input_ids))
                        flat = logits.flatten(0, 1)
                        loss = torch.nn.functional.cross_entropy(flat, labels.flatten())
                        return types.SimpleNamespace(loss=loss, logits=logits)

                def build(batch_size, device):
                    def batch():
                        ids = torch.randint(0, 32, (batch_size, 8), device=device)
                        return {"input_ids": ids, "labels": (ids + 1) % 32}
                    print("building")  # must not break the probe's JSON reply
                    return Model(), batch
                """,
            "raising": """
                def build(batch_size, device):
                    raise FileNotFoundError("/data/vocab.json")
                """,
            "wrong": "def build(batch_size, device):\n    return 42\n",
            "zero_norm": """
                import torch

                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.scale = torch.nn.Parameter(torch.zeros(4))

                    def forward(self, x):  # the gradient of sqrt at 0 is 0/0: NaN
                        return (self.scale * x).pow(2).sum().sqrt()

                def build(batch_size, device):
                    return Model(), lambda: torch.randn(batch_size, 4)
                """,
            "logits": """
                import torch

                def build(batch_size, device):
                    return torch.nn.Linear(4, 3), lambda: torch.randn(batch_size, 4)
                """,
        },
    )
    user = {"pythonpath": path, "device": "cpu"}
    results = run_torch(
        tmp_path,
        [
            check("example", "torch.train", **EXAMPLE, device="cpu", lr=0.01, batch_size=32),
            check("hf", "torch.train", **user, entrypoint="hf_style:build", lr=0.05),
            check("no-module", "torch.train", **user, entrypoint="no_such_mx.model:build"),
            check("raising", "torch.train", **user, entrypoint="raising:build"),
            check("wrong", "torch.train", **user, entrypoint="wrong:build"),
            check("logits", "torch.train", **user, entrypoint="logits:build"),
            check("nan-grad", "torch.train", **user, entrypoint="zero_norm:build"),
        ],
    )

    assert status(results) == {
        "example": "pass",
        "hf": "pass",
        "no-module": "error",
        "raising": "error",
        "wrong": "error",
        "logits": "error",
        "nan-grad": "fail",
    }
    assert results["example"].facts["params"] == EXAMPLE_PARAMS
    assert results["hf"].facts["loss_decreased"]
    nan = results["nan-grad"].facts  # the loss is a finite 0; the gradient is not
    assert (nan["finite"], nan["first_nonfinite"], nan["nonfinite_step"]) == (False, "scale", 1)
    assert nan["losses"] == [0.0]
    assert nan["problem"] == "the gradient of scale went NaN/Inf at step 1"
    errors = {check_id: r.reason for check_id, r in results.items() if r.status.value == "error"}
    assert errors["no-module"] == (
        "cannot import entrypoint no_such_mx.model:build: "
        "ModuleNotFoundError: No module named 'no_such_mx'"
    )
    assert errors["raising"] == (
        "entrypoint raising:build raised FileNotFoundError: /data/vocab.json (at raising.py:2)"
    )
    assert errors["wrong"].startswith(
        "entrypoint wrong:build returned int: build(batch_size, device) must return "
        "(model, make_batch) or {'model': nn.Module"
    )
    assert errors["logits"].startswith(
        "the loss of logits:build: the model returned (8, 3), not a scalar loss"
    )


def test_an_x_y_model_with_its_own_loss_runs_through_every_torch_kind(tmp_path: Path) -> None:
    """examples/torch_model/regressor.py: batches are (x, y), the loss is its own, the model
    takes x. Every kind runs that model (its `model` fact says so), inference and export call
    it as model(x), and torch.memory counts it on the meta device."""
    cpu = {**EXAMPLE, "device": "cpu"}
    results = run_torch(
        tmp_path,
        [
            check("train", "torch.train", **cpu, lr=0.01, batch_size=32),
            check("lr", "torch.lr", **cpu, lr=0.01, range=[0.001, 0.1], points=2),
            check("checkpoint", "torch.checkpoint", **cpu, dir=str(tmp_path)),
            check("batch", "torch.batch_size", **cpu, batch_size=16, max_batch_size=64),
            check("memory", "torch.memory", **cpu, batch_size=32),
            check("inference", "torch.inference", **cpu, batch_sizes=[1, 8], runs=5),
        ],
    )

    assert set(status(results).values()) == {"pass"}, {k: r.reason for k, r in results.items()}
    for kind in ("train", "lr", "checkpoint", "batch", "inference"):
        assert results[kind].facts["model"] == EXAMPLE_MODEL, kind
    assert results["train"].facts["params"] == EXAMPLE_PARAMS
    inference = results["inference"].facts
    assert (inference["export_ok"], inference["export_error"]) == (True, None)
    memory = results["memory"].facts
    assert (memory["params"], memory["params_source"]) == (EXAMPLE_PARAMS, "entrypoint")
    assert memory["breakdown"]["weights_gb"] == round(EXAMPLE_PARAMS * 4 / 2**30, 2)
    assert memory["activations_unknown"] is None  # measured from one loss on the meta device


def test_errors_in_the_users_model_name_the_entrypoint_and_the_users_line(tmp_path: Path) -> None:
    path = write_modules(
        tmp_path,
        {
            "two_args": """
                import torch

                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.linear = torch.nn.Linear(4, 1)

                    def forward(self, x, mask):  # not what an (x, y) batch gives it
                        return self.linear(x * mask)

                def build(batch_size, device):
                    def batch():
                        return torch.randn(batch_size, 4), torch.randn(batch_size)

                    def loss(model, batch):
                        x, y = batch
                        return (model(x, torch.ones_like(x)).squeeze(-1) - y).pow(2).mean()

                    return {"model": Model(), "batch": batch, "loss": loss}
                """,
            "given_inputs": """
                import torch
                import two_args

                def build(batch_size, device):
                    built = two_args.build(batch_size, device)
                    built["inputs"] = lambda batch: (batch[0], torch.ones_like(batch[0]))
                    return built
                """,
            "broken_forward": """
                import torch

                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.linear = torch.nn.Linear(4, 1)

                    def forward(self, x):
                        return self.linear(x.view(-1, 5))  # a shape bug in the user's code

                def build(batch_size, device):
                    return Model(), lambda: torch.randn(batch_size, 4)
                """,
        },
    )
    user = {"pythonpath": path, "device": "cpu", "export": False}
    results = run_torch(
        tmp_path,
        [
            check("two-args", "torch.inference", **user, entrypoint="two_args:build"),
            check("with-inputs", "torch.inference", **user, entrypoint="given_inputs:build"),
            check("broken", "torch.inference", **user, entrypoint="broken_forward:build"),
        ],
    )

    assert status(results) == {"two-args": "error", "with-inputs": "pass", "broken": "error"}
    assert results["two-args"].reason == (
        "entrypoint two_args:build: the model called as model(tensor[1, 4]) raised TypeError: "
        "Model.forward() missing 1 required positional argument: 'mask'; give `inputs` in "
        "build()'s result to say what the model takes from a batch (docs/torch-probes.md)"
    )
    assert re.fullmatch(
        r"entrypoint broken_forward:build: the model called as model\(tensor\[1, 4\]\) raised "
        r"RuntimeError: .+ \(at broken_forward\.py:9\); give `inputs` .+",
        results["broken"].reason,
    )


def test_env_on_a_cpu_host(tmp_path: Path) -> None:
    needs_gpu = {"cuda": {"eq": True}, "gpu_memory_gb": {"ge": 24}, "torch": {"version": ">=2.5"}}
    results = run_torch(
        tmp_path,
        [check("env", "torch.env", needs_gpu), check("cuda", "torch.env", device="cuda")],
    )

    env = results["env"].facts
    if env["cuda"]:
        pytest.skip("this host has CUDA; the test is about hosts without it")
    assert status(results) == {"env": "fail", "cuda": "error"}
    assert (env["cuda"], env["device"], env["device_count"], env["gpus"]) == (False, "cpu", 0, [])
    assert env["gpu_memory_gb"] is None and env["bf16_claimed"] is None
    # the checks really ran bf16 and fp16 autocast matmuls on this CPU
    assert (env["bf16"], env["fp16"], env["dtype_errors"]) == (True, True, {})
    assert results["env"].reason == (
        "cuda is false, expected == true; gpu_memory_gb is null, expected >= 24"
    )
    assert results["cuda"].reason.startswith(
        f"device cuda was asked for, but torch {env['torch']} ("
    )
    assert "sees no CUDA device" in results["cuda"].reason


def test_without_torch_the_error_says_how_to_fix_and_memory_still_works(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)  # no torch, no site-packages
    python = str(bare / "bin" / "python")
    targets = {"bare": {"via": "local", "python": python}}
    results = run_checks(
        tmp_path,
        [
            {**check("env", "torch.env"), "on": "bare"},
            {**check("memory", "torch.memory", params="1B"), "on": "bare"},
        ],
        targets,
    )

    assert status(results) == {"env": "error", "memory": "pass"}
    assert results["env"].reason == (
        f"torch is not installed for {python} on {socket.gethostname()}: pip install torch"
    )
    memory = results["memory"].facts
    assert (memory["cuda"], memory["memory"], memory["device"]) == (False, "RAM", "cpu")


def safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file with these fp32 tensors (zeros): an 8-byte header size, JSON, data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(offset))


def test_memory_estimate_from_a_count_and_from_a_model_directory(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    config = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100}
    (model / "config.json").write_text(json.dumps(config))
    estimated = tmp_path / "config-only"
    estimated.mkdir()
    (estimated / "config.json").write_text(json.dumps(config))
    safetensors(model / "model.safetensors", {"embed": [100, 64], "w": [64, 64], "b": [64]})
    cpu = {"device": "cpu"}
    results = run_checks(
        tmp_path,
        [
            check("1b", "torch.memory", **cpu, params=1e9),
            check("7b", "torch.memory", **cpu, params="7B", dtype="bf16", d_model=4096,
                  layers=32, vocab=32000, batch_size=8, seq_len=4096),
            check("dir", "torch.memory", **cpu, path=str(model), seq_len=16),
            check("config", "torch.memory", **cpu, path=str(estimated)),
            check("huge", "torch.memory", **cpu, params="1T"),
        ],
    )  # fmt: skip

    assert {k: v for k, v in status(results).items() if k != "7b"} == {  # 7b: this host's RAM
        "1b": "pass",
        "dir": "pass",
        "config": "pass",
        "huge": "fail",
    }
    one = results["1b"].facts
    breakdown = {"weights_gb": 3.73, "gradients_gb": 3.73, "optimizer_gb": 7.45}
    assert one["breakdown"] == {**breakdown, "activations_gb": None}  # 16 bytes a parameter
    assert (one["need_gb"], one["params"], one["params_source"]) == (14.9, 10**9, "given")
    assert (one["memory"], one["cuda"], one["device"]) == ("RAM", False, "cpu")
    seven = results["7b"].facts
    activations = 32 * 8 * 4096 * 4096 * 34 + 4 * 8 * 4096 * 32000
    assert seven["breakdown"]["activations_gb"] == round(activations / 2**30, 2)
    assert seven["breakdown"]["optimizer_gb"] == round(7e9 * 12 / 2**30, 2)  # adam + master
    directory = results["dir"].facts
    assert directory["params"] == 100 * 64 + 64 * 64 + 64
    assert directory["params_source"] == "safetensors"
    assert directory["breakdown"]["activations_gb"] == round(
        (2 * 16 * 64 * 34 * 2 + 4 * 16 * 100) / 2**30, 2
    )
    assert results["config"].facts["params"] == 12 * 2 * 64 * 64 + 100 * 64
    assert results["config"].facts["params_source"] == "config.json"
    huge = results["huge"].facts
    assert re.fullmatch(r"Need 14901GB RAM, have [\d.]+GB", huge["problem"])


def test_inference_latency_percentiles_and_export(tmp_path: Path) -> None:
    path = write_modules(
        tmp_path,
        {
            "branchy": """
                import torch

                class Branchy(torch.nn.Module):
                    def forward(self, x):
                        return x * 2 if x.sum() > 0 else x  # data-dependent: export cannot trace it

                def build(batch_size, device):
                    return Branchy(), lambda: torch.ones(batch_size, 4)
                """
        },
    )
    results = run_torch(
        tmp_path,
        [
            check("builtin", "torch.inference", **TINY, batch_sizes=[1, 4], runs=10),
            check(
                "branchy",
                "torch.inference",
                pythonpath=path,
                entrypoint="branchy:build",
                device="cpu",
            ),
        ],
    )

    assert status(results) == {"builtin": "pass", "branchy": "pass"}
    facts = results["builtin"].facts
    assert set(facts["latency_ms"]) == {"1", "4"} and set(facts["samples_per_s"]) == {"1", "4"}
    for latency in facts["latency_ms"].values():
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert (facts["p50_ms"], facts["p99_ms"]) == (
        facts["latency_ms"]["1"]["p50"],
        facts["latency_ms"]["1"]["p99"],
    )
    assert (facts["export_ok"], facts["export_error"]) == (True, None)
    branchy = results["branchy"].facts
    assert branchy["export_ok"] is False
    assert branchy["export_error"].startswith("torch.export.export failed: ")


def test_scripts_bound_their_own_time(tmp_path: Path) -> None:
    slow = check("slow", "torch.inference", **TINY, runs=10**7, export=False, max_seconds=0.5)
    results = run_torch(tmp_path, [slow])

    assert status(results) == {"slow": "error"}
    assert results["slow"].reason.startswith("stopped at max_seconds=0.5 (")
    reason = results["slow"].reason
    assert "of 10000000 timed runs at batch size 1 done): raise max_seconds" in reason


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"kind": "torch.train", "device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"kind": "torch.train", "entrypoint": "model.py"}, 'like "package.module:build"'),
        ({"kind": "torch.train", "d_model": 30}, "heads (4) must divide d_model (30)"),
        ({"kind": "torch.lr", "range": [1, 0.1]}, "0 < lowest < highest"),
        ({"kind": "torch.memory"}, "give `params` (e.g. 7B), `path` (a model directory) or"),
        ({"kind": "torch.memory", "params": "lots"}, "params must be a count like 7e9"),
        (
            {"kind": "torch.inference", "entrypoint": "m:build", "d_model": 32},
            "d_model size the built-in model",
        ),
    ],
)
def test_bad_params_are_spec_errors(tmp_path: Path, probe: dict, message: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        run_checks(tmp_path, [{"id": "bad", "probe": probe}])
    assert message in str(caught.value)


def test_loading_the_probes_imports_no_torch() -> None:
    code = (
        "import sys; from matrix.probe import registry; kinds = registry(); "
        "assert 'torch.train' in kinds and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_a_loss_that_does_not_fall_is_reported_in_the_words_of_the_test(tmp_path: Path) -> None:
    """The check compares the mean loss of the later half of the steps with the earlier half:
    the problem quotes those two means, not the first and last losses."""
    path = write_modules(
        tmp_path,
        {
            "frozen": """
                import torch

                def build(batch_size, device):
                    model = torch.nn.Linear(4, 1)
                    x = torch.ones(batch_size, 4)

                    def loss(model, batch):  # gradient zero: the loss never moves
                        return model(batch).sum() * 0 + 0.75

                    return {"model": model, "batch": lambda: x, "loss": loss}
                """
        },
    )
    spec = check(
        "frozen",
        "torch.train",
        entrypoint="frozen:build",
        pythonpath=path,
        device="cpu",
        steps=6,
        lr=0.003,
    )
    problem = run_torch(tmp_path, [spec])["frozen"].facts["problem"]
    assert problem == (
        "the loss did not decrease over 6 steps at lr=0.003 on one fixed batch: the mean of "
        "the last 3 steps (0.75) is not below that of the first 3 (0.75)"
    )
