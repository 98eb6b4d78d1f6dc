# torch.memory: memory a training run needs, from a parameter count, your entrypoint built on the
# meta device, or a model directory (safetensors headers and config.json: no weights are
# loaded), against what the device has: the GPU, or the process's effective memory (a cgroup
# limit counts). torch is needed only to see a GPU or to build the entrypoint: without it,
# device auto compares with the effective memory.
import glob
import json
import math
import os
import socket
import struct

from _memory import effective_memory
from _prelude import GB, ObserveError, gb
from _torch import measure_on_meta, need_torch, quiet, resolve_device

WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
STATE_BYTES = {"adamw": 8, "adam": 8, "sgd_momentum": 4, "sgd": 0}  # fp32 states per parameter
CONFIG_KEYS = {
    "d_model": ("hidden_size", "d_model", "n_embd"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "vocab": ("vocab_size",),
}
HEADER_LIMIT = 100 << 20  # a safetensors header past this is a corrupt file, not a model


def _safetensors_count(path):
    """Parameters in the *.safetensors files in `path`, summed from their JSON headers."""
    files = sorted(glob.glob(os.path.join(glob.escape(path), "*.safetensors")))
    total = 0
    for name in files:
        try:
            with open(name, "rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > HEADER_LIMIT:
                    raise ValueError(f"header of {size} bytes")
                header = json.loads(handle.read(size))
        except (OSError, ValueError, struct.error) as exc:
            raise ObserveError(f"cannot read the safetensors header of {name}: {exc}") from None
        total += sum(math.prod(t["shape"]) for key, t in header.items() if key != "__metadata__")
    return total if files else None


def _config(path):
    """d_model, layers and vocab from config.json in `path` (None where it has no such key)."""
    name = os.path.join(path, "config.json")
    config = {}
    if os.path.exists(name):
        try:
            with open(name) as handle:
                config = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ObserveError(f"cannot read {name}: {exc}") from None
    return {
        ours: next((config[key] for key in keys if isinstance(config.get(key), int)), None)
        for ours, keys in CONFIG_KEYS.items()
    }


def _model(params):
    """(parameter count, where it came from, sizes for activations)."""
    path, sizes = params.get("path"), {key: params.get(key) for key in CONFIG_KEYS}
    if path is None:
        return int(params["params"]), "given", sizes
    if not os.path.isdir(path):
        raise ObserveError(f"model directory {path} does not exist on {socket.gethostname()}")
    found = _config(path)
    sizes = {key: sizes[key] or found[key] for key in CONFIG_KEYS}
    if params.get("params"):
        return int(params["params"]), "given", sizes
    count = _safetensors_count(path)
    if count is not None:
        return count, "safetensors", sizes
    if sizes["d_model"] and sizes["layers"]:
        d, vocab = sizes["d_model"], sizes["vocab"] or 0
        return 12 * sizes["layers"] * d * d + vocab * d, "config.json", sizes
    raise ObserveError(
        f"{path} has no *.safetensors and its config.json gives no hidden_size and "
        "num_hidden_layers: give `params` (e.g. 7B)"
    )


def _device_memory(name):
    """(device, cuda, bytes it has, GPU or RAM, where that came from): the GPU's total memory,
    else the effective memory of this process (its cgroup limit, else RAM)."""
    if name != "cpu":
        try:
            torch = need_torch()
        except ObserveError:
            if name != "auto":
                raise
        else:
            device = resolve_device(name)
            if device.type == "cuda":
                total = torch.cuda.get_device_properties(device).total_memory
                return str(device), True, total, "GPU", f"CUDA device {device}"
    found = effective_memory()
    return "cpu", False, found["total"], "RAM", found["source"]


def _text(size):
    """GB for a sentence: 61, 23.6, 0.523."""
    return f"{size:.0f}" if size >= 100 else f"{size:.3g}"


def activation_bytes(sizes, batch, seq_len, weight_bytes):
    """Korthikanti et al. (2022): 34·s·b·h bytes per layer in 16-bit with fused attention (no
    s² score matrix stored), scaled for the dtype, plus fp32 logits; None without sizes."""
    if not (sizes["d_model"] and sizes["layers"]):
        return None
    tokens = batch * seq_len
    blocks = sizes["layers"] * tokens * sizes["d_model"] * 34 * weight_bytes // 2
    return blocks + 4 * tokens * (sizes["vocab"] or 0)


def _counted(params, weight):
    """(parameter count, where it came from, activation bytes or None, why they are None)."""
    if params.get("entrypoint") and not params.get("params"):
        count, measured, unknown = measure_on_meta(params, params["batch_size"])
        scaled = None if measured is None else measured * weight // 4  # measured in fp32
        return count, "entrypoint", scaled, unknown
    count, source, sizes = _model(params)
    found = activation_bytes(sizes, params["batch_size"], params["seq_len"], weight)
    unknown = None if found is not None else "the model's sizes are unknown: give d_model, layers"
    return count, source, found, unknown


@quiet
def observe(params):
    dtype, weight = params["dtype"], WEIGHT_BYTES[params["dtype"]]
    count, source, activations, unknown = _counted(params, weight)
    master = 4 if dtype != "fp32" and params["master_weights"] else 0
    parts = {
        "weights": count * weight,
        "gradients": count * weight,
        "optimizer": count * (STATE_BYTES[params["optimizer"]] + master),
        "activations": activations,
    }
    need = sum(size for size in parts.values() if size)
    device, cuda, have, memory, limit_source = _device_memory(params["device"])
    fits = need <= have
    what = "GPU memory" if cuda else "RAM"
    limited = "" if cuda or limit_source == "physical" else f" (the limit of {limit_source})"
    problem = None
    if not fits:
        problem = f"Need {_text(need / GB)}GB {what}, have {_text(have / GB)}GB{limited}"
    return {
        "need_gb": gb(need),
        "have_gb": gb(have),
        "fits": fits,
        "memory": memory,
        "limit_source": limit_source,
        "params": count,
        "params_source": source,
        "breakdown": {f"{k}_gb": None if v is None else gb(v) for k, v in parts.items()},
        "activations_unknown": unknown,
        "device": device,
        "cuda": cuda,
        "problem": problem,
    }
