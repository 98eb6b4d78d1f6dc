"""The `local` transport: probes run as subprocesses of matrix, on this machine.

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
from typing import Any

import anyio
from anyio.abc import ByteSendStream, Process

from matrix.errors import TransportError
from matrix.transport.base import Completed, TargetRef, drain


def open_target(ref: TargetRef) -> LocalTarget:
    """This machine, with the group's `python:` when a `via: local` group sets one."""
    python = ref.options.python if ref.options and ref.options.python else sys.executable
    return LocalTarget(ref.name, ref.host, ref.group, python)


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
            raise TransportError(f"cannot start {argv[0]} on {self.name}: {exc.strerror}") from None
        out, err = bytearray(), bytearray()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, proc.stderr, err)
                if input is not None and proc.stdin is not None:
                    tg.start_soon(_feed, proc.stdin, input)
                await drain(proc.stdout, out)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with anyio.CancelScope(shield=True):
                    await _reap(proc)
        return Completed.captured(code, out, err, time.perf_counter() - started)

    async def connect(self) -> dict[str, Any]:
        return {"via": "local"}

    async def aclose(self) -> None:
        """Each run's processes are reaped when it ends: nothing is held open."""


async def _reap(proc: Process) -> None:
    """Kill the whole group and read its pipes to the end: asyncio closes a subprocess
    transport only once both pipes hit EOF, and one left open when the loop shuts down
    (Ctrl-C) prints a traceback from its __del__."""
    _kill_group(proc.pid)
    with anyio.move_on_after(2):  # a grandchild that left the group may hold a pipe open
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await drain(stream, bytearray())
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
