"""`torch.*`: is this host ready to train? Observed by real torch work on the target.

Each kind runs a script from probes/remote/torch_*.py (with the shared probes/remote/_torch.py)
in the target's python, so a check on a GPU host measures that host's torch and devices. torch
is never imported here: `validate` and `list` stay fast on a machine without it. The model is a
small built-in transformer or the user's `entrypoint` (contract in docs/torch-probes.md).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from matrix.probe import ProbeContext, ProbeError, ScriptProbe, probe

Dtype = Literal["fp32", "bf16", "fp16"]
Optimizer = Literal["adamw", "adam", "sgd", "sgd_momentum"]
BUILTIN_SIZES = ("d_model", "layers", "heads", "seq_len", "vocab", "dropout")
_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
MODEL_FACT = {
    "model": "which model ran: entrypoint pkg.module:build, or the built-in transformer and "
    "its size"
}
BOUND_SHARE = 0.8  # of the check's timeout, for the script's own bound: the rest starts python
_ENTRYPOINT = re.compile(r"[\w.]+:\w+")


def _entrypoint(entrypoint: str | None) -> str | None:
    if entrypoint is not None and not _ENTRYPOINT.fullmatch(entrypoint):
        raise ValueError(f'entrypoint must look like "package.module:build", not {entrypoint!r}')
    return entrypoint


class _Torch(ScriptProbe):
    libraries = ("_torch",)
    # seconds to import, so once per target and run, each probe a fork; torch._dynamo is what
    # an optimizer's first step and torch.export import on first use (about a second each time)
    preload = ("torch", "torch._dynamo")
    exclusive = True  # timings and memory peaks are only true with the device to itself

    device: str = "auto"
    """auto (first CUDA device when there is one, else cpu), cpu, cuda or cuda:N; asking for
    cuda on a host without CUDA is an error."""

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
        return device


class _Workload(_Torch):
    seed: int = 0
    """Seeds python, numpy and torch (all devices) so runs repeat."""
    max_seconds: float | None = Field(None, gt=0)
    """The script's own time bound: past it the probe stops, saying how far it got (the
    batch-size search answers with the best bound found). Default: 80% of the check's
    timeout, leaving the rest for starting python and importing torch."""
    entrypoint: str | None = None
    """Your model instead of the built-in one: "package.module:build" importable on the
    target; build(batch_size, device) returns (model, make_batch) (docs/torch-probes.md)."""
    pythonpath: str | None = None
    """Directory put first on sys.path on the target before importing `entrypoint`."""
    dtype: Dtype = "fp32"
    """fp32, or bf16/fp16 under torch.autocast (fp16 with GradScaler when training)."""
    d_model: int = Field(64, ge=1)
    """Built-in model: width."""
    layers: int = Field(2, ge=1)
    """Built-in model: transformer blocks."""
    heads: int = Field(4, ge=1)
    """Built-in model: attention heads; must divide d_model."""
    seq_len: int = Field(32, ge=2)
    """Built-in model: tokens per sample."""
    vocab: int = Field(256, ge=2)
    """Built-in model: vocabulary size."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Built-in model: dropout probability (makes training depend on the RNG)."""

    _entrypoint = field_validator("entrypoint")(_entrypoint)

    @model_validator(mode="after")
    def _one_model(self) -> _Workload:
        given = [name for name in BUILTIN_SIZES if name in self.model_fields_set]
        if self.entrypoint and given:
            raise ValueError(
                f"{', '.join(given)} size the built-in model; with an entrypoint your build() "
                "makes the model, so drop them (in a shared spec, render them to none when "
                'there is an entrypoint: "{{ none if vars.entrypoint else vars.d_model }}")'
            )
        if self.d_model % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide d_model ({self.d_model})")
        return self

    def script_params(self, ctx: ProbeContext) -> dict[str, Any]:
        params = super().script_params(ctx)
        if self.max_seconds is None:
            params["max_seconds"] = BOUND_SHARE * (ctx.timeout or 60.0)
        return params


class _Optimized(_Workload):
    batch_size: int = Field(8, ge=1)
    """Samples per batch."""
    optimizer: Optimizer = "adamw"
    """adamw, adam, sgd or sgd_momentum (momentum 0.9)."""


class _Training(_Optimized):
    lr: float = Field(3e-3, gt=0)
    """Learning rate."""
    steps: int = Field(10, ge=2)
    """Optimizer steps per run."""


class _Learning(_Training):
    batch: Literal["fixed", "fresh"] = "fixed"
    """fixed: one batch, drawn first, trained on at every step — the overfit-one-batch
    convention: any model that can learn drives its loss down on it, whatever the noise
    between batches. fresh: a new batch each step (the loss then moves with the data)."""


@probe(
    "torch.env",
    facts={
        "torch": 'torch version, e.g. "2.5.1+cu121" (match with {version: ">=2.5"})',
        "cuda": "torch sees a CUDA device (false on CPU-only hosts and CPU builds)",
        "cuda_version": "CUDA version torch was built with; null for CPU builds",
        "cudnn": 'cuDNN version, e.g. "9.1.0"; null without CUDA',
        "nccl": 'NCCL version, e.g. "2.21.5"; null without CUDA',
        "device": "the device checked: cpu or cuda:N",
        "device_count": "CUDA devices visible",
        "gpus": "per device: index, name, capability, total_gb, free_gb",
        "gpu_name": "name of the checked device; null on CPU",
        "capability": 'compute capability of the checked device, e.g. "8.0"; null on CPU',
        "gpu_memory_gb": "total memory of the checked device in GB; null on CPU",
        "gpu_free_gb": "free memory of the checked device in GB; null on CPU",
        "bf16": "a bf16 autocast matmul and its backward really ran on the device, finite",
        "fp16": "the same for fp16",
        "bf16_claimed": "torch.cuda.is_bf16_supported() (which can claim bf16 that fails); "
        "null on CPU",
        "dtype_errors": "why bf16 or fp16 failed, by dtype",
    },
)
class TorchEnv(_Torch):
    """torch, CUDA, cuDNN and NCCL versions, the GPUs, and a real bf16/fp16 check."""

    script = "torch_env"


@probe(
    "torch.train",
    default_expect={"finite": True, "loss_decreased": True},
    facts=MODEL_FACT
    | {
        "losses": "loss per step (null where it was NaN/Inf); training stops at the first",
        "finite": "no NaN/Inf in any loss or gradient",
        "first_nonfinite": '"loss", or the first parameter whose gradient was NaN/Inf; null',
        "nonfinite_step": "the step where it happened (1-based); null",
        "loss_decreased": "mean loss of the second half of the steps is below the first half's "
        "(on one fixed batch by default: `batch`)",
        "step_seconds": "median seconds per optimizer step",
        "samples_per_s": "batch_size / step_seconds",
        "peak_memory_gb": "CUDA: max_memory_allocated; CPU: peak RSS growth (Linux), else null",
        "skipped_steps": "fp16: steps GradScaler skipped for overflowing gradients",
        "device": "cpu or cuda:N",
        "dtype": "fp32, bf16 or fp16",
        "params": "parameter count of the model",
        "problem": "what went wrong in words; null when training was healthy",
    },
)
class TorchTrain(_Learning):
    """A few real optimizer steps: finite, decreasing loss, speed and peak memory. The
    steps train on one batch (`batch: fixed`), as the overfit-one-batch smoke test does, so
    a model that learns passes however much its batches differ."""

    script = "torch_train"


@probe(
    "torch.lr",
    default_expect={"diverged": False},
    facts=MODEL_FACT
    | {
        "lr": "the learning rate tried",
        "losses": "loss per step at `lr` (null where NaN/Inf)",
        "loss_ratio": "last loss / first loss; null when the loss went NaN/Inf",
        "diverged": "the loss went NaN/Inf or loss_ratio exceeded diverge_factor",
        "range": "with `range`: [{lr, loss_ratio, diverged}] for each learning rate tried",
        "best_lr": "with `range`: the learning rate with the lowest loss_ratio that did not "
        "diverge; null when all diverged",
        "problem": 'e.g. "Loss diverged at lr=1 (ratio 37.2)"; null when it did not',
    },
)
class TorchLr(_Learning):
    """Does training at this learning rate converge? Optionally a small LR range test."""

    script = "torch_train"
    diverge_factor: float = Field(4.0, gt=1)
    """Diverged when the last loss exceeds the first loss times this."""
    range: tuple[float, float] | None = None
    """[lowest, highest]: also train at `points` log-spaced rates between them from the same
    start and report best_lr."""
    points: int = Field(5, ge=2)
    """How many learning rates the range test tries."""

    @field_validator("range")
    @classmethod
    def _range(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is not None and not 0 < bounds[0] < bounds[1]:
            raise ValueError(f"range must be [lowest, highest] with 0 < lowest < highest: {bounds}")
        return bounds


@probe(
    "torch.checkpoint",
    default_expect={"resumed_exactly": True, "left_behind": False, "resized_ok": {"ne": False}},
    facts=MODEL_FACT
    | {
        "resumed_exactly": "resuming from the checkpoint reproduced the uninterrupted run "
        "(bitwise when tolerance is 0)",
        "max_abs_diff": "largest difference between the resumed and uninterrupted weights",
        "checkpoint_mb": "size of the checkpoint file in MB",
        "write_mb_s": "torch.save + fsync throughput to `dir`",
        "read_mb_s": "torch.load throughput (page cache dropped first where the OS allows)",
        "left_behind": "the probe's files are still in `dir` after cleanup",
        "rng_restored": "RNG state was restored on resume (restore_rng)",
        "resized": "with resume_batch_size: {batch_size, loaded (the checkpoint loaded into "
        "objects built for it), max_abs_diff (their weights against the checkpoint's), finite "
        "(resume_steps more steps stayed finite)}; null without",
        "resized_ok": "the resume at resume_batch_size loaded the saved weights and trained "
        "on; null without it",
        "problem": "what differed, in words; null when the resume was exact",
    },
)
class TorchCheckpoint(_Training):
    """Save, reload into fresh objects, continue: does it match an uninterrupted run?"""

    script = "torch_checkpoint"
    dir: str
    """Directory on the target to write to (your training volume); a temporary directory is
    made inside and removed afterwards."""
    steps: int = Field(3, ge=1)
    """Steps before the checkpoint."""
    resume_steps: int = Field(3, ge=1)
    """Steps after it, in both the resumed and the uninterrupted run."""
    restore_rng: bool = True
    """false skips restoring RNG state: proves the check catches a resume that forgets it."""
    tolerance: float = Field(0.0, ge=0)
    """Largest weight difference that still counts as exact; 0 is bitwise. On CUDA the runs
    use deterministic algorithms, but some ops have none: allow e.g. 1e-6 there."""
    resume_batch_size: int | None = Field(None, ge=1)
    """Also resume at this batch size, as a job restarted on more or fewer GPUs does: the
    checkpoint must load into a model and optimizer built for it, with the saved weights,
    and train on finite (seed 000: "Test with different batch sizes")."""


@probe(
    "torch.batch_size",
    default_expect={"configured_fits": True},
    facts=MODEL_FACT
    | {
        "configured_batch_size": "the batch_size param, always tried first",
        "configured_fits": "a training step at batch_size fits, with the headroom kept",
        "memory_gb_at_configured": "peak memory of that step in GB; null when it ran out",
        "max_batch_size": "largest batch found to fit, a multiple of multiple_of (0: not even "
        "1); a lower bound when the search was cut short",
        "search_complete": "the search ended: max_batch_size is the largest that fits (up to "
        "the cap); false when max_seconds ran out first",
        "upper_bound": "smallest batch size found not to fit; null when none was tried",
        "memory_limit_gb": "the memory trials were held to, headroom not yet taken off: the "
        "effective limit on CPU (cgroup or RAM), the device on CUDA",
        "limit_source": "where memory_limit_gb came from: memory_limit_gb, a cgroup file, "
        "physical RAM or the CUDA device",
        "trials": "[{batch_size, fits, peak_gb, seconds}] in the order tried",
        "device": "cpu or cuda:N",
        "problem": 'e.g. "Batch size 64 needs 30.1GB, over 28.5GB (95% of the 30GB limit): '
        'the largest that fits is 48"; null when it fits',
    },
)
class TorchBatchSize(_Optimized):
    """Does the configured batch fit, and what is the largest that does? The configured size
    is tried first, then the search doubles and bisects, bounded by the check's timeout."""

    script = "torch_batch"
    libraries = ("_torch", "_memory")
    max_batch_size: int = Field(1024, ge=1)
    """Upper bound of the search."""
    multiple_of: int = Field(1, ge=1)
    """Granularity of the search: only multiples of it are tried (the configured size
    excepted), so runs agree on the answer; 8 or 64 suit GPUs."""
    headroom: float = Field(0.05, ge=0, lt=1)
    """Share of the memory limit a batch must leave free to count as fitting (Lightning keeps
    5%): fragmentation and a longer sequence later in training need it."""
    memory_limit_gb: float | None = Field(None, gt=0)
    """The memory a step may use. Default on CPU: the effective memory of the process (its
    cgroup limit in a container or Slurm job, else RAM), each trial in a forked child whose
    peak RSS growth is measured (Linux). Default on CUDA: the device's total memory, and a
    real OutOfMemoryError."""

    @model_validator(mode="after")
    def _within_cap(self) -> TorchBatchSize:
        if self.multiple_of > self.max_batch_size:
            raise ValueError(
                f"multiple_of ({self.multiple_of}) is over max_batch_size "
                f"({self.max_batch_size}): no batch size could be tried"
            )
        return self


@probe(
    "torch.memory",
    default_expect={"fits": True},
    facts={
        "need_gb": "weights + gradients + optimizer states + activations, in GB",
        "have_gb": "total memory of the GPU; on CPU the effective memory of the process: its "
        "cgroup limit (container, Slurm job) when that is smaller than RAM",
        "fits": "need_gb <= have_gb",
        "memory": "GPU or RAM: what have_gb is",
        "limit_source": "where have_gb came from: the CUDA device, a cgroup file (v1 "
        "memory.limit_in_bytes, v2 memory.max) or physical RAM",
        "params": "parameter count used",
        "params_source": "given, entrypoint (your model built on the meta device), "
        "safetensors (headers of the files in `path`) or config.json (estimated from its sizes)",
        "breakdown": "GB each: weights, gradients, optimizer (master weights included), "
        "activations (measured on the meta device for an entrypoint, estimated from sizes "
        "otherwise; null when unknown)",
        "activations_unknown": "why activations are not counted (e.g. your loss does not run "
        "on the meta device); null when they are",
        "device": "cpu or cuda:N",
        "cuda": "a CUDA device was used for have_gb",
        "problem": 'e.g. "Need 61GB GPU memory, have 24GB"; null when it fits',
    },
)
class TorchMemory(_Torch):
    """Estimated training memory against what the device has (the effective memory on CPU:
    a cgroup limit counts); loads no weights, and needs torch on the target only to see a GPU
    or to build your `entrypoint` on the meta device."""

    script = "torch_memory"
    libraries = ("_torch", "_memory")
    params: float | str | None = None
    """Parameter count: 7e9, 7000000000 or "7B" (K, M, B, T); default from `entrypoint` or
    `path`."""
    entrypoint: str | None = None
    """Your model, as for the other torch kinds: built on the meta device (no memory), its
    parameters counted and its activations measured from one loss computation."""
    pythonpath: str | None = None
    """Directory put first on sys.path on the target before importing `entrypoint`."""
    path: str | None = None
    """Model directory on the target: *.safetensors headers give the count, config.json the
    sizes for activations."""

    _entrypoint = field_validator("entrypoint")(_entrypoint)
    optimizer: Optimizer = "adamw"
    """adam/adamw keep 2 fp32 states per parameter, sgd_momentum 1, sgd none."""
    dtype: Dtype = "fp32"
    """Dtype of weights and gradients."""
    master_weights: bool = True
    """bf16/fp16: the optimizer keeps an fp32 copy of the weights (mixed precision)."""
    batch_size: int = Field(1, ge=1)
    """Samples per batch, for activations."""
    seq_len: int = Field(2048, ge=1)
    """Tokens per sample, for activations."""
    d_model: int | None = Field(None, ge=1)
    """Hidden size; default from config.json (hidden_size)."""
    layers: int | None = Field(None, ge=1)
    """Transformer blocks; default from config.json (num_hidden_layers)."""
    vocab: int | None = Field(None, ge=1)
    """Vocabulary size for the logits; default from config.json (vocab_size)."""

    @field_validator("params")
    @classmethod
    def _count(cls, count: float | str | None) -> float | None:
        if not isinstance(count, str):
            return count
        text = count.strip().lower()
        scale = _SUFFIXES.get(text[-1:], 1)
        try:
            return float(text[:-1] if scale != 1 else text) * scale
        except ValueError:
            raise ValueError(f'params must be a count like 7e9 or "7B", not {count!r}') from None

    @model_validator(mode="after")
    def _some_model(self) -> TorchMemory:
        if self.params is None and self.path is None and self.entrypoint is None:
            raise ValueError(
                "give `params` (e.g. 7B), `path` (a model directory) or `entrypoint` (your build())"
            )
        return self


@probe(
    "torch.inference",
    facts=MODEL_FACT
    | {
        "latency_ms": "{batch size: {p50, p95, p99, mean}} e.g. latency_ms.8.p99",
        "p50_ms": "median latency at the first of batch_sizes",
        "p95_ms": "95th percentile there",
        "p99_ms": "99th percentile there",
        "samples_per_s": "{batch size: samples per second at the median latency}",
        "export_ok": "torch.export.export traced the model and the exported program ran; "
        "null with export: false",
        "export_error": "which step failed and why; null when it worked",
        "device": "cpu or cuda:N",
    },
)
class TorchInference(_Workload):
    """Batch inference latency percentiles, and whether the model exports with torch.export."""

    script = "torch_inference"
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 8], min_length=1)
    """Batch sizes to time."""
    runs: int = Field(20, ge=1)
    """Timed forward passes per batch size."""
    warmup: int = Field(3, ge=0)
    """Untimed passes first."""
    export: bool = True
    """Also try torch.export.export."""


@probe(
    "torch.soak",
    default_expect={"leak": False, "slowdown": False},
    facts=MODEL_FACT
    | {
        "steps": "optimizer steps run (warm-up included)",
        "seconds": "seconds the soak took",
        "warmup": "first steps left out of every figure (allocator and caches settle)",
        "clock": "what step times are measured in: own (each step's wall time less the time "
        "it waited for a CPU that another process had, from the kernel's run delay: the "
        "machine's load does not stretch it, while sleeping, I/O and real work count) or wall "
        "(where the kernel does not report run delay)",
        "step_ms_first": "median step time of the first `window` steps after warm-up, ms "
        "(in `clock`)",
        "step_ms_last": "median step time of the last `window` steps, ms",
        "step_time_drift": "step_ms_last / step_ms_first",
        "wall_time_drift": "the same in plain wall-clock time, for reference (a loaded machine "
        "stretches it)",
        "planned_steps": "the planned run's length in steps, as given",
        "memory_limit_gb": "with planned_steps: what the watched memory may reach: on a CPU "
        "this process's RSS plus what it can still allocate (a cgroup limit counts), on a GPU "
        "the device's total",
        "limit_source": "where memory_limit_gb comes from",
        "projected_gb": "with planned_steps: the watched memory at the planned run's last "
        "step, at the soak's growth",
        "runs_out_at_step": "the step at which it would reach memory_limit_gb, when that is "
        "within planned_steps; else null",
        "runs_out_after_hours": "how long into the run that is, at the soak's step time",
        "oom_projected": "projected_gb is over memory_limit_gb: the planned run runs out of "
        "memory; null without planned_steps (and `incomplete` when the memory or its limit "
        "cannot be read: an `expect` on it is then an error)",
        "step_time_slope_pct": "trend of the step time, % of the median per 100 steps (Theil–Sen)",
        "memory": "what memory_slope_mb watches: CUDA allocated on a GPU, else RSS",
        "memory_slope_mb": "trend of that memory, MB per 100 steps (Theil–Sen: steady growth "
        "counts, a one-off jump does not); null where it cannot be read",
        "memory_growth_mb": "that memory at the last step minus at the first after warm-up",
        "rss_mb_start": "resident memory after warm-up, MB",
        "rss_mb_end": "resident memory at the end, MB",
        "rss_slope_mb": "trend of the resident memory, MB per 100 steps",
        "cuda_allocated_slope_mb": "trend of torch.cuda.memory_allocated, MB per 100 steps; "
        "null on CPU",
        "cuda_reserved_slope_mb": "trend of torch.cuda.memory_reserved (the caching "
        "allocator's pool), MB per 100 steps; null on CPU",
        "loader": "the batches came from the entrypoint's `loader`",
        "epochs": "passes started over the loader; null without one",
        "data_wait_ms_p50": "median wait for the next batch, ms",
        "data_wait_ms_max": "longest wait for a batch, ms",
        "data_wait_share": "share of the step time spent waiting for batches",
        "stalls": "batches that took longer than `stall_ms` to arrive",
        "stall_steps": "the steps that waited (the first 20)",
        "leak": "memory_slope_mb is over `max_growth_mb`; null where memory cannot be read "
        "(so the default expectation fails rather than pass unmeasured)",
        "slowdown": "step_time_drift is over `max_drift`",
        "device": "cpu or cuda:N",
        "problem": 'e.g. "RSS grows 98.2 MB per 100 steps (over 10): a leak"; null when well',
    },
)
class TorchSoak(_Training):
    """Train for many steps and watch for what a short run cannot show: memory that grows
    step after step (a leak), steps that get slower, and batches that arrive late. It runs
    alone, on one CPU thread on a CPU device, and times each step less its wait for a CPU,
    so another process's load does not read as a slowdown. With `planned_steps`, the growth
    is projected over the real run: `oom_projected` says whether it runs out of memory."""

    script = "torch_soak"
    libraries = ("_torch", "_memory")
    alone = True

    steps: int = Field(300, ge=2)
    """Optimizer steps, warm-up included."""
    seconds: float | None = Field(None, gt=0)
    """Run for this long instead of `steps`: a real soak (e.g. 600); the check's timeout must
    leave room for it."""
    warmup: int = Field(20, ge=0)
    """Steps left out first: the allocator, caches and autotuning settle in them."""
    window: int = Field(30, ge=2)
    """Steps in the first and last windows whose median step times are compared."""
    max_growth_mb: float = Field(10.0, gt=0)
    """Memory growth per 100 steps that is a leak. The default is above the noise of a
    healthy model and far below a leak that ends a long run: 10 MB per 100 steps is 10 GB
    over 100k steps."""
    max_drift: float = Field(1.5, gt=1)
    """Last window's median step time over the first's that is a slowdown."""
    stall_ms: float = Field(100.0, gt=0)
    """A batch that takes longer than this to arrive is a stall (counted, not a failure by
    default: expect `stalls: 0` to make it one)."""
    planned_steps: int | None = Field(None, ge=1)
    """The real run's length in steps: the memory growth is projected over it, and
    `oom_projected` says whether the run would run out of memory (expect it false on a
    critical row)."""

    def script_params(self, ctx: ProbeContext) -> dict[str, Any]:
        params = super().script_params(ctx)
        if self.seconds is not None and self.seconds >= params["max_seconds"]:
            raise ProbeError(
                f"seconds: {self.seconds:g} does not fit the check's time bound "
                f"({params['max_seconds']:g}s of its {ctx.timeout or 60:g}s timeout): raise "
                f"the check's timeout to {self.seconds / BOUND_SHARE + 30:.0f}s"
            )
        return params

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        slope, drift = facts["memory_slope_mb"], facts["step_time_drift"]
        facts["leak"] = None if slope is None else slope > self.max_growth_mb
        facts["slowdown"] = drift is not None and drift > self.max_drift
        problems = []
        if slope is None:  # not a pass: an unmeasured leak is no evidence of none
            problems.append(
                f"{facts['memory']} cannot be read on this target (no /proc/self/status): a "
                "leak was not looked for"
            )
        if facts["leak"]:
            problems.append(
                f"{facts['memory']} grows {slope:g} MB per 100 steps (over {self.max_growth_mb:g}"
                f"), {facts['memory_growth_mb']:g} MB over the soak: a leak — tensors kept "
                "across steps (a loss appended with its graph, a growing cache)"
            )
        if facts["oom_projected"]:
            problems.append(_runs_out(facts))
        if self.planned_steps and facts["oom_projected"] is None:
            facts["incomplete"] = {
                "oom_projected": f"{facts['memory']} or the memory limit cannot be read on "
                "this target: the planned run was not projected"
            }
        if facts["slowdown"]:
            problems.append(
                f"steps slowed from {facts['step_ms_first']:g} ms to {facts['step_ms_last']:g}"
                f" ms of {facts['clock']} time ({drift:g}×, over {self.max_drift:g}×)"
            )
        facts["problem"] = "; ".join(problems) or None
        return facts


def _runs_out(facts: dict[str, Any]) -> str:
    """'the planned 100000 steps would need 51.2 GB, over the 15.5 GB it may use (...):
    it runs out of memory at step ~29000, ~1.3 h in'."""
    said = (
        f"the planned {facts['planned_steps']} steps would need {facts['projected_gb']:g} GB "
        f"of {facts['memory']}, over the {facts['memory_limit_gb']:g} GB it may use "
        f"({facts['limit_source']})"
    )
    if facts["runs_out_at_step"] is not None:
        said += f": it runs out of memory at step ~{facts['runs_out_at_step']}"
        said += f", ~{facts['runs_out_after_hours']:g} h in"
    return said


ExportFormat = Literal["export", "onnx", "torchscript", "aoti"]
FORMAT_FACTS = (
    "{format: {ok, error (which step failed and why), seconds, size_mb (the saved artifact), "
    "max_abs_diff (against the eager model, both batch sizes), runtime (what ran it)}}"
)


@probe(
    "torch.export",
    default_expect={"ok": True},
    facts=MODEL_FACT
    | {
        "formats": FORMAT_FACTS,
        "ok": "every format exported, loaded back, ran at both batch sizes and answered as the "
        "eager model does",
        "failed": "the formats that did not",
        "batch_sizes": "the batch sizes each artifact was run at: exported at the first",
        "device": "cpu or cuda:N",
        "problem": 'e.g. "onnx: torch.onnx.export failed: …"; null when every format worked',
    },
)
class TorchExport(_Workload):
    """The model through each format it will be deployed in: exported, saved, loaded back
    and run at two batch sizes, its answers compared with the eager model's. A format that
    needs packages the target lacks (ONNX: onnx, onnxscript, onnxruntime) fails saying which."""

    script = "torch_export"
    formats: list[ExportFormat] = Field(default_factory=lambda: ["export", "onnx"], min_length=1)
    """export (torch.export, a .pt2 archive), onnx (torch.onnx's exporter, onnx.checker, then
    onnxruntime), torchscript (torch.jit.trace), aoti (AOTInductor: compiled ahead of time,
    needs a C++ compiler on the target; slow)."""
    batch_size: int = Field(2, ge=1)
    """Batch size the model is exported at."""
    check_batch_size: int | None = Field(5, ge=1)
    """A second batch size each artifact must also run at (its batch dimension is exported
    as dynamic); null checks only `batch_size`."""
    tolerance: float = Field(1e-4, ge=0)
    """Largest difference from the eager model's answer that still counts as the same."""
