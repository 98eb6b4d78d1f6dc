"""Real HTTP servers on 127.0.0.1 for probes that talk HTTP: in a thread (webhooks, slow
endpoints: subclass `Handler`, answer with `reply`, serve with `serving`), or scripts in
processes of their own (`script_servers`)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Handler(BaseHTTPRequestHandler):
    """A quiet handler (no request log on stderr) with a one-call answer."""

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[Handler]) -> Iterator[str]:
    """The server's base URL while inside, e.g. http://127.0.0.1:41234."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# What every script server ends with: its `Handler` served quietly on a free port; its pid
# and then that port written to the files its last argument names.
SERVE = """
import http.server, os, sys
Handler.log_message = lambda *args: None
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[-1] + ".pid", "w").write(str(os.getpid()))
open(sys.argv[-1], "w").write(str(server.server_address[1]))
server.serve_forever()
"""


PREFORK = Path(__file__).with_name("prefork_server.py")


class ScriptServers:
    """Servers that are python scripts in processes of their own (so a probe can watch their
    memory, and they can die): `start(script, *args)` runs `script`, which defines an HTTP
    `Handler`, with `args` in sys.argv, serves it on a free port and returns (the port, the
    file holding its pid). `prefork(*args)` starts tests/prefork_server.py, a master with
    worker processes, likewise. `stop()` ends them all, workers too."""

    def __init__(self, root: Path) -> None:
        self.root, self.started = root, []

    def start(self, script: str, *args: object) -> tuple[int, Path]:
        return self._launch([sys.executable, "-c", script + SERVE, *map(str, args)])

    def prefork(self, *args: object) -> tuple[int, Path]:
        return self._launch([sys.executable, str(PREFORK), *map(str, args)])

    def _launch(self, argv: list[str]) -> tuple[int, Path]:
        port_file = self.root / f"server{len(self.started)}.port"
        argv.append(str(port_file))
        self.started.append(subprocess.Popen(argv))
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            assert self.started[-1].poll() is None, f"the test server exited: {argv[2:]}"
            assert time.monotonic() < deadline, "the test server did not start in 20 s"
            time.sleep(0.02)
        return int(port_file.read_text()), Path(f"{port_file}.pid")

    def stop(self) -> None:
        for process in self.started:
            process.terminate()  # a pre-fork master kills its workers on SIGTERM
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def script_servers(root: Path) -> Iterator[ScriptServers]:
    servers = ScriptServers(root)
    try:
        yield servers
    finally:
        servers.stop()
