"""`model.files` through the real engine on real model directories: safetensors files written
byte for byte to the format (8-byte little-endian header length, JSON header, data), torch.save
archives, Hugging Face style shard indexes."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matrix.results import Result, Run

BYTES = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}
# three shards of a tiny llama: (dtype, shape) per tensor
SHARDS = {
    "model-00001-of-00003.safetensors": {
        "model.embed_tokens.weight": ("BF16", [128, 16]),
        "model.layers.0.self_attn.q_proj.weight": ("BF16", [16, 16]),
    },
    "model-00002-of-00003.safetensors": {
        "model.layers.0.mlp.up_proj.weight": ("BF16", [32, 16]),
        "model.layers.0.input_layernorm.weight": ("F32", [16]),
    },
    "model-00003-of-00003.safetensors": {
        "lm_head.weight": ("BF16", [128, 16]),
        "model.norm.weight": ("F32", [16]),
    },
}
PARAMS = sum(math.prod(shape) for tensors in SHARDS.values() for _, shape in tensors.values())


def safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """Write a valid safetensors file: zeroed data, header padded to 8 bytes like the library."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def llama(directory: Path, *, config: bool = True, tokenizer: bool = True) -> Path:
    """A sharded Hugging Face style model dir with an index naming every tensor."""
    directory.mkdir(parents=True)
    if config:
        llama_config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
        (directory / "config.json").write_text(json.dumps(llama_config))
    if tokenizer:
        (directory / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
        (directory / "tokenizer_config.json").write_text("{}")
    weight_map = {}
    for shard, tensors in SHARDS.items():
        safetensors(directory / shard, tensors)
        weight_map.update(dict.fromkeys(tensors, shard))
    index = {"metadata": {"total_size": PARAMS * 2}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


@pytest.fixture
def model_run(run_spec: Callable[..., Run], by_id: Callable[[Run], dict[str, Result]]):
    """model_run({check_id: params}) → results by check id, all in one run."""

    def run(rows: dict[str, dict[str, Any]]) -> dict[str, Result]:
        checks = [{"id": i, "probe": {"kind": "model.files", **p}} for i, p in rows.items()]
        spec = {"version": 1, "name": "models", "phases": [{"id": "m", "checks": checks}]}
        return by_id(run_spec(json.dumps(spec)))

    return run


def test_healthy_sharded_dir(tmp_path: Path, model_run) -> None:
    model = llama(tmp_path / "llama")
    (model / "consolidated.safetensors").write_bytes(b"")  # beside HF shards, as Mistral ships

    results = model_run(
        {
            "default": {"path": str(model)},
            "sized": {"path": str(model), "required": ["tokenizer_config.json"]},
        }
    )

    assert {r.status.value for r in results.values()} == {"pass"}, results["default"].reason
    facts = results["default"].facts
    assert (facts["model_type"], facts["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert (facts["weights_format"], facts["index"]) == (
        "safetensors",
        "model.safetensors.index.json",
    )
    assert facts["shards"] == sorted(SHARDS) and facts["missing_shards"] == []
    assert facts["unindexed_shards"] == ["consolidated.safetensors"]
    assert (facts["params"], facts["params_b"]) == (PARAMS, round(PARAMS / 1e9, 2))
    assert facts["dtypes"] == {"BF16": 4, "F32": 2}
    assert facts["bytes"] == sum((model / shard).stat().st_size for shard in SHARDS)
    assert facts["tokenizer_files"] == ["tokenizer.json"]
    assert (facts["corrupt"], facts["missing"], facts["problem"]) == ([], [], None)


def test_missing_shard_and_dangling_link(tmp_path: Path, model_run) -> None:
    missing = llama(tmp_path / "llama")
    (missing / "model-00002-of-00003.safetensors").unlink()
    linked = llama(tmp_path / "snapshot")  # a Hugging Face cache snapshot whose blob is gone
    shard = linked / "model-00003-of-00003.safetensors"
    shard.unlink()
    shard.symlink_to(tmp_path / "blobs" / "3f2a9c")

    results = model_run({"missing": {"path": str(missing)}, "linked": {"path": str(linked)}})

    assert results["missing"].status.value == "fail"
    assert results["missing"].reason == (
        f"Model dir {missing} is missing shard model-00002-of-00003.safetensors (named in "
        "model.safetensors.index.json) — download it again (ok is false, expected == true)"
    )
    facts = results["missing"].facts
    assert facts["missing_shards"] == ["model-00002-of-00003.safetensors"]
    assert facts["params"] is None and facts["dtypes"] == {"BF16": 3, "F32": 1}
    assert results["linked"].facts["missing_shards"] == ["model-00003-of-00003.safetensors"]


def test_corrupt_safetensors_headers(tmp_path: Path, model_run) -> None:
    tensor = {"w": ("F32", [4, 4])}
    cases: dict[str, Callable[[Path], None]] = {
        "tiny": lambda p: p.write_bytes(b"\x10\x00\x00"),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:-10]),
        "header-cut": lambda p: p.write_bytes(p.read_bytes()[:20]),
        "bad-json": lambda p: raw_safetensors(p, b'{"w": {"dtype": "F32", "shape": [4, 4]'),
        "beyond": lambda p: raw_safetensors(
            p, b'{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[64,128]}}', bytes(64)
        ),
        "shape": lambda p: raw_safetensors(
            p, b'{"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,32]}}', bytes(32)
        ),
        "dtype": lambda p: raw_safetensors(
            p, b'{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,2]}}', bytes(2)
        ),
        "lfs": lambda p: p.write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 4943162336\n"
        ),
    }
    rows = {}
    for case, damage in cases.items():
        model = tmp_path / case
        model.mkdir()
        (model / "config.json").write_text("{}")
        safetensors(model / "model.safetensors", tensor)
        damage(model / "model.safetensors")
        rows[case] = {"path": str(model), "tokenizer": False}

    results = model_run(rows)

    assert {r.status.value for r in results.values()} == {"fail"}
    corrupt = {case: r.facts["corrupt"] for case, r in results.items()}
    assert corrupt.pop("bad-json")[0].startswith(
        "model.safetensors: header is not valid JSON (Expecting ',' delimiter:"
    )
    assert corrupt == {
        "tiny": ["model.safetensors: truncated: 3 bytes, less than the 8-byte header length"],
        "truncated": [
            "model.safetensors: tensor w ends at byte 64 of the data but the file holds 54 — "
            "the file is truncated"
        ],
        "header-cut": ["model.safetensors: truncated: the header needs 88 bytes, the file has 12"],
        "beyond": [
            "model.safetensors: tensor w ends at byte 128 of the data but the file holds 64 — "
            "the file is truncated"
        ],
        "shape": [
            "model.safetensors: tensor w is F32 [4, 4] (64 bytes) but its data_offsets span 32 "
            "bytes"
        ],
        "dtype": ["model.safetensors: tensor w has unknown dtype 'Q4'"],
        "lfs": [
            "model.safetensors: a Git LFS pointer, not the weights — run `git lfs pull` in the "
            "model dir"
        ],
    }
    assert results["lfs"].reason.startswith(
        f"Model dir {tmp_path / 'lfs'} has corrupt files: model.safetensors: a Git LFS pointer"
    )
    assert all(r.facts["params"] is None for r in results.values())


def test_shards_from_different_downloads(tmp_path: Path, model_run) -> None:
    model = llama(tmp_path / "llama")
    safetensors(model / "model-00002-of-00003.safetensors", {"other.weight": ("BF16", [8])})

    results = model_run({"mixed": {"path": str(model)}})

    assert results["mixed"].facts["corrupt"] == [
        "model-00002-of-00003.safetensors: lacks 2 tensors the index maps to it (e.g. "
        "model.layers.0.mlp.up_proj.weight) — the shards come from different downloads"
    ]


def test_missing_config_tokenizer_and_required_files(tmp_path: Path, model_run) -> None:
    bare = llama(tmp_path / "bare", config=False, tokenizer=False)
    broken = llama(tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": "llama",')

    results = model_run(
        {
            "bare": {"path": str(bare), "required": ["generation_config.json"]},
            "weights-only": {"path": str(bare), "tokenizer": False},
            "broken": {"path": str(broken)},
        }
    )

    assert {r.status.value for r in results.values()} == {"fail"}
    assert results["bare"].facts["missing"] == [
        "config.json",
        "tokenizer",
        "generation_config.json",
    ]
    assert results["bare"].facts["problem"] == (
        f"Model dir {bare} has no config.json; has no tokenizer (tokenizer.json, tokenizer.model, "
        "spiece.model, vocab.json, vocab.txt) — copy it in, or set `tokenizer: false` for a "
        "weights-only dir; has no generation_config.json"
    )
    assert results["weights-only"].facts["missing"] == ["config.json"]
    broken_facts = results["broken"].facts
    assert (broken_facts["config"], broken_facts["missing"]) == (False, [])
    assert broken_facts["corrupt"][0].startswith("config.json: not valid JSON (Expecting ")
    assert broken_facts["params"] == PARAMS  # the weights themselves are fine


def test_pytorch_bin_dir(tmp_path: Path, model_run) -> None:
    import torch

    single = tmp_path / "bert"
    single.mkdir()
    (single / "config.json").write_text('{"model_type": "bert"}')
    (single / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    torch.save({"embeddings.weight": torch.zeros(3, 4)}, single / "pytorch_model.bin")
    torch.save({"lr": 0.1}, single / "training_args.bin")  # a Trainer's, not weights
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text('{"model_type": "gpt2"}')
    (sharded / "vocab.json").write_text("{}")
    names = [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)]
    for i, name in enumerate(names):
        torch.save({f"h.{i}.weight": torch.zeros(8, 8)}, sharded / name)
    index = {"weight_map": {"h.0.weight": names[0], "h.1.weight": names[1]}}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (sharded / names[1]).write_bytes((sharded / names[1]).read_bytes()[:100])

    results = model_run({"single": {"path": str(single)}, "sharded": {"path": str(sharded)}})

    assert results["single"].status.value == "pass", results["single"].reason
    facts = results["single"].facts
    assert (facts["weights_format"], facts["shards"], facts["index"]) == (
        "pytorch",
        ["pytorch_model.bin"],
        None,
    )
    assert (
        facts["params"] is None and facts["bytes"] > 0 and facts["tokenizer_files"] == ["vocab.txt"]
    )
    assert results["sharded"].status.value == "fail"
    assert results["sharded"].facts["index"] == "pytorch_model.bin.index.json"
    assert results["sharded"].facts["corrupt"] == [
        f"{names[1]}: damaged zip archive (File is not a zip file) — the file is truncated"
    ]


def test_nonexistent_dir_and_file_path(tmp_path: Path, model_run) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    results = model_run(
        {
            "absent": {"path": str(tmp_path / "llama")},
            "file": {"path": str(tmp_path / "model.safetensors")},
            "empty": {"path": str(tmp_path), "tokenizer": False},
        }
    )

    assert {r.status.value for r in results.values()} == {"fail"}
    absent = results["absent"].facts
    assert (absent["exists"], absent["is_dir"], absent["shards"]) == (False, False, [])
    assert absent["problem"] == (
        f"Model dir {tmp_path / 'llama'} does not exist — download the model there or fix `path`"
    )
    assert results["file"].facts["problem"] == (
        f"{tmp_path / 'model.safetensors'} is not a directory — point `path` at the directory "
        "holding config.json"
    )
    assert results["empty"].facts["missing"] == ["config.json"]
    assert results["empty"].facts["corrupt"] == [
        "model.safetensors: truncated: 0 bytes, less than the 8-byte header length"
    ]
