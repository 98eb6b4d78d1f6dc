"""Stand-ins for trying examples/web-service/spec.yaml on a laptop: the orders API's /health
and /ready on 127.0.0.1, and a socket listening where PostgreSQL would (the `port` probe only
asks whether something accepts TCP connections there).

    python examples/web-service/standin.py                      # :8080 and :5432
    python examples/web-service/standin.py --http-port 8081 --db-port 15432

Stop it with Ctrl-C. Loopback only; it is not a database and answers nothing on that port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path in ("/health", "/ready")
        body = json.dumps({"status": "ok" if found else "not found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--db-port", type=int, default=5432)
    args = parser.parse_args()
    with (
        socket.create_server(("127.0.0.1", args.db_port)) as database,
        ThreadingHTTPServer(("127.0.0.1", args.http_port), Health) as server,
    ):
        print(
            f"serving /health and /ready on http://127.0.0.1:{args.http_port}, "
            f"a database stand-in on 127.0.0.1:{database.getsockname()[1]} (Ctrl-C stops)",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
