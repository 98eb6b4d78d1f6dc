"""matrix/remote.py: the program a target's python runs, run here the way `local` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from matrix.remote import program


def run(source: bytes) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-"], input=source, capture_output=True, check=True)
    return json.loads(done.stdout)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_the_program_is_the_same_bytes_each_time_and_params_change_only_its_last_line():
    plain = program("host")
    assert plain == program("host", ())
    with_params = program("host", params={"token": "s3cr3t"})
    body, _, entry = with_params.rstrip(b"\n").rpartition(b"\n")
    assert plain.startswith(body + b"\n")
    assert b"s3cr3t" in entry and b"s3cr3t" not in body


def test_a_script_imports_the_prelude_and_its_libraries_by_file_stem(tmp_path):
    library = write(
        tmp_path / "_helpers.py",
        "from _prelude import gb\n\n\ndef half_gb(size):\n    return gb(size) / 2\n",
    )
    script = write(
        tmp_path / "probe.py",
        "from _helpers import half_gb\n"
        "from _prelude import ObserveError, by_op\n\n\n"
        "def size(params):\n    return {'half_gb': half_gb(params['bytes']), **params}\n\n\n"
        "def fail(params):\n    raise ObserveError('cannot see it')\n\n\n"
        "observe = by_op({'size': size, 'fail': fail})\n",
    )

    def source(params: dict[str, Any]) -> bytes:
        return program(script, (library,), params)

    facts = run(source({"op": "size", "bytes": 2**31, "token": "t"}))["facts"]
    assert facts == {"half_gb": 1.0, "op": "size", "bytes": 2**31, "token": "t"}
    assert run(source({"op": "fail"})) == {"error": "cannot see it"}
    assert run(source({"op": "other"})) == {
        "error": "unknown op 'other': this script serves fail, size"
    }


def test_the_script_runs_as_main_without_the_bootstraps_names(tmp_path):
    script = write(
        tmp_path / "probe.py",
        "def observe(params):\n"
        "    names = sorted(name for name in globals() if not name.startswith('__'))\n"
        "    return {'name': __name__, 'file': __file__, 'names': names}\n",
    )
    facts = run(program(script))["facts"]
    assert facts == {"name": "__main__", "file": script, "names": ["observe"]}


def test_an_error_names_the_scripts_own_file_and_line(tmp_path):
    script = write(
        tmp_path / "probe.py",
        "import os\n\n\ndef observe(params):\n    return {'size': params['size']}\n",
    )
    assert run(program(script)) == {"error": "KeyError: 'size' (at probe.py:5)"}

    broken = write(tmp_path / "broken.py", "import os\n\nraise RuntimeError('at import')\n")
    done = subprocess.run([sys.executable, "-"], input=program(broken), capture_output=True)
    assert done.returncode == 1
    assert f'File "{broken}", line 3, in <module>' in done.stderr.decode()


def test_the_agent_compiles_a_programs_body_once_and_leaves_other_programs_whole():
    from matrix.transport.agent_remote import split_entry

    first = split_entry(program("host", params={"op": "host.info", "token": "a"}))
    second = split_entry(program("host", params={"op": "host.info", "token": "b"}))
    assert first[0] == second[0] and first[1] != second[1]  # one body, two entry calls
    assert b'"token": "b"' in second[1]
    users = b"import sys\nif len(sys.argv) > 5:\n    print('many')\n"
    assert split_entry(users) == (users, b"")
