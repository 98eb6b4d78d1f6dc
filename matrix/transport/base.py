"""What every transport shares: the Target protocol, a planned place (TargetRef), the captured
output of a command, and host-spec parsing. A leaf of the transport room: no transport here.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from matrix.remote import OUTPUT_LIMIT
from matrix.spec.models import TargetSpec


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


@dataclass(frozen=True)
class Step:
    """What one launch across several hosts did (a Slurm job step): each task's stdout, in
    task order, and the launcher's own exit, stderr and time."""

    outputs: list[bytes]
    launcher: Completed


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
# a bracket of numbers and ranges, Slurm's hostlist syntax: [1-3], [01-16], [1-3,7,10-12]
_RANGE = re.compile(r"\[(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)\]")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f.%:\w-]*:[0-9A-Fa-f.%:\w-]*\](?::\d+)?$")
_TOP_COMMA = re.compile(r",(?![^\[]*\])")  # a comma outside brackets


def split_host(address: str) -> tuple[str, int | None]:
    """`gpu-01:2222` → ('gpu-01', 2222); `[::1]:22` → ('::1', 22); `gpu-01` → ('gpu-01', None)."""
    found = _HOST_PORT.match(address)
    if not found:
        return address.strip("[]"), None
    if found["v6"]:
        return found["v6"], int(found["port6"])
    return found["host"], int(found["port"])


MANY_HOSTS = 10**18  # host_count saturates here: the count only has to be shown and compared


def host_count(pattern: str) -> int:
    """How many hosts a pattern names, counted without listing them (at most MANY_HOSTS), so
    `h[0-99999999]` can be refused before it fills memory."""
    count = 1
    for bracket in _RANGE.findall(pattern):
        numbers = 0
        for item in bracket.split(","):
            first, _, last = item.partition("-")
            if max(len(first), len(last)) > len(str(MANY_HOSTS)):
                return MANY_HOSTS
            numbers += max(0, int(last or first) - int(first) + 1)
        count = min(count * numbers, MANY_HOSTS)
    return count if pattern else 0


def expand_hosts(pattern: str) -> list[str]:
    """`gpu-[01-16]` → gpu-01 … gpu-16 (zero padding kept), `n[1-3,7]` → n1 n2 n3 n7; brackets
    may repeat, the first varying slowest. Iterative, so a pattern of a thousand brackets is
    no deeper than one; check `host_count` first."""
    if not pattern:
        return []
    parts = _RANGE.split(pattern)  # text, bracket, text, bracket, …, text
    numbers = [_numbered(bracket) for bracket in parts[1::2]]
    return [
        "".join(text + number for text, number in zip(parts[0::2], (*combo, "")))
        for combo in itertools.product(*numbers)
    ]


def hostlist_problem(pattern: str) -> str | None:
    """What is wrong with a host pattern's brackets, said so a person can fix it, or None: a
    bracket never closed or never opened, one that is not numbers and ranges, a range that
    runs backwards. (`[::1]:22`, an IPv6 address, is not a range.)"""
    if _IPV6.match(pattern):
        return None
    opened = None
    for at, char in enumerate(pattern):
        if char == "[" and opened is not None:
            return f"host pattern {pattern!r} opens a bracket inside another (at {at + 1})"
        if char == "]" and opened is None:
            return f"host pattern {pattern!r} closes a bracket it never opened (at {at + 1})"
        opened = at if char == "[" else None if char == "]" else opened
    if opened is not None:
        return (
            f"host pattern {pattern!r} opens a bracket it never closes (at {opened + 1}): "
            "close it, as in n[1-3]"
        )
    for bracket in _BRACKET.findall(pattern):
        if not _RANGE.fullmatch(f"[{bracket}]"):
            return (
                f"host pattern {pattern!r} has [{bracket}], not a list of numbers and ranges: "
                "write them like [1-3,7,10-12]"
            )
        for item in bracket.split(","):
            first, _, last = item.partition("-")
            if last and int(last) < int(first):
                return (
                    f"host pattern {pattern!r} has the range {item}, which runs backwards: "
                    f"write {last}-{first}"
                )
    return None


def split_hostlist(text: str) -> list[str]:
    """A Slurm hostlist's patterns: `n[1-3],gpu7` → ['n[1-3]', 'gpu7'] (commas in brackets
    stay)."""
    return [part.strip() for part in _TOP_COMMA.split(text) if part.strip()]


def _numbered(bracket: str) -> list[str]:
    """The numbers of one bracket as written: `01` pads to two digits, `1` does not pad."""
    found = []
    for item in bracket.split(","):
        first, _, last = item.partition("-")
        width = len(first) if first.startswith("0") else 0
        found += [f"{n:0{width}d}" for n in range(int(first), int(last or first) + 1)]
    return found
