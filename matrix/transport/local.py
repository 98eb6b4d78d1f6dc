"""The `local` transport: probes run as subprocesses of matrix, on this machine.

Each probe starts in a session of its own with a mark in its environment. When it ends (exit,
timeout, Ctrl-C) the rest of its process group is killed, and so is every descendant that left
the group: while targets are open matrix is a child subreaper, so such an orphan becomes its
child, known by its session or its mark. The containment code is shared with the SSH agent
(agent_remote.py). Closing the target sweeps what no task could claim.

A remote program that preloads a slow import (torch) goes to a local agent instead, the SSH
hosts' helper run here: it imports torch once and forks each such probe from itself, so a
run pays for torch once, and each probe is still a process of its own, killed and swept
the same way.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import ByteSendStream, Process

from matrix.errors import ProbeError
from matrix.transport.agent import AgentUnavailable, HostAgent
from matrix.transport.agent_remote import (
    MARK,
    Claim,
    boot_ticks,
    end_task,
    kill_strays,
    killpg,
    preloads,
    settle,
    subreaper,
)
from matrix.transport.base import Completed, TargetRef, drain

PIPE_GRACE = 2.0  # seconds a probe's output may still flow once its processes are gone
STRAY_WAIT = 5.0  # seconds to wait for killed strays to die (one in D state can take long)
# Every probe leader of this process still running: a sweep never takes one, since its own
# waiter (asyncio) reaps it, and its number may be one a finished task's kill would reach.
_leaders: set[int] = set()
# Probes being started: until its start returns, a new leader is a child that is not in
# _leaders yet, and looks like a stray in the middle of an exec (no environment to read).
_starting = 0


def open_target(ref: TargetRef, pool: object = None) -> LocalTarget:  # pool: unused here
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
    _token: str = field(default_factory=lambda: secrets.token_hex(8))
    _since: int = field(default_factory=boot_ticks)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    # the environment probes inherit, read once: os.environ decodes each entry on every read,
    # which made up most of the cost of giving each probe its mark
    _environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _agent: HostAgent | None = None
    _agent_lock: anyio.Lock = field(default_factory=anyio.Lock)
    agent_problem: str | None = None  # why the agent could not start: probes run as before

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        if input is not None and list(argv) == [self.python, "-"] and preloads(input):
            agent = await self._warm_agent()
            if agent is not None:
                return await agent.run(argv, input=input, env=env)
        started = time.perf_counter()
        mark = f"{self._token}.{next(self._ids)}."
        proc = await self._start(argv, input, {**self._environ, **(env or {}), MARK: mark})
        claim = Claim([proc.pid], mark)
        out, err = bytearray(), bytearray()
        drained = False
        try:
            drained = await _collect(proc, input, claim, out, err)
        finally:
            if not drained:
                with anyio.CancelScope(shield=True):
                    await _abandon(proc, claim)
        code = proc.returncode if proc.returncode is not None else -1
        return Completed.captured(code, out, err, time.perf_counter() - started)

    async def _start(
        self, argv: Sequence[str], input: bytes | None, env: Mapping[str, str]
    ) -> Process:
        global _starting
        _starting += 1
        try:
            proc = await anyio.open_process(
                list(argv),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProbeError(f"cannot start {argv[0]} on {self.name}: {exc.strerror}") from None
        finally:
            _starting -= 1
        _leaders.add(proc.pid)
        return proc

    async def _warm_agent(self) -> HostAgent | None:
        """The local agent, started by the first program that wants one; None (and the
        reason kept) when it cannot start."""
        async with self._agent_lock:
            if self._agent is None and self.agent_problem is None:
                try:
                    self._agent = await HostAgent.start(
                        Here(f"{self._token}.agent."),
                        self.python,
                        self.name,
                        30,
                        token=f"{self._token}.agent",
                    )
                except AgentUnavailable as exc:
                    self.agent_problem = str(exc)
            return self._agent

    async def connect(self) -> dict[str, Any]:
        return {"via": "local"}

    async def aclose(self) -> None:
        """Close the agent (it ends its probes), then the last sweep: whatever of this
        target's probes is still here (marked, in one of their sessions, or unmarked and
        started while the target was open) is killed."""
        if self._agent is not None:
            await self._agent.aclose()
        claim = Claim((), f"{self._token}.", since=self._since)
        await _settle(claim, kill_strays(claim, _leaders))


class Here:
    """This machine in the place of an SSH connection, to start an agent on: `argv` then
    the agent's command line, in a session of its own, marked `mark` (so that no other
    target's sweep takes it for a stray of its own)."""

    def __init__(self, mark: str, argv: Sequence[str] = ("sh", "-c")) -> None:
        self.mark = mark
        self.argv = list(argv)

    async def create_process(self, command: str, encoding: None = None) -> AgentProcess:
        import asyncio

        pipe = asyncio.subprocess.PIPE
        process = await asyncio.create_subprocess_exec(
            *self.argv, command, stdin=pipe, stdout=pipe, stderr=pipe,
            env={**os.environ, MARK: self.mark}, start_new_session=True,
        )  # fmt: skip
        # asyncio reaps it: no sweep may take it (a zombie's mark cannot be read), until then
        _leaders.add(process.pid)
        waiting = asyncio.ensure_future(process.wait())
        waiting.add_done_callback(lambda _: _leaders.discard(process.pid))
        return AgentProcess(process, waiting)


class AgentProcess:
    """An asyncio subprocess with the shape of asyncssh's: stdin, stdout, stderr, close(),
    wait_closed()."""

    def __init__(self, process: Any, waiting: Any) -> None:
        self.process = process
        self.waiting = waiting  # the task that reaps it, kept alive while it runs
        self.stdin, self.stdout, self.stderr = process.stdin, process.stdout, process.stderr

    def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def wait_closed(self) -> None:
        """Until it is reaped; then its pipes are closed here, as what it left unread would
        otherwise keep them open until the loop's shutdown ('Event loop is closed')."""
        await self.waiting
        transport = getattr(self.process, "_transport", None)
        if transport is not None:
            transport.close()


async def _collect(
    proc: Process, input: bytes | None, claim: Claim, out: bytearray, err: bytearray
) -> bool:
    """Read the probe's output while it runs; once its leader exits, end what it left, so the
    pipes reach their end. True when both did."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, proc.stdout, out)
        tg.start_soon(drain, proc.stderr, err)
        if input is not None and proc.stdin is not None:
            tg.start_soon(_feed, proc.stdin, input)
        await proc.wait()
        await _end(proc.pid, claim)
        # what nothing could claim may still hold a pipe: stop waiting for it
        tg.cancel_scope.deadline = anyio.current_time() + PIPE_GRACE
    return not tg.cancel_scope.cancel_called


async def _abandon(proc: Process, claim: Claim) -> None:
    """A probe cut short (timeout, Ctrl-C) or a pipe still held: kill its group, end what it
    left (again, if that had begun: a sweep that finds nothing costs little), and close the
    pipes, or the loop's shutdown closes them with an 'Event loop is closed' traceback."""
    if proc.returncode is None:
        killpg(proc.pid)
        await proc.wait()
    await _end(proc.pid, claim)
    await proc.aclose()


async def _end(leader: int, claim: Claim) -> None:
    """Kill what a task left once its leader is reaped, and reap it."""
    _leaders.discard(leader)
    await _settle(claim, end_task(leader, claim, _leaders))


async def _settle(claim: Claim, killed: list[int]) -> None:
    """Reap killed strays, sweeping again for their children, on a worker thread (waitpid
    blocks), shielded from cancellation; only when there are some (or a child could not be
    judged yet, while no probe is starting), so the common case costs one read of this
    process's children."""
    if killed or (claim.unsure and not _starting):
        with anyio.CancelScope(shield=True), anyio.move_on_after(STRAY_WAIT):
            await anyio.to_thread.run_sync(
                settle, claim, killed, frozenset(_leaders), abandon_on_cancel=True
            )


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    """Send the input; a program may exit without reading all of it."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        async with stream:
            await stream.send(data)


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the subreaper of its probes' descendants while targets are open; the
    previous setting comes back after, for a program that embeds matrix."""
    previous = subreaper(True)
    try:
        yield
    finally:
        if not previous:
            subreaper(False)


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
