"""Built-in probe kinds run through the real engine on the local target: real files, sockets,
an HTTP server and the interpreter itself, nothing mocked."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from matrix.engine import execute
from matrix.plan import build_plan
from matrix.results import Result
from matrix.spec.load import load
from matrix.spec.problems import SpecInvalid


def run_checks(
    tmp_path: Path, checks: list[dict[str, Any]], targets: dict[str, Any] | None = None
) -> dict[str, Result]:
    """Write a one-phase spec holding `checks`, run it, return results by check id."""
    spec = {"version": 1, "name": "probes", "targets": targets or {}}
    spec["phases"] = [{"id": "probes", "checks": checks}]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = anyio.run(execute, build_plan(load(path)))
    return {r.check_id: r for r in run.results}


def check(id: str, kind: str, expect: dict[str, Any] | None = None, **params: Any) -> dict:
    row: dict[str, Any] = {"id": id, "probe": {"kind": kind, **params}}
    if expect is not None:
        row["expect"] = expect
    return row


def status(results: dict[str, Result]) -> dict[str, str]:
    return {check_id: r.status.value for check_id, r in results.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ── file, dir, disk ─────────────────────────────────────────────────────────


def test_file_reports_content_hash_and_metadata(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    content = "model: llama\nlr: 0.001\n"
    config.write_text(content)
    config.chmod(0o640)
    (tmp_path / "link.yaml").symlink_to(config)
    digest = hashlib.sha256(config.read_bytes()).hexdigest()

    results = run_checks(
        tmp_path,
        [
            check(
                "hash", "file", {"sha256": digest, "mode": "0640"}, path=str(config), sha256=True
            ),
            check("has", "file", path=str(config), contains=["model: llama", "lr:"]),
            check("lacks", "file", path=str(config), contains=["model: llama", "epochs:"]),
            check("link", "file", path=str(tmp_path / "link.yaml")),
            check("gone", "file", path=str(tmp_path / "gone.yaml")),
            check("dir", "file", path=str(tmp_path), sha256=True),
        ],
    )

    assert status(results) == {
        "hash": "pass",
        "has": "pass",
        "lacks": "fail",
        "link": "pass",
        "gone": "fail",
        "dir": "error",
    }
    facts = results["hash"].facts
    assert facts["size_bytes"] == len(content) and facts["type"] == "file" and facts["readable"]
    assert facts["owner"] and facts["group"] and facts["mtime"] > 0
    assert results["lacks"].facts["contains_missing"] == ["epochs:"]
    assert results["lacks"].reason == "contains_ok is false, expected == true"
    link = results["link"].facts
    assert link["symlink"] and link["type"] == "file" and link["link_target"] == str(config)
    gone = results["gone"].facts
    assert (gone["exists"], gone["type"]) == (False, "missing")
    assert results["gone"].reason == "exists is false, expected == true"
    assert (
        results["dir"].reason == f"{tmp_path} is a dir; `contains` and `sha256` need a regular file"
    )


def test_dir_reports_missing_required_patterns(tmp_path: Path) -> None:
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text('{"v": 1}')
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 100)
    required = ["config.json", "tokenizer.json", "*.safetensors"]

    before = run_checks(
        tmp_path,
        [
            check("model", "dir", path=str(model), required=required),
            check("absent", "dir", path=str(tmp_path / "nope"), required=required),
        ],
    )
    (model / "model-00001.safetensors").symlink_to(blob)  # as in a Hugging Face snapshot
    after = run_checks(tmp_path, [check("model", "dir", path=str(model), required=required)])

    assert status(before) == {"model": "fail", "absent": "fail"}
    assert before["model"].facts["missing"] == ["*.safetensors"]
    assert before["model"].reason == 'missing is ["*.safetensors"], expected length == 0'
    absent = before["absent"].facts
    assert (absent["exists"], absent["is_dir"], absent["missing"]) == (False, False, required)
    assert status(after) == {"model": "pass"}
    facts = after["model"].facts
    assert facts["files"] == ["config.json", "model-00001.safetensors", "tokenizer.json"]
    assert (facts["entries"], facts["total_bytes"]) == (3, 2 + 8 + 100)


def test_disk_reports_space_and_mount(tmp_path: Path) -> None:
    results = run_checks(
        tmp_path,
        [
            check("space", "disk", {"free_gb": {"gt": 0}}, path=str(tmp_path)),
            check("huge", "disk", {"free_gb": {"ge": 10**9}}, path=str(tmp_path)),
            check("unmounted", "disk", path=str(tmp_path / "training")),
        ],
    )

    assert status(results) == {"space": "pass", "huge": "fail", "unmounted": "error"}
    facts = results["space"].facts
    assert 0 < facts["free_gb"] <= facts["total_gb"] and 0 <= facts["used_percent"] <= 100
    assert str(tmp_path.resolve()).startswith(facts["mount"]) and facts["is_mount"] is False
    assert results["huge"].reason == f"free_gb is {facts['free_gb']}, expected >= 1000000000"
    assert results["unmounted"].reason == (
        f"No such directory: {tmp_path / 'training'} — is the volume mounted?"
    )


# ── memory, env ─────────────────────────────────────────────────────────────


def test_memory_reports_ram(tmp_path: Path) -> None:
    results = run_checks(tmp_path, [check("ram", "memory", {"total_gb": {"gt": 0}})])

    assert status(results) == {"ram": "pass"}
    facts = results["ram"].facts
    if "available_gb" in facts:
        assert 0 <= facts["available_gb"] <= facts["total_gb"]
        assert 0 <= facts["used_percent"] <= 100


def test_env_types_ranges_and_presence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MX_BATCH": "32",
        "MX_ZERO": "0",
        "MX_PORT": "abc",
        "MX_DEBUG": "Yes",
        "MX_DIR": str(tmp_path / "models"),
        "MX_MODE": "train",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MX_UNSET", raising=False)

    results = run_checks(
        tmp_path,
        [
            check("batch", "env", name="MX_BATCH", type="int", min=1, max=64),
            check("zero", "env", name="MX_ZERO", type="int", min=1),
            check("port", "env", name="MX_PORT", type="int"),
            check("debug", "env", {"typed": True}, name="MX_DEBUG", type="bool"),
            check("dir", "env", name="MX_DIR", type="path"),
            check("mode", "env", name="MX_MODE", choices=["eval", "serve"]),
            check("unset", "env", name="MX_UNSET"),
            check("optional", "env", name="MX_UNSET", required=False),
        ],
    )

    assert status(results) == {
        "batch": "pass",
        "zero": "fail",
        "port": "fail",
        "debug": "pass",
        "dir": "fail",
        "mode": "fail",
        "unset": "fail",
        "optional": "pass",
    }
    assert results["batch"].facts["typed"] == 32
    problems = {check_id: r.facts["problem"] for check_id, r in results.items()}
    assert problems == {
        "batch": None,
        "zero": "MX_ZERO=0 is below min 1",
        "port": "MX_PORT='abc' is not an int",
        "debug": None,
        "dir": f"MX_DIR={tmp_path / 'models'} does not exist",
        "mode": "MX_MODE='train' is not one of eval, serve",
        "unset": "MX_UNSET is not set",
        "optional": None,
    }
    assert results["unset"].facts["present"] is False


# ── port, http ──────────────────────────────────────────────────────────────


def test_port_open_closed_and_free(tmp_path: Path) -> None:
    closed = free_port()
    with socket.create_server(("127.0.0.1", 0)) as server:
        listening = server.getsockname()[1]
        results = run_checks(
            tmp_path,
            [
                check("open", "port", port=listening),
                check("closed", "port", port=closed, connect_timeout=2),
                check("taken", "port", port=listening, mode="free"),
                check("free", "port", port=closed, mode="free"),
            ],
        )

    assert status(results) == {"open": "pass", "closed": "fail", "taken": "fail", "free": "pass"}
    assert results["open"].facts["open"] is True and results["open"].facts["latency_ms"] >= 0
    assert results["closed"].facts["error"] == "connection refused"
    assert results["taken"].facts["error"] == "address already in use"
    assert results["free"].facts["free"] is True and results["free"].facts["privileged"] is False


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/health":
            self.send_error(404, "Not Found")
            return
        body = json.dumps({"status": "ok", "gpus": 8}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Model", "llama")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_base(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_status_json_and_errors(tmp_path: Path, http_base: str) -> None:
    refused = f"http://127.0.0.1:{free_port()}/"
    results = run_checks(
        tmp_path,
        [
            check(
                "health", "http", {"json.status": "ok", "status": 200}, url=f"{http_base}/health"
            ),
            check("capped", "http", url=f"{http_base}/health", max_bytes=5),
            check("missing", "http", url=f"{http_base}/nope"),
            check("refused", "http", url=refused, timeout=3),
        ],
    )

    assert status(results) == {
        "health": "pass",
        "capped": "pass",
        "missing": "fail",
        "refused": "error",
    }
    health = results["health"].facts
    assert health["json"] == {"status": "ok", "gpus": 8} and health["reason"] == "OK"
    assert health["headers"]["x-model"] == "llama" and health["latency_ms"] >= 0
    capped = results["capped"].facts
    assert (capped["body"], capped["truncated"]) == ('{"sta', True) and "json" not in capped
    assert results["missing"].facts["status"] == 404
    assert results["missing"].reason == "status is 404, expected < 400"
    assert results["refused"].reason == f"GET {refused} failed: connection refused"


# ── script ──────────────────────────────────────────────────────────────────


def test_a_team_script_passes_only_on_the_result_it_reports(tmp_path: Path) -> None:
    def script(id: str, shell: str, expect: dict | None = None) -> dict:
        return check(id, "script", expect, shell=shell)

    results = run_checks(
        tmp_path,
        [
            script("reported", """echo working; echo '{"ok": true, "step": "3/3", "rows": 7}'"""),
            script("says-why", """echo '{"ok": false, "step": "2/3", "problem": "no GPU"}'"""),
            script("true", "true"),
            script("crashed", "echo 'Traceback: KeyError' >&2; exit 3"),
            script("lied", """echo '{"ok": true}'; exit 2"""),
            script("not-json", "echo done"),
            script("own-field", """echo '{"ok": true, "left": ["i-1"]}'""", {"result.left": []}),
        ],
    )

    assert status(results) == {
        "reported": "pass",
        "says-why": "fail",
        "true": "error",
        "crashed": "fail",
        "lied": "fail",
        "not-json": "error",
        "own-field": "fail",
    }
    assert results["reported"].facts["step"] == "3/3"
    assert results["reported"].facts["result"] == {"ok": True, "step": "3/3", "rows": 7}
    assert results["says-why"].reason.startswith("no GPU (ok is false")
    assert results["true"].reason == (
        "the script exited 0 and reported no result: print a JSON object as the last line of "
        'stdout: {"ok": true}, or {"ok": false, "problem": "why"} (docs/probes.md#script)'
    )
    assert results["true"].error_type == "probe-error"
    assert results["crashed"].facts["problem"] == "exit 3: Traceback: KeyError"
    assert results["lied"].facts["problem"] == "it reported ok but exited 2"


# ── python ──────────────────────────────────────────────────────────────────


def test_python_packages_imports_and_version(tmp_path: Path) -> None:
    import pydantic

    results = run_checks(
        tmp_path,
        [
            check("ok", "python", packages=["pydantic>=2", "anyio"], imports=["json", "pydantic"]),
            check("version", "python", {"version": {"version": ">=3.10"}}),
            check("missing", "python", packages=["pydantic", "no-such-dist-mx"]),
            check("old", "python", packages=["pydantic<1"]),
            check("imports", "python", imports=["no_such_module_mx"]),
            check("marker", "python", packages=["no-such-dist-mx; sys_platform == 'nowhere'"]),
        ],
    )

    assert status(results) == {
        "ok": "pass",
        "version": "pass",
        "missing": "fail",
        "old": "fail",
        "imports": "fail",
        "marker": "pass",
    }
    ok = results["ok"].facts
    assert ok["packages"]["pydantic"] == pydantic.VERSION and ok["implementation"] == "cpython"
    assert ok["executable"] and ok["platform"] and ok["machine"] and "markers" not in ok
    assert results["missing"].facts["missing"] == ["no-such-dist-mx"]
    assert results["missing"].facts["packages"]["no-such-dist-mx"] is None
    assert results["old"].facts["unsatisfied"] == [f"pydantic {pydantic.VERSION} (needs <1)"]
    assert results["imports"].facts["import_errors"] == {
        "no_such_module_mx": "ModuleNotFoundError: No module named 'no_such_module_mx'"
    }
    assert results["marker"].facts["packages"] == {}


@cache
def _old_python() -> str | None:
    """The oldest interpreter the remote scripts promise to support, when installed."""
    pyenv = glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python"))
    for found in [shutil.which("python3.8"), *pyenv]:
        if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
            return found
    return None


@pytest.mark.skipif(_old_python() is None, reason="no python3.8 to run the remote scripts with")
def test_remote_scripts_run_on_python38(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    rows = [
        check("file", "file", path=str(tmp_path / "a.txt"), contains="hello", sha256=True),
        check("dir", "dir", path=str(tmp_path), required=["*.txt"]),
        check("disk", "disk", path=str(tmp_path)),
        check("memory", "memory"),
        check("env", "env", name="PATH"),
        check("port", "port", port=free_port(), mode="free"),
        check("python", "python", {"version": {"version": ">=3.8,<3.9"}}, imports=["json"]),
    ]
    targets = {"old": {"via": "local", "python": _old_python()}}
    results = run_checks(tmp_path, [{**row, "on": "old"} for row in rows], targets)

    assert {r.status.value for r in results.values()} == {"pass"}, {
        check_id: r.reason for check_id, r in results.items()
    }


# ── params are validated before anything runs ───────────────────────────────


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("{kind: port, port: 70000}", "less than or equal to 65535"),
        ("{kind: command, argv: [ls], shell: ls}", "exactly one of argv"),
        ("{kind: env, name: X, min: 1}", "min and max need type int or float"),
        ("{kind: python, packages: ['torch>=>2']}", "invalid requirement 'torch>=>2'"),
        ("{kind: http, url: 'localhost:8000'}", "expected an http:// or https:// URL"),
        ("{kind: http, url: 'http://x/', max_bytes: 1500000}", "less than or equal to 131072"),
    ],
)
def test_bad_params_point_at_the_spec_line(tmp_path: Path, probe: str, message: str) -> None:
    spec = tmp_path / "bad-params.yaml"
    spec.write_text(
        "version: 1\nname: bad\nphases:\n  - id: p\n    checks:\n"
        f"      - id: row\n        probe: {probe}\n"
    )

    with pytest.raises(SpecInvalid) as caught:
        build_plan(load(spec))

    text = str(caught.value)
    assert "bad-params.yaml:7:" in text and message in text


def test_failed_expectation_is_explained_by_the_probes_own_problem_fact(tmp_path, monkeypatch):
    monkeypatch.setenv("MX_WORKERS", "abc")
    results = run_checks(tmp_path, [check("workers", "env", name="MX_WORKERS", type="int")])
    reason = results["workers"].reason
    assert reason.startswith("MX_WORKERS='abc' is not an int (")
    assert "valid is false, expected == true" in reason
