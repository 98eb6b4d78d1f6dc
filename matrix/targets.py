"""Where probes run. `local` runs subprocesses here; SSH hosts plug in behind the same `run`.

Every subprocess starts in its own session so a timeout or Ctrl-C can kill the whole process
group: a probe never leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from matrix.probe import ProbeError

if TYPE_CHECKING:
    from matrix.plan import TargetRef

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


class Target(Protocol):
    """One place probes run: `local` or one SSH host."""

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


@dataclass
class LocalTarget:
    """The machine running matrix (also reachable as `controller`)."""

    name: str = "local"
    host: str = "localhost"
    group: str = "local"
    python: str = sys.executable

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        started = time.perf_counter()
        try:
            proc = await anyio.open_process(
                list(argv),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **env} if env else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProbeError(f"cannot start {argv[0]} on {self.name}: {exc.strerror}") from None
        out, err = bytearray(), bytearray()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_drain, proc.stderr, err)
                if input is not None and proc.stdin is not None:
                    tg.start_soon(_feed, proc.stdin, input)
                await _drain(proc.stdout, out)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with anyio.CancelScope(shield=True):
                    await _reap(proc)
        return Completed.captured(code, out, err, time.perf_counter() - started)


async def _drain(stream: ByteReceiveStream | None, sink: bytearray) -> None:
    """Read a stream to its end, keeping at most one byte past OUTPUT_LIMIT."""
    if stream is None:
        return
    async for chunk in stream:
        keep(sink, chunk)


def keep(sink: bytearray, chunk: bytes) -> None:
    """Append up to one byte past OUTPUT_LIMIT (that byte flags the cut); drop the rest so a
    chatty probe cannot fill memory."""
    if len(sink) <= OUTPUT_LIMIT:
        sink += chunk[: OUTPUT_LIMIT + 1 - len(sink)]


async def _reap(proc: Process) -> None:
    """Kill the whole group and read its pipes to the end: asyncio closes a subprocess
    transport only once both pipes hit EOF, and one left open when the loop shuts down
    (Ctrl-C) prints a traceback from its __del__."""
    _kill_group(proc.pid)
    with anyio.move_on_after(2):  # a grandchild that left the group may hold a pipe open
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await _drain(stream, bytearray())
    await proc.wait()


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    async with stream:
        await stream.send(data)


@contextmanager
def fast_child_watcher() -> Iterator[None]:
    """Python 3.11's asyncio reaps every child with a thread of its own; the pidfd watcher
    (the default from 3.12) does not, which makes command-heavy runs ~20% faster
    (bench/RESULTS.md). Call inside the running loop; the previous watcher comes back after."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
        if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
            raise RuntimeError("not needed")
        os.close(os.pidfd_open(os.getpid()))
    except (RuntimeError, OSError):
        yield
        return
    previous = asyncio.get_child_watcher()
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(loop)
    asyncio.set_child_watcher(watcher)
    try:
        yield
    finally:
        asyncio.set_child_watcher(previous)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class TargetPool:
    """One Target per concrete place, created on first use and shared by its tasks."""

    def __init__(self) -> None:
        self._targets: dict[str, Target] = {}

    def get(self, ref: TargetRef) -> Target:
        if ref.name not in self._targets:
            self._targets[ref.name] = self._open(ref)
        return self._targets[ref.name]

    @staticmethod
    def _open(ref: TargetRef) -> Target:
        python = ref.options.python if ref.options and ref.options.python else None
        if ref.via == "local":
            return LocalTarget(ref.name, ref.host, ref.group, python or sys.executable)
        from matrix.ssh import SshTarget

        assert ref.options is not None
        return SshTarget(ref.name, ref.host, ref.group, ref.options, python or "python3")

    async def aclose(self) -> None:
        """Close every connection the run opened (SSH); local targets hold none."""
        for target in self._targets.values():
            close = getattr(target, "aclose", None)
            if close is not None:
                await close()
