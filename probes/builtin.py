"""The built-in probe families, as pre-commit's all_languages.py lists its languages: a new
family is one module in probes/ plus one name here. matrix.probe.registry() reads MODULES."""

from __future__ import annotations

import importlib

FAMILIES = (
    "alert",
    "aws",
    "command",
    "data",
    "distributed",
    "files",
    "gpu",
    "host",
    "model",
    "net",
    "notify",
    "pyenv",
    "ssh",
    "training",
)
MODULES = tuple(importlib.import_module(f"probes.{name}") for name in FAMILIES)
