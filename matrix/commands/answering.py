"""The HTTP side of `matrix serve`: GET and HEAD of a few paths, answered from a callback,
on one asyncio loop in a thread of its own.

Not http.server: its thread per connection and per-read timeouts let a slowloris client
(a byte every few seconds, 1,500 sockets) grow threads without bound. Here a connection
costs a coroutine, must send its whole request head within REQUEST_SECONDS, and past
MAX_READING connections still sending theirs the oldest is dropped: a client that sends its
request at once — a scrape, a load balancer's probe — is always answered.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from email.utils import formatdate

Answer = Callable[[str], tuple[int, str, bytes]]
"""path → (status, content type, body)."""

REQUEST_SECONDS = 10.0  # to send the request line and headers
WRITE_SECONDS = 10.0  # to take the answer
MAX_HEAD = 16 * 1024  # bytes of request line and headers
MAX_READING = 256  # connections still sending their request head
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class Answering:
    """Listens on `address` from construction (so a port in use is known at once, as an
    OSError) and answers once `start` is called, until `close`."""

    def __init__(self, address: tuple[str, int], answer: Answer):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._socket = socket.create_server(address, family=family, backlog=1024)
        self.port: int = self._socket.getsockname()[1]
        self._answer = answer
        self._reading: dict[asyncio.Task, None] = {}  # oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="matrix-serve-http", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def close(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=5)
        self._socket.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._socket, limit=MAX_HEAD)
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        task = asyncio.current_task()
        assert task is not None
        if len(self._reading) >= MAX_READING:  # drop the slowest sender: the oldest one
            oldest = next(iter(self._reading))
            del self._reading[oldest]
            oldest.cancel()
        self._reading[task] = None
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                method, path = await _head(reader)
            self._reading.pop(task, None)
            status, kind, body = self._reply(method, path)
            async with asyncio.timeout(WRITE_SECONDS):
                writer.write(_response(status, kind, body, method == "HEAD"))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except _Refused as refused:
            writer.write(_response(refused.status, "text/plain", refused.body, False))
        finally:
            self._reading.pop(task, None)
            writer.close()

    def _reply(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            raise _Refused(405, f"matrix serve answers GET and HEAD, not {method}\n")
        return self._answer(path.split("?", 1)[0])


class _Refused(Exception):
    def __init__(self, status: int, text: str):
        self.status, self.body = status, text.encode()


async def _head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of the request; its headers are read and not needed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Refused(431, f"request line and headers over {MAX_HEAD} bytes\n") from None
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise _Refused(400, "expected a request line: GET /healthz HTTP/1.1\n")
    return parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")


def _response(status: int, kind: str, body: bytes, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)
