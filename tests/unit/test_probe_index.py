"""probes/builtin.py's index of kinds is true to the modules, and a spec's kinds are the only
probe modules planning imports."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import probes
from matrix.probe import ProbeParams
from probes.builtin import KINDS

REPO = Path(__file__).resolve().parents[2]


def test_the_index_names_every_kind_of_every_probe_module_and_no_other() -> None:
    declared = {}
    for info in pkgutil.iter_modules(probes.__path__):
        if info.name in ("builtin", "remote"):
            continue
        module = importlib.import_module(f"probes.{info.name}")
        for cls in vars(module).values():
            own = isinstance(cls, type) and cls.__module__ == module.__name__
            if own and issubclass(cls, ProbeParams) and "kind" in vars(cls):
                declared[cls.kind] = module.__name__
    assert declared == KINDS


def test_planning_imports_only_the_modules_of_the_kinds_a_spec_uses(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n"
        "      - {id: a, probe: {kind: command, argv: ['true']}}\n"
        "      - {id: b, probe: {kind: disk, path: /}}\n"
    )
    code = (
        "import sys; from matrix.cli import main; main(['validate', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.startswith('probes.')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(spec)], capture_output=True, text=True, env=env
    )
    assert done.stdout.splitlines()[-1] == "['probes.builtin', 'probes.command', 'probes.files']"
