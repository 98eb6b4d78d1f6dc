"""`model.files`: a model directory holds what loading it needs, read by probes/remote/model.py.

Runs on any host with the standard library alone: config.json is parsed, the shard index is
compared with the files present, and each safetensors header is checked against its file's
size. No weights are loaded and torch is not imported, so a 140 GB checkpoint takes milliseconds.
"""

from __future__ import annotations

from pydantic import Field

from matrix.probe import ScriptProbe, probe


@probe(
    "model.files",
    default_expect={"ok": True},
    facts={
        "path": "the directory as given",
        "exists": "something is at the path (a missing dir is a fact, not an error)",
        "is_dir": "it is a directory",
        "config": "config.json is present and parses as a JSON object",
        "model_type": 'config.json\'s model_type, e.g. "llama"; null without it',
        "architectures": 'config.json\'s architectures, e.g. ["LlamaForCausalLM"]',
        "tokenizer_files": "tokenizer files present (tokenizer.json, tokenizer.model, "
        "spiece.model, vocab.json, vocab.txt)",
        "weights_format": "safetensors or pytorch (*.bin, *.pt, *.pth); safetensors wins when "
        "both are present; null without weights",
        "index": "the shard index in use, e.g. model.safetensors.index.json; null without one",
        "shards": "weight files the model uses: the files the index names, or those present",
        "missing_shards": "shards the index names that are absent (or dangling links)",
        "unindexed_shards": "weight files present that the index does not name (reported, "
        "not counted against `ok`: e.g. Mistral's consolidated.safetensors)",
        "corrupt": '"file: reason" for each file that cannot be what it claims: safetensors '
        "header unreadable, dtype/shape/data_offsets not fitting the file (truncated), Git "
        "LFS pointers, damaged torch zips, invalid config or index JSON",
        "params": "parameter count summed over the safetensors headers; null for pytorch "
        "weights (counting them needs torch) or when a shard is missing or corrupt",
        "params_b": "params in billions, rounded to 2 places (7.24 for Mistral 7B)",
        "dtypes": '{dtype: tensor count} of the safetensors shards, e.g. {"BF16": 291}',
        "bytes": "total size of the shards present",
        "missing": "config.json, tokenizer, weights, or a `required` pattern, when absent",
        "problem": 'what is wrong and what to do, e.g. "Model dir /models/llama is missing '
        'shard model-00002-of-00003.safetensors ..."; null when ok',
        "ok": "nothing missing and nothing corrupt",
    },
)
class ModelFiles(ScriptProbe):
    """A model directory with config, tokenizer and complete, readable weight shards."""

    script = "model"

    path: str
    """Model directory, e.g. a Hugging Face snapshot or `save_pretrained` output."""
    tokenizer: bool = True
    """Require a tokenizer file; false for weights-only dirs."""
    required: list[str] = Field(default_factory=list)
    """More glob patterns relative to the directory that must each match, e.g.
    [generation_config.json]."""
