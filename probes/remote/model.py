# Observe a model directory: config.json, tokenizer, weight shards and their index, and the
# safetensors headers checked against the file sizes. Reads headers only, never the weights.
import fnmatch
import glob
import json
import os
import struct
import zipfile

from _prelude import ObserveError

HEADER_LIMIT = 100_000_000  # the largest header safetensors itself accepts
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
TORCH_WEIGHTS = ("*.bin", "*.pt", "*.pth")
# what a Trainer checkpoint keeps beside the weights
NOT_WEIGHTS = ("training_args.bin", "optimizer*.pt", "scheduler*.pt", "scaler*.pt", "rng_state*")
INDEXES = (
    ("safetensors", "model.safetensors.index.json"),
    ("pytorch", "pytorch_model.bin.index.json"),
)
LFS_POINTER = b"version https://git-lfs"
SHOWN = 5  # names listed in a problem before "and N more"


class Corrupt(Exception):
    """A file that cannot be what its name says; the message is the reason."""


def _matches(directory, pattern):
    return sorted(
        os.path.relpath(p, directory)
        for p in glob.glob(os.path.join(glob.escape(directory), pattern))
    )


def _json_file(path):
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise Corrupt(f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise Corrupt(f"not valid JSON ({exc})") from None


def _head(path, size):
    """The first `size` bytes of a weight file that is not a Git LFS pointer."""
    with open(path, "rb") as handle:
        head = handle.read(max(size, len(LFS_POINTER)))
    if head.startswith(LFS_POINTER):
        raise Corrupt("a Git LFS pointer, not the weights — run `git lfs pull` in the model dir")
    return head[:size]


def _count(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def _tensor(name, info, data_size):
    """(dtype, shape, begin, end) of one header entry, checked against the data size."""
    info = info if isinstance(info, dict) else {}
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise Corrupt(f"tensor {name} has unknown dtype {dtype!r}")
    ints = (
        isinstance(shape, list)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape + offsets)
    )
    if not ints or offsets[0] > offsets[1]:
        raise Corrupt(f"tensor {name} has a malformed shape {shape!r} or data_offsets {offsets!r}")
    begin, end = offsets
    need = (_count(shape) * DTYPE_BITS[dtype] + 7) // 8
    if end - begin != need:
        raise Corrupt(
            f"tensor {name} is {dtype} {shape} ({need} bytes) but its data_offsets span "
            f"{end - begin} bytes"
        )
    if end > data_size:
        raise Corrupt(
            f"tensor {name} ends at byte {end} of the data but the file holds {data_size} — "
            "the file is truncated"
        )
    return dtype, shape, begin, end


def read_safetensors(path):
    """{tensor: (dtype, shape)} from a safetensors header, after checking every tensor's dtype,
    shape and data_offsets against the file size. Raises Corrupt with the reason."""
    size = os.path.getsize(path)
    head = _head(path, 8)
    if len(head) < 8:
        raise Corrupt(f"truncated: {size} bytes, less than the 8-byte header length")
    (length,) = struct.unpack("<Q", head)
    if length > HEADER_LIMIT:
        raise Corrupt(f"header length {length} is over the 100 MB limit: not a safetensors file")
    if 8 + length > size:
        raise Corrupt(f"truncated: the header needs {length} bytes, the file has {size - 8}")
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Corrupt(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise Corrupt("header is not a JSON object")
    data_size = size - 8 - length
    tensors, spans = {}, []
    for name, info in header.items():
        if name != "__metadata__":
            dtype, shape, begin, end = _tensor(name, info, data_size)
            tensors[name] = (dtype, shape)
            spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise Corrupt(f"tensor {name} starts at byte {begin}, expected {position}")
        position = end
    if position != data_size:
        raise Corrupt(f"{data_size - position} bytes follow the last tensor")
    return tensors


def check_torch_file(path):
    """A torch.save file: a zip holding data.pkl, or a legacy pickle. Raises Corrupt."""
    head = _head(path, 2)
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise Corrupt(f"damaged zip archive ({exc}) — the file is truncated") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise Corrupt("a zip archive without data.pkl: not a torch.save file")
    elif not head.startswith(b"\x80"):  # a legacy torch.save file is a pickle
        raise Corrupt("neither a torch.save zip archive nor a pickle")


def _weights(directory, facts):
    """The weight files the model uses: the shards its index names, or the files present."""
    present = {
        "safetensors": _matches(directory, "*.safetensors"),
        "pytorch": sorted(
            name
            for pattern in TORCH_WEIGHTS
            for name in _matches(directory, pattern)
            if not any(fnmatch.fnmatch(name, skip) for skip in NOT_WEIGHTS)
        ),
    }
    for kind, index in INDEXES:
        if os.path.isfile(os.path.join(directory, index)):
            facts.update(weights_format=kind, index=index)
            try:
                document = _json_file(os.path.join(directory, index))
            except Corrupt as exc:
                facts["corrupt"].append(f"{index}: {exc}")
                return present[kind], {}
            weight_map = document.get("weight_map") if isinstance(document, dict) else None
            if not isinstance(weight_map, dict):
                facts["corrupt"].append(f"{index}: no weight_map object")
                return present[kind], {}
            named = set(weight_map.values())
            facts["unindexed_shards"] = [f for f in present[kind] if f not in named]
            return sorted(named), weight_map
    for kind in ("safetensors", "pytorch"):
        if present[kind]:
            facts["weights_format"] = kind
            return present[kind], {}
    return [], {}


def _check_shards(directory, shards, weight_map, facts):
    """Fill missing_shards, corrupt, bytes, and for safetensors params and dtypes."""
    params, dtypes, readable = 0, {}, True
    for shard in shards:
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):  # absent, or a link to a blob that is not there
            facts["missing_shards"].append(shard)
            continue
        facts["bytes"] += os.path.getsize(path)
        try:
            if facts["weights_format"] == "pytorch":
                check_torch_file(path)
                continue
            tensors = read_safetensors(path)
        except (Corrupt, OSError) as exc:
            why = f"cannot be read ({exc.strerror or exc})" if isinstance(exc, OSError) else exc
            facts["corrupt"].append(f"{shard}: {why}")
            readable = False
            continue
        absent = [t for t, f in weight_map.items() if f == shard and t not in tensors]
        if absent:
            facts["corrupt"].append(
                f"{shard}: lacks {len(absent)} tensors the index maps to it (e.g. {absent[0]}) — "
                "the shards come from different downloads"
            )
        for dtype, shape in tensors.values():
            params += _count(shape)
            dtypes[dtype] = dtypes.get(dtype, 0) + 1
    if facts["weights_format"] == "safetensors":
        facts["dtypes"] = dtypes
        if readable and not facts["missing_shards"]:
            facts.update(params=params, params_b=round(params / 1e9, 2))


def _config(directory, facts):
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        facts["missing"].append("config.json")
        return
    try:
        config = _json_file(path)
    except Corrupt as exc:
        facts["corrupt"].append(f"config.json: {exc}")
        return
    if not isinstance(config, dict):
        facts["corrupt"].append("config.json: not a JSON object")
        return
    facts.update(config=True, model_type=config.get("model_type"))
    facts["architectures"] = config.get("architectures")


def _listed(names):
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _problem(facts):
    path = facts["path"]
    if not facts["exists"]:
        return f"Model dir {path} does not exist — download the model there or fix `path`"
    if not facts["is_dir"]:
        return f"{path} is not a directory — point `path` at the directory holding config.json"
    phrases = []
    for missing in facts["missing"]:
        if missing == "tokenizer":
            phrases.append(
                f"has no tokenizer ({', '.join(TOKENIZER_FILES)}) — copy it in, or set "
                "`tokenizer: false` for a weights-only dir"
            )
        elif missing == "weights":
            phrases.append("has no weights (*.safetensors, *.bin, *.pt, *.pth)")
        else:
            phrases.append(f"has no {missing}")
    shards = facts["missing_shards"]
    if shards:
        named = f" (named in {facts['index']})" if facts["index"] else ""
        one = len(shards) == 1
        phrases.append(
            f"is missing shard{'' if one else 's'} {_listed(shards)}{named} — download "
            f"{'it' if one else 'them'} again"
        )
    if facts["corrupt"]:
        phrases.append(f"has corrupt files: {'; '.join(facts['corrupt'])}")
    return f"Model dir {path} " + "; ".join(phrases) if phrases else None


def observe(params):
    directory = params["path"]
    facts = {"path": directory, "exists": os.path.exists(directory)}
    facts.update(
        is_dir=os.path.isdir(directory),
        config=False,
        model_type=None,
        architectures=None,
        tokenizer_files=[],
        weights_format=None,
        index=None,
        shards=[],
        missing_shards=[],
        unindexed_shards=[],
        corrupt=[],
        params=None,
        params_b=None,
        dtypes={},
        bytes=0,
        missing=[],
    )
    if facts["is_dir"]:
        if not os.access(directory, os.R_OK | os.X_OK):
            raise ObserveError(
                f"cannot read {directory}: permission denied — run the check as a user who can"
            )
        _config(directory, facts)
        facts["tokenizer_files"] = [
            name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, name))
        ]
        if params.get("tokenizer", True) and not facts["tokenizer_files"]:
            facts["missing"].append("tokenizer")
        shards, weight_map = _weights(directory, facts)
        facts["shards"] = shards
        if not shards:
            facts["missing"].append("weights")
        _check_shards(directory, shards, weight_map, facts)
        facts["missing"] += [p for p in params.get("required") or [] if not _matches(directory, p)]
    facts["problem"] = _problem(facts)
    facts["ok"] = facts["problem"] is None
    return facts
