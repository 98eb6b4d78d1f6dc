"""The program a target's python runs for a remote script (`python -`, the program on stdin).

One self-contained stdin payload, so nothing is written to the host. A short bootstrap makes
probes/remote/_prelude.py and each library a module in `sys.modules`, so every script imports
what it uses and a traceback names the right file and line. Then the script runs as __main__,
and the last line, the entry call, hands its `observe` to the prelude's `main`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

OUTPUT_LIMIT = 1 << 20  # bytes of a target's stdout and stderr kept; the rest is drained
PRELUDE = "_prelude"
# A program's second line names the modules it imports that are slow to import (torch): an
# agent imports them once and forks each such program from itself (agent_remote.preloads).
PRELOAD = "# preload: "
# Runs on the target: Python >= 3.8, stdlib only. Its names are deleted before the script runs,
# so the script sees a namespace as bare as `python script.py` gives it. Every source is
# compiled by a `compile(SOURCE, FILENAME, "exec")` call with literal arguments: an agent finds
# them without running anything and compiles each once for all its forks (agent_remote.py).
BOOTSTRAP = """\
# matrix remote program (matrix/remote.py): {script}
{preload}
import sys


def _module(name, code):
    module = sys.modules[name] = type(sys)(name)
    module.__file__ = code.co_filename
    exec(code, module.__dict__)


"""


def program(
    script: str | Path,
    libraries: tuple[str, ...] = (),
    params: Mapping[str, Any] | None = None,
    preload: tuple[str, ...] = (),
) -> bytes:
    """The program that runs `script` after the prelude and `libraries` on a target.

    `script` and each library is a built-in name in probes/remote/ ("gpu", "_torch") or a path
    to a plugin's .py file; a library is imported by its file stem. `params` travel in the
    entry call, inside the program: never in argv, which the host's process list shows to
    every user (a header, a URL or a token may be among them). `preload`: the slow imports
    an agent may do once for every program that names them.
    """
    body = _body(str(script), tuple(str(name) for name in libraries), tuple(preload))
    return (
        body
        + f"__import__({PRELUDE!r}).main(observe, {json.dumps(dict(params or {}))!r})\n".encode()
    )


@cache
def _body(script: str, libraries: tuple[str, ...], preload: tuple[str, ...]) -> bytes:
    """Everything but the entry call: the same bytes each time, so the SSH agent, which compiles
    each distinct body once (transport/agent_remote.py), gets a hit for every task of this
    script."""
    header = PRELOAD + " ".join(preload) if preload else "#"
    parts = [BOOTSTRAP.format(script=_filename(script), preload=header)]
    for name in (PRELUDE, *libraries):
        module = Path(name).stem
        parts.append(f"_module({module!r}, {_compile(name)})\n")
    parts.append(f"del sys, _module\n__file__ = {_filename(script)!r}\n")
    parts.append(f"exec({_compile(script)})\n")
    return "".join(parts).encode()


def _compile(name: str) -> str:
    return f"compile({_read(name)!r}, {_filename(name)!r}, 'exec')"


def _filename(name: str) -> str:
    """What tracebacks call the file: probes/remote/gpu.py, or the plugin's path as given."""
    return name if name.endswith(".py") else f"probes/remote/{name}.py"


def _read(name: str) -> str:
    if name.endswith(".py"):
        return Path(name).read_text(encoding="utf-8")
    return (resources.files("probes") / "remote" / f"{name}.py").read_text(encoding="utf-8")
