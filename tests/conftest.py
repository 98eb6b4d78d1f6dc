"""Shared fixtures: write a spec from YAML text, load/plan/run it, run the CLI as a user does,
and a real AWS endpoint (moto's server) for the AWS probes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from moto_server import MotoServer

from matrix.engine import Options, execute
from matrix.plan import Filters, Plan, build_plan
from matrix.results import Result, Run
from matrix.spec.load import load

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(yaml_text, name="spec.yaml") → path of the written file (dedented)."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


def plan_of(
    path: Path,
    *,
    filters: Filters | None = None,
    environ: Mapping[str, str] | None = None,
    **load_options: Any,
) -> Plan:
    return build_plan(load(path, **load_options), filters, environ)


def run_plan(plan: Plan, **options: Any) -> Run:
    """Execute a plan for real (no signal handling: pytest owns the signals)."""
    return anyio.run(execute, plan, Options(handle_signals=False, **options))


def results_by_id(run: Run) -> dict[str, Result]:
    return {r.task_id: r for r in run.results}


@pytest.fixture
def plan_spec(write_spec: Callable[..., Path]) -> Callable[..., Plan]:
    """plan_spec(yaml_text, filters=None, environ=None, **load_options) → Plan."""

    def plan(text: str, **options: Any) -> Plan:
        return plan_of(write_spec(text), **options)

    return plan


@pytest.fixture
def run_spec(write_spec: Callable[..., Path]) -> Callable[..., Run]:
    """run_spec(yaml_text, environ=None, **engine_options) → the finished Run."""

    def run(text: str, *, environ: Mapping[str, str] | None = None, **options: Any) -> Run:
        return run_plan(plan_of(write_spec(text), environ=environ), **options)

    return run


@pytest.fixture
def by_id() -> Callable[[Run], dict[str, Result]]:
    return results_by_id


class Cli:
    """`python -m matrix ...` in tmp_path, the way a user runs it."""

    def __init__(self, cwd: Path, limit: float = math.inf):
        self.cwd = cwd
        self.limit = limit  # the test's own pytest-timeout: a run must be given less

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
        env.update(extra or {})
        return env

    def __call__(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if timeout >= self.limit:
            pytest.fail(
                f"this run may take {timeout:g}s but pytest-timeout stops the test at "
                f"{self.limit:g}s: mark the test @pytest.mark.timeout(...) above {timeout:g}",
                pytrace=False,
            )
        return subprocess.run(
            [sys.executable, "-m", "matrix", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env(env),
            timeout=timeout,
        )

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "matrix", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env(env),
        )


def time_limit(node: pytest.Item) -> float:
    """The limit pytest-timeout holds a test to: its `timeout` mark, else the ini value."""
    marker = node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(node.config.getini("timeout") or 0) or math.inf


@pytest.fixture
def cli(tmp_path: Path, request: pytest.FixtureRequest) -> Cli:
    return Cli(tmp_path, time_limit(request.node))


@pytest.fixture
def report() -> Callable[[Path], dict[str, Any]]:
    """report(path) → the JSON report, with `by_id` added: {task_id: result dict}."""

    def read(path: Path) -> dict[str, Any]:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["by_id"] = {r["task_id"]: r for r in data["results"]}
        return data

    return read


@pytest.fixture
def live_processes() -> Callable[[str], list[str]]:
    return live_commands


def live_commands(needle: str) -> list[str]:
    """Command lines of live (non-zombie) processes containing `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.fixture
def spec_problems(write_spec: Callable[..., Path]) -> Callable[..., list[Any]]:
    """spec_problems(yaml_text, **load_options) → the Problems load + build_plan raised."""
    from matrix.spec.problems import SpecInvalid

    def problems(text: str, *, environ: Mapping[str, str] | None = None, **options: Any):
        path = write_spec(text)
        with pytest.raises(SpecInvalid) as info:
            plan_of(path, environ=environ, **options)
        return info.value.problems

    return problems


@pytest.fixture
def execute_plan() -> Callable[..., Run]:
    """execute_plan(plan, **engine_options) → the finished Run."""
    return run_plan


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    pytest.importorskip("aioboto3", reason="AWS probe tests need the aws extra")
    server = MotoServer()
    yield server
    server.close()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A fresh moto (no buckets, IAM checks off); this process signs as the test key, with
    no trace of the developer's own AWS settings."""
    moto_server.reset()
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in moto_server.credentials().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return moto_server


@pytest.fixture
def loaded_machine() -> Iterator[None]:
    """Every core busy with a competing process, as on a shared CI runner."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
