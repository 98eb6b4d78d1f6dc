"""The built-in probe families, as pre-commit's all_languages.py lists its languages: a new
family is one module in probes/ plus one line here. matrix.probe.registry() reads MODULES."""

from __future__ import annotations

from probes import (
    alert,
    aws,
    command,
    data,
    distributed,
    files,
    gpu,
    host,
    model,
    net,
    notify,
    pyenv,
    ssh,
    training,
)

MODULES = (
    alert,
    aws,
    command,
    data,
    distributed,
    files,
    gpu,
    host,
    model,
    net,
    notify,
    pyenv,
    ssh,
    training,
)
