"""Round-trip time added to loopback TCP, for fleet benchmarks on one machine.

    python bench/latency.py --rtt 50 2222 2223      # prints {"2222": 40123, "2223": 40124}

A proxy per port listens on a free loopback port and forwards to the given one, holding every
chunk for RTT/2 in each direction, in order: a request and its answer cost one RTT more, as
across a network. Bandwidth is not limited. This kernel has no `tc netem` (sch_netem is not
built), and a proxy needs no root: `delayed()` runs one in its own process, so its CPU is not
the measured tool's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float):
    """Copy one direction, each chunk delivered `delay` s after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def take() -> None:
        while chunk := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, chunk))
        queue.put_nowait((loop.time() + delay, b""))

    async def give() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    with contextlib.suppress(OSError):
        await asyncio.gather(take(), give())


async def _serve(ports: list[int], rtt_ms: float) -> None:
    delay = rtt_ms / 2000

    def forward(port: int):
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(
                _carry(reader, upstream_writer, delay), _carry(upstream_reader, writer, delay)
            )
            for end in (writer, upstream_writer):
                end.close()

        return connection

    servers = {port: await asyncio.start_server(forward(port), "127.0.0.1", 0) for port in ports}
    mapping = {port: s.sockets[0].getsockname()[1] for port, s in servers.items()}
    print(json.dumps(mapping), flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def delayed(ports: list[int], rtt_ms: float) -> Iterator[dict[int, int]]:
    """Proxies for `ports` with `rtt_ms` added, in a process of their own: {port: proxy port}.
    With rtt_ms 0 the ports are used as they are."""
    if not rtt_ms:
        yield {port: port for port in ports}
        return
    argv = [sys.executable, str(Path(__file__).resolve()), "--rtt", str(rtt_ms), *map(str, ports)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield {int(k): v for k, v in json.loads(proc.stdout.readline()).items()}
    finally:
        proc.kill()
        proc.wait()


def measured_rtt(port: int) -> float:
    """Milliseconds to connect through a proxy port: one round trip, for a sanity check."""
    import time

    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.recv(1)  # sshd's banner: the connect reached the server and its answer came back
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, required=True, help="milliseconds to add")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.ports, args.rtt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
