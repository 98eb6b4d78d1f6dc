"""matrix/remote.py: the program a target's python runs, run here both ways a target runs
it: `python -` with the program on stdin, and forked by the host agent (agent_remote.py)."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.remote import program
from matrix.transport import agent_remote
from matrix.transport.agent import command

Done = tuple[int, bytes, bytes]  # exit code, stdout, stderr


class Agent:
    """The host agent started here the way agent.py starts it over SSH, serving requests."""

    def __init__(self) -> None:
        source = Path(agent_remote.__file__).read_bytes()
        argv = ["sh", "-c", command(sys.executable, source, b"matrix-agent-test")]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.process.stdin.write(source)
        self.ids = itertools.count()
        assert self.process.stdout.read(17) == b"matrix-agent-test"
        assert "pid" in self._receive()

    def _receive(self) -> dict[str, Any]:
        (size,) = struct.unpack(">I", self.process.stdout.read(4))
        return json.loads(self.process.stdout.read(size))

    def run(self, source: bytes) -> Done:
        request = {"id": next(self.ids), "argv": [sys.executable, "-"], "env": {}}
        data = json.dumps({**request, "input": base64.b64encode(source).decode()}).encode()
        self.process.stdin.write(struct.pack(">I", len(data)) + data)
        self.process.stdin.flush()
        reply = self._receive()
        return reply["code"], base64.b64decode(reply["out"]), base64.b64decode(reply["err"])

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=10) == 0


def python_stdin(source: bytes) -> Done:
    done = subprocess.run([sys.executable, "-"], input=source, capture_output=True)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(params=["python -", "agent"])
def runs(request: pytest.FixtureRequest) -> Iterator[Callable[[bytes], Done]]:
    """Each test runs its programs both ways; through the agent, twice each, so the second
    run is a fork served from what the agent compiled for the first."""
    if request.param == "python -":
        yield python_stdin
        return
    agent = Agent()

    def twice(source: bytes) -> Done:
        first = agent.run(source)
        assert agent.run(source) == first
        return first

    yield twice
    agent.close()


@pytest.fixture
def run(runs: Callable[[bytes], Done]) -> Callable[[bytes], dict[str, Any]]:
    def reply(source: bytes) -> dict[str, Any]:
        code, out, err = runs(source)
        answer = json.loads(out)
        assert code == (1 if "error" in answer else 0), err.decode()  # an error exits 1
        return answer

    return reply


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


def test_a_script_imports_the_prelude_and_its_libraries_by_file_stem(tmp_path, run):
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


def test_the_script_runs_as_main_without_the_bootstraps_names(tmp_path, run):
    script = write(
        tmp_path / "probe.py",
        "def observe(params):\n"
        "    names = sorted(name for name in globals() if not name.startswith('__'))\n"
        "    return {'name': __name__, 'file': __file__, 'names': names}\n",
    )
    facts = run(program(script))["facts"]
    assert facts == {"name": "__main__", "file": script, "names": ["observe"]}


def test_an_error_names_the_scripts_own_file_and_line(tmp_path, run, runs):
    script = write(
        tmp_path / "probe.py",
        "import os\n\n\ndef observe(params):\n    return {'size': params['size']}\n",
    )
    assert run(program(script)) == {"error": "KeyError: 'size' (at probe.py:5)"}

    broken = write(tmp_path / "broken.py", "import os\n\nraise RuntimeError('at import')\n")
    code, _, err = runs(program(broken))
    assert code == 1
    assert f'File "{broken}", line 3, in <module>' in err.decode()


def test_the_agent_compiles_a_programs_body_once_and_leaves_other_programs_whole():
    from matrix.transport.agent_remote import split_entry

    first = split_entry(program("host", params={"op": "host.info", "token": "a"}))
    second = split_entry(program("host", params={"op": "host.info", "token": "b"}))
    assert first[0] == second[0] and first[1] != second[1]  # one body, two entry calls
    assert b'"token": "b"' in second[1]
    users = b"import sys\nif len(sys.argv) > 5:\n    print('many')\n"
    assert split_entry(users) == (users, b"")


def test_the_agent_finds_every_source_a_program_compiles_without_running_it(tmp_path):
    library = write(tmp_path / "_lib.py", "VALUE = 1\n")
    script = write(tmp_path / "probe.py", "raise SystemExit('never run here')\n")
    body, _ = agent_remote.split_entry(program(script, (library,), {"a": 1}))
    found = list(agent_remote.literal_compiles(body))
    assert [(filename, mode) for _, filename, mode in found] == [
        ("probes/remote/_prelude.py", "exec"),
        (library, "exec"),
        (script, "exec"),
    ]
    assert found[2][0] == Path(script).read_text()


def test_a_forked_script_gets_the_agents_code_for_known_sources_and_compiles_the_rest():
    source, filename = "x = 1\n", "probes/remote/known.py"
    agent_remote._sources[(source, filename, "exec")] = known = compile(source, filename, "exec")
    try:
        assert agent_remote.compile_known(source, filename, "exec") is known
        other = agent_remote.compile_known("x = 2\n", filename, "exec")
        assert other is not known and other.co_filename == filename
        expression = agent_remote.compile_known("1 + 1", "<e>", "eval")
        assert eval(expression) == 2
    finally:
        agent_remote._sources.clear()
