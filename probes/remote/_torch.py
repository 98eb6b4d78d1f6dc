# The module `_torch`, shared by the torch.* scripts (their library): the torch import,
# devices, seeds, the built-in model, user entrypoints, training steps, RNG state, peak memory,
# time bounds. torch is imported inside observe (need_torch), so a target without torch gets a
# clear error instead of a traceback, and torch.memory can run without it.
import contextlib
import functools
import importlib
import math
import os
import random
import socket
import sys
import time
import traceback

from _prelude import ObserveError

torch = None  # the torch module, once need_torch() imported it
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def host_python():
    return f"{sys.executable} on {socket.gethostname()}"


def need_torch():
    """Import torch on the target, or say exactly how to get it there."""
    global torch
    if torch is None:
        try:
            import torch as module
        except Exception as exc:
            where = host_python()
            if isinstance(exc, ModuleNotFoundError) and exc.name == "torch":
                raise ObserveError(
                    f"torch is not installed for {where}: pip install torch"
                ) from None
            # installed but broken: missing CUDA libraries, a mismatched build
            raise ObserveError(f"torch does not import for {where}: {describe(exc)}") from None
        torch = module
    return torch


def quiet(observe):
    """Decorate a script's observe: what torch or the user's code prints goes to stderr, so
    stdout carries only the reply."""

    @functools.wraps(observe)
    def run(params):
        with contextlib.redirect_stdout(sys.stderr):
            return observe(params)

    return run


def _root(exc):
    """The innermost exception an error was raised from (its __cause__, or the one it was
    raised while handling): torch.onnx wraps its real complaint two levels down."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _first_line(exc):
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def yours(filename):
    """A file of the user's code: not the standard library, torch or another installed
    package, and not one of these scripts."""
    theirs = [os.path.dirname(importlib.__file__)]
    if torch is not None:
        theirs.append(os.path.dirname(torch.__file__))
    if filename.startswith(("<", "probes/remote/")) or filename.startswith(tuple(theirs)):
        return False
    return not any(part in filename for part in ("/site-packages/", "/dist-packages/"))


def describe(exc):
    """'ValueError: bad shape (at model.py:12)': the message's first line, the root cause's
    when the error wraps another ('ConversionError: Failed to convert … — DispatchError: No
    ONNX function found for aten._linalg_eigh'), and the innermost frame of the user's own
    code in any of them."""
    root = _root(exc)
    text = _first_line(exc)
    if root is not exc:
        text += f" — {_first_line(root)}"
    chain, inner = [], exc
    while inner is not None and inner not in chain:
        chain.append(inner)
        inner = inner.__cause__ or (None if inner.__suppress_context__ else inner.__context__)
    frames = [
        frame
        for error in reversed(chain)  # the root's frames first: the deepest place wins
        for frame in reversed(traceback.extract_tb(error.__traceback__))
        if yours(frame.filename)
    ]
    if frames:
        text += f" (at {os.path.basename(frames[0].filename)}:{frames[0].lineno})"
    return text


def is_oom(exc):
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate" in text)


def resolve_device(name):
    """auto: the first CUDA device when torch sees one, else the CPU."""
    cuda = torch.cuda.is_available()
    if name == "auto":
        name = "cuda:0" if cuda else "cpu"
    if name.startswith("cuda"):
        if not cuda:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ObserveError(
                f"device {name} was asked for, but torch {torch.__version__} ({build}) for "
                f"{host_python()} sees no CUDA device: check nvidia-smi and install a CUDA "
                "build of torch, or use device: auto"
            )
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ObserveError(
                f"device {name} does not exist: {socket.gethostname()} has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
        torch.cuda.set_device(index)
        name = f"cuda:{index}"
    return torch.device(name)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def numpy_or_none():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def seed_all(seed):
    random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too
    numpy = numpy_or_none()
    if numpy is not None:
        numpy.random.seed(seed)


def rng_state(device):
    """Every RNG a training step may draw from, as types torch.load(weights_only=True) reads."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy = numpy_or_none()
    if numpy is not None:
        kind, keys, pos, has_gauss, gauss = numpy.random.get_state()
        state["numpy"] = [kind, keys.tolist(), pos, has_gauss, gauss]
    return state


def set_rng_state(state):
    """Restore rng_state(); torch.load may have mapped its tensors to the GPU: generator
    states go back to the CPU."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "numpy" in state:
        numpy = numpy_or_none()
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        keys = numpy.array(keys, dtype=numpy.uint32)
        numpy.random.set_state((kind, keys, pos, has_gauss, gauss))


def _tiny_lm(p):
    """A GPT-style token model: causal self-attention blocks with dropout, sized by params."""
    nn, F = torch.nn, torch.nn.functional
    d, heads, dropout = p["d_model"], p["heads"], p["dropout"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
            p_drop = dropout if self.training else 0.0
            att = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop, is_causal=True)
            x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, d)))
            return x + self.drop(self.mlp(self.ln2(x)))

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(p["vocab"], d), nn.Embedding(p["seq_len"], d)
            self.blocks = nn.Sequential(*(Block() for _ in range(p["layers"])))
            self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, p["vocab"], bias=False)

        def forward(self, tokens):
            where = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.blocks(self.tokens(tokens) + self.positions(where))
            return self.head(self.ln(x))

    return TinyLM()


class Workload:
    """A model, `batch()` giving one batch on the device, `loss(model, batch)`, and
    `inputs(batch)`: what the model is called with for inference and export. `name` says
    whose code it is in errors: the entrypoint, or the built-in model."""

    def __init__(self, model, batch, loss, name, inputs=None, loader=None):
        self.model, self.batch, self.loss, self.name = model, batch, loss, name
        self.inputs = inputs or (lambda batch: batch)
        self.loader = loader  # the user's iterable of batches (a DataLoader), or None

    def infer(self, batch):
        """The model called on the inputs of `batch`, as inference and export call it; an error
        says how it was called and from whose code."""
        args, kwargs = call_args(self.inputs(batch))
        try:
            return self.model(*args, **kwargs)
        except Exception as exc:
            if is_oom(exc):
                raise
            raise ObserveError(
                f"{self.name}: {called_as(args, kwargs)} raised {describe(exc)}; give `inputs` "
                "in build()'s result to say what the model takes from a batch "
                "(docs/torch-probes.md)"
            ) from None


def called_as(args, kwargs):
    """'the model called as model(tensor[8, 16], tensor[8])': what a batch turned into."""

    def one(value):
        return f"tensor{list(value.shape)}" if torch.is_tensor(value) else type(value).__name__

    shown = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return f"the model called as model({', '.join(shown)})"


def _builtin(p, batch_size, device):
    vocab, offsets = p["vocab"], torch.arange(p["seq_len"], device=device)

    def batch():  # fresh random starts each step; the next token is always this one + 1
        return (torch.randint(0, vocab, (batch_size, 1), device=device) + offsets) % vocab

    def loss(model, tokens):
        logits = model(tokens)[:, :-1].flatten(0, 1).float()
        return torch.nn.functional.cross_entropy(logits, tokens[:, 1:].flatten())

    return Workload(_tiny_lm(p).to(device), batch, loss, model_name(p))


def model_name(p):
    """Which model a check ran, for its facts and errors: `entrypoint pkg.module:build`, or the
    built-in transformer with its size."""
    if p.get("entrypoint"):
        return f"entrypoint {p['entrypoint']}"
    return (
        f"built-in transformer (d_model {p['d_model']}, {p['layers']} layers, "
        f"seq_len {p['seq_len']})"
    )


def supervised_inputs(batch):
    """A model with a loss of its own and an `(x, y)` batch takes `x`: the supervised
    convention (`x, y = batch`) of most training loops."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0]
    return batch


def call_args(batch):
    """A dict batch is keyword arguments, a tuple or list positional ones, else one argument."""
    if isinstance(batch, dict):
        return (), batch
    return (tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)), {}


def forward(model, batch):
    args, kwargs = call_args(batch)
    return model(*args, **kwargs)


def default_loss(model, batch):
    out = forward(model, batch)
    loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", out)
    if not (torch.is_tensor(loss) and loss.numel() == 1):
        shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
        raise ObserveError(
            f"the model returned {shape}, not a scalar loss: return the loss from forward "
            "(or an output with .loss), or give `loss` in build()'s result"
        )
    return loss


def _blame(fn, what):
    """Errors in the user's code name where they came from; out-of-memory stays as it is."""

    def call(*args):
        try:
            return fn(*args)
        except ObserveError as exc:
            raise ObserveError(f"{what}: {exc}") from None
        except Exception as exc:
            if is_oom(exc):
                raise
            raise ObserveError(f"{what} raised {describe(exc)}") from None

    return call


def _user(p, batch_size, device):
    spec, where = p["entrypoint"], p.get("pythonpath")
    name, _, attr = spec.partition(":")
    if where:
        if not os.path.isdir(where):
            raise ObserveError(f"entrypoint path {where} is not a directory on {host_python()}")
        if os.path.abspath(where) not in sys.path:
            sys.path.insert(0, os.path.abspath(where))
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise ObserveError(f"cannot import entrypoint {spec}: {describe(exc)}") from None
    build = getattr(module, attr, None)
    if not callable(build):
        raise ObserveError(f"entrypoint {spec}: {module.__file__} defines no function {attr}")
    built = _blame(build, f"entrypoint {spec}")(batch_size, device)
    if isinstance(built, tuple) and len(built) == 2:
        model, batch, loss, inputs, loader = built[0], built[1], None, None, None
    else:
        get = built.get if isinstance(built, dict) else functools.partial(getattr, built)
        model, batch = get("model", None), get("batch", None)
        loss, inputs, loader = get("loss", None), get("inputs", None), get("loader", None)
    usable = isinstance(model, torch.nn.Module) and callable(batch)
    iterable = loader is None or hasattr(loader, "__iter__")
    if not (usable and iterable and all(f is None or callable(f) for f in (loss, inputs))):
        raise ObserveError(
            f"entrypoint {spec} returned {type(built).__name__}: build(batch_size, device) must "
            "return (model, make_batch) or {'model': nn.Module, 'batch': callable, 'loss': "
            "optional callable, 'inputs': optional callable, 'loader': optional iterable} (see "
            "docs/torch-probes.md)"
        )
    inputs = inputs or (supervised_inputs if loss else None)
    return Workload(
        model.to(device),
        _blame(batch, f"the batch() of {spec}"),
        _blame(loss or default_loss, f"the loss of {spec}"),
        model_name(p),
        inputs and _blame(inputs, f"the inputs() of {spec}"),
        loader,
    )


def load_workload(p, batch_size, device):
    """The user's entrypoint when one is given, else the built-in model; seeded first."""
    seed_all(p["seed"])
    work = _user(p, batch_size, device) if p.get("entrypoint") else _builtin(p, batch_size, device)
    work.model.train()
    return work


def measure_on_meta(p, batch_size):
    """(parameters, activation bytes, why activations are unknown) of the user's model, built
    on the meta device: shapes without memory, so a 70B model costs nothing. Activations are
    the tensors autograd saves for backward in one loss computation (fp32; parameters left
    out); None, with the reason, when the user's code cannot run on meta."""
    torch = need_torch()
    meta = torch.device("meta")
    with meta:
        work = _user(p, batch_size, meta)
    params = {id(t): t.numel() for t in work.model.parameters()}
    saved = {}

    def pack(tensor):
        if id(tensor) not in params and id(getattr(tensor, "_base", None)) not in params:
            saved[id(tensor)] = tensor
        return tensor

    try:
        with meta, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            work.loss(work.model, work.batch())
    except Exception as exc:
        return sum(params.values()), None, f"its loss does not run on the meta device: {exc}"
    activations = sum(t.numel() * t.element_size() for t in saved.values())
    return sum(params.values()), activations, None


def autocast(device, dtype):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, DTYPES[dtype]))


def went_nonfinite(bad, step):
    """'the loss went NaN/Inf at step 3', or 'the gradient of head.weight went ...'."""
    what = "the loss" if bad == "loss" else f"the gradient of {bad}"
    return f"{what} went NaN/Inf at step {step}"


def nonfinite_grad(model):
    """Name of the first parameter whose gradient holds NaN or Inf, else None."""
    for name, param in model.named_parameters():
        if param.grad is not None and not bool(torch.isfinite(param.grad).all()):
            return name
    return None


OPTIMIZERS = {
    "adamw": lambda ps, lr: torch.optim.AdamW(ps, lr=lr),
    "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr),
    "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
    "sgd_momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
}


class Trainer:
    """A workload under training: its optimizer, autocast dtype and, for fp16, GradScaler."""

    def __init__(self, work, p, device, lr):
        self.work, self.device, self.dtype = work, device, p["dtype"]
        self.optimizer = OPTIMIZERS[p["optimizer"]](work.model.parameters(), lr)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == "fp16" else None
        self.skipped = 0  # fp16 steps GradScaler skipped for overflowing gradients

    def step(self, batch=None):
        """One optimizer step on `batch` (default: a fresh one from the workload): (loss,
        what first went non-finite or None)."""
        model = self.work.model
        self.optimizer.zero_grad(set_to_none=True)
        batch = self.work.batch() if batch is None else batch
        with autocast(self.device, self.dtype):
            loss = self.work.loss(model, batch)
        value = float(loss.detach().float())
        if not math.isfinite(value):
            return value, "loss"
        if self.scaler is None:
            loss.backward()
            bad = nonfinite_grad(model)
            if bad is None:
                self.optimizer.step()
            return value, bad
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        self.skipped += nonfinite_grad(model) is not None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return value, None

    def state_dict(self):
        state = {"model": self.work.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state):
        self.work.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


def proc_status(key):
    """A byte count from this process's /proc/self/status (VmRSS, VmHWM); OSError elsewhere."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in /proc/self/status")


def peak_start(device):
    """Start measuring peak memory: CUDA's allocator peak, or on Linux the process's peak RSS
    (reset through /proc/self/clear_refs). Returns the RSS baseline, None where unmeasurable."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return proc_status("VmRSS")
    except OSError:
        return None


def peak_bytes(device, baseline):
    """Bytes allocated at the peak since peak_start (CUDA), or peak RSS growth (CPU), or None."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return None if baseline is None else proc_status("VmHWM") - baseline


class Deadline:
    """The script's own time bound (`max_seconds`), checked between steps, so a long run ends
    with an error saying how far it got rather than being killed by the check's timeout."""

    def __init__(self, seconds):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def check(self, progress):
        if time.monotonic() > self.end:
            raise ObserveError(
                f"stopped at max_seconds={self.seconds:g} ({progress}): raise max_seconds "
                "(and the check's timeout) or make the run smaller"
            )
