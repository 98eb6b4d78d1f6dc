"""A real pre-fork HTTP model server for the serving probes' tests: a master binds the port
and forks `--workers` processes that accept on it (the gunicorn/uvicorn --workers model), so
a probe must watch the whole process tree to see a worker's memory.

    python tests/prefork_server.py --workers 2 --leak 1048576 --tail 0.02:0.5 RUN_FILE

Modes: `--leak BYTES` kept by a worker per request; `--tail SHARE:SECONDS` that share of the
requests sleeps (every 50th for 0.02, counted across the workers); `--downstream URL` the
next hop each predict calls (passing the trace on, unless `--no-propagate`). Paths:
/v1/predict, /loop (redirects to itself), /file (redirects to file:///etc/passwd), /hop
(redirects to /v1/predict), /big (1.5 MB), /endless (a chunked body that never ends),
/headers (90 headers of 16 KiB), /metrics (`--metrics-lines` samples).
The master writes its pid to RUN_FILE.pid, then its port to RUN_FILE.
"""

from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

KEPT: list[bytearray] = []
COUNT = mmap.mmap(-1, 8)  # requests served by all workers: shared across the fork
LOCK = multiprocessing.Lock()
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})")


class Handler(BaseHTTPRequestHandler):
    options: argparse.Namespace

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        redirects = {"/loop": "/loop", "/file": "file:///etc/passwd", "/hop": "/v1/predict"}
        if path in redirects:
            self._send(302, b"", {"Location": redirects[path]})
        elif path == "/big":
            self._send(200, b"x" * 1_500_000, {"Content-Type": "text/plain"})
        elif path == "/endless":
            self._endless()
        elif path == "/headers":
            self._send(200, b"ok", {f"X-Big-{i}": "h" * (16 << 10) for i in range(90)})
        elif path == "/metrics":
            self._send(200, _metrics(self.options.metrics_lines), {"Content-Type": "text/plain"})
        else:
            self._predict()

    def _predict(self) -> None:
        options = self.options
        if options.leak:
            KEPT.append(bytearray(os.urandom(64)) * (options.leak // 64))
        share, seconds = options.tail
        with LOCK:
            count = int.from_bytes(COUNT[:8], "little") + 1
            COUNT[:8] = count.to_bytes(8, "little")
        if share and count % round(1 / share) == 0:  # exactly that share, across workers
            time.sleep(seconds)
        headers = {"Content-Type": "application/json"}
        found = TRACEPARENT.fullmatch(self.headers.get("traceparent", ""))
        if found:
            ours = f"00-{found[1]}-{os.urandom(8).hex()}-{found[2]}"
            headers["traceparent"] = ours
            if options.downstream:
                carried = {"traceparent": ours} if options.propagate else {}
                request = urllib.request.Request(options.downstream, headers=carried)
                urllib.request.urlopen(request, timeout=5).read()
        self._send(200, json.dumps({"outputs": "hi", "worker": os.getpid()}).encode(), headers)

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"y" * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            return


def _metrics(lines: int) -> bytes:
    """A page of `lines` samples, in families of 100: counters with HELP and TYPE."""
    out = []
    for family in range(-(-lines // 100)):
        name = f"app_requests_{family}_total"
        out += [f"# HELP {name} Requests of shard {family}.", f"# TYPE {name} counter"]
        out += [
            f'{name}{{route="/r{i}",code="200"}} {i}' for i in range(min(100, lines - family * 100))
        ]
    out += [
        "# HELP request_latency_seconds Request latency.",
        "# TYPE request_latency_seconds histogram",
        'request_latency_seconds_bucket{le="+Inf"} 3',
        "request_latency_seconds_count 3",
        "request_latency_seconds_sum 0.5",
    ]
    return ("\n".join(out) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--leak", type=int, default=0)
    parser.add_argument("--tail", default="0:0")
    parser.add_argument("--downstream", default="")
    parser.add_argument("--no-propagate", dest="propagate", action="store_false")
    parser.add_argument("--metrics-lines", type=int, default=10)
    parser.add_argument("run_file")
    options = parser.parse_args()
    share, _, seconds = options.tail.partition(":")
    options.tail = (float(share), float(seconds))
    Handler.options = options
    server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.server_bind()
    server.server_activate()
    workers = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            server.serve_forever()
            os._exit(0)
        workers.append(pid)

    def stop(*_: object) -> None:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(options.run_file + ".pid", "w") as handle:
        handle.write(str(os.getpid()))
    with open(options.run_file, "w") as handle:
        handle.write(str(server.server_address[1]))
    while True:
        os.wait()


if __name__ == "__main__":
    main()
