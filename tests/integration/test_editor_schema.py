"""`matrix schema` in a real editor back end: yaml-language-server (Red Hat's, the one VS Code,
Neovim and Helix use) driven over LSP on stdio. Completion under `kind:` offers every
registered kind, and a bad param is reported at the line `matrix validate` names."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from required import unavailable

from matrix.probe import registry

VERSION = "1.25.0"  # what CI installs: npm install -g yaml-language-server@1.25.0


def server_argv() -> list[str]:
    """yaml-language-server, from MATRIX_YAMLLS or the PATH; CI requires it
    (MATRIX_REQUIRE_YAMLLS=1), elsewhere the tests skip and say how to get it."""
    found = os.environ.get("MATRIX_YAMLLS") or shutil.which("yaml-language-server")
    if found:
        return [found, "--stdio"]
    why = (
        f"yaml-language-server not found: `npm install -g yaml-language-server@{VERSION}` "
        "(or set MATRIX_YAMLLS to its path)"
    )
    unavailable(why, "MATRIX_REQUIRE_YAMLLS")


class LanguageServer:
    """A minimal LSP client: JSON-RPC messages framed by Content-Length, read on a thread."""

    def __init__(self, argv: list[str], root: Path):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.request("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(),
                                    "capabilities": {}})  # fmt: skip
        self.notify("initialized", {})

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while True:
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            if not line:
                return
            self.inbox.put(json.loads(stream.read(int(headers["content-length"]))))

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self._send({"id": self.next_id, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == self.next_id and "method" not in m)["result"]

    def wait(self, wanted: Any, within: float = 30) -> dict[str, Any]:
        """The next message `wanted` accepts; requests from the server are answered null."""
        while True:
            message = self.inbox.get(timeout=within)
            if "method" in message and "id" in message:
                self._send({"id": message["id"], "result": None})
            elif wanted(message):
                return message

    def open(self, path: Path, text: str) -> None:
        document = {"uri": path.as_uri(), "languageId": "yaml", "version": 1, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": document})

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def editor(cli, tmp_path: Path):
    argv = server_argv()
    schema = tmp_path / "matrix.schema.json"
    schema.write_text(cli("schema").stdout)
    server = LanguageServer(argv, tmp_path)
    yield server, f"# yaml-language-server: $schema={schema.as_uri()}\n"
    server.close()


def test_completion_under_kind_offers_every_registered_kind(editor, tmp_path: Path) -> None:
    server, modeline = editor
    text = modeline + (
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n      - id: c\n"
        "        probe:\n          kind: "
    )
    path = tmp_path / "spec.yaml"
    server.open(path, text)
    last = text.splitlines()[-1]
    where = {"line": text.count("\n"), "character": len(last)}
    found = server.request(
        "textDocument/completion", {"textDocument": {"uri": path.as_uri()}, "position": where}
    )
    items = found["items"] if isinstance(found, dict) else found
    assert sorted(item["label"] for item in items) == sorted(registry())


def test_a_bad_param_is_blamed_at_the_line_validate_names(editor, cli, tmp_path: Path) -> None:
    server, modeline = editor
    body = (
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n      - id: c\n"
        "        probe: {kind: port, host: localhost, prot: 22}\n"
    )
    (tmp_path / "bad.yaml").write_text(body)
    said = cli("validate", "bad.yaml").stderr
    located = re.search(r"bad\.yaml:(\d+):\d+: .*prot", said)
    assert located, said
    path = tmp_path / "editor.yaml"
    server.open(path, modeline + body)
    published = server.wait(
        lambda m: (
            m.get("method") == "textDocument/publishDiagnostics"
            and m["params"]["uri"] == path.as_uri()
            and m["params"]["diagnostics"]
        )
    )
    lines = {d["range"]["start"]["line"] for d in published["params"]["diagnostics"]}
    assert lines == {int(located[1])}  # 0-based in LSP, and the modeline is one line more
    messages = " ".join(d["message"] for d in published["params"]["diagnostics"])
    assert "prot" in messages
