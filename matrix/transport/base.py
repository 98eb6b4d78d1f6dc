"""What every transport shares: the Target protocol, a planned place (TargetRef), the captured
output of a command, and host-spec parsing. A leaf of the transport room: no transport here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from matrix.spec.models import TargetSpec

OUTPUT_LIMIT = 1 << 20  # bytes kept per stream; the rest is drained and counted


@dataclass(frozen=True)
class Completed:
    """What a command did on a target."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float
    truncated: bool = False

    @classmethod
    def captured(cls, code: int, out: bytearray, err: bytearray, duration: float) -> Completed:
        """From streams drained with one byte to spare past OUTPUT_LIMIT: that byte flags
        the cut."""
        truncated = len(out) > OUTPUT_LIMIT or len(err) > OUTPUT_LIMIT
        return cls(code, bytes(out[:OUTPUT_LIMIT]), bytes(err[:OUTPUT_LIMIT]), duration, truncated)


def keep(sink: bytearray, chunk: bytes) -> None:
    """Append up to one byte past OUTPUT_LIMIT (that byte flags the cut); drop the rest so a
    chatty probe cannot fill memory."""
    if len(sink) <= OUTPUT_LIMIT:
        sink += chunk[: OUTPUT_LIMIT + 1 - len(sink)]


async def drain(chunks: AsyncIterable[bytes], sink: bytearray) -> None:
    """Read a stream to its end, keeping at most one byte past OUTPUT_LIMIT."""
    async for chunk in chunks:
        keep(sink, chunk)


class Target(Protocol):
    """One place probes run: `local` or one remote host."""

    name: str
    host: str
    group: str
    python: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed: ...

    async def connect(self) -> dict[str, Any]:
        """Reach the place once (log in, start its helper) and return the facts of that
        connection; every later `run` reuses it. Raises TransportError when unreachable."""
        ...

    async def aclose(self) -> None:
        """Release what `connect` opened; nothing is left running on the place."""
        ...


@dataclass(frozen=True)
class TargetRef:
    """One concrete place a task runs, as planned: `local` or one host of a group."""

    name: str
    host: str
    group: str
    via: str = "local"
    options: TargetSpec | None = None


LOCAL = TargetRef("local", "localhost", "local")
LOCAL_NAMES = ("local", "controller")

_HOST_PORT = re.compile(r"^\[(?P<v6>[^\]]+)\]:(?P<port6>\d+)$|^(?P<host>[^:\[\]]+):(?P<port>\d+)$")
_RANGE = re.compile(r"\[(\d+)-(\d+)\]")


def split_host(address: str) -> tuple[str, int | None]:
    """`gpu-01:2222` → ('gpu-01', 2222); `[::1]:22` → ('::1', 22); `gpu-01` → ('gpu-01', None)."""
    found = _HOST_PORT.match(address)
    if not found:
        return address.strip("[]"), None
    if found["v6"]:
        return found["v6"], int(found["port6"])
    return found["host"], int(found["port"])


def expand_hosts(pattern: str) -> list[str]:
    """`gpu-[01-16]` → gpu-01 … gpu-16 (zero padding kept); ranges may repeat."""
    found = _RANGE.search(pattern)
    if not found:
        return [pattern] if pattern else []
    first, last = found[1], found[2]
    width = len(first) if first.startswith("0") else 0
    head, tail = pattern[: found.start()], pattern[found.end() :]
    return [
        host
        for number in range(int(first), int(last) + 1)
        for host in expand_hosts(f"{head}{number:0{width}d}{tail}")
    ]
