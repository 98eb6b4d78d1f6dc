"""One helper python per SSH host runs all of the host's task processes over one session.

Each SSH session pays the remote login shell's start-up (a .bashrc with pyenv or conda init
costs ~100 ms) and a channel open that counts against the server's MaxSessions; a fleet run
pays that per task. The agent (agent_remote.py, sent on stdin) pays it once per host: tasks
become framed requests on its stdin, each run as its own process group on the host, so a
timeout still kills exactly that task's processes, and the agent (a child subreaper) also
kills what a task left when it ends. bench/RESULTS.md has the measurements.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import shlex
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import anyio

from matrix.errors import ProbeError, TransportError
from matrix.transport.base import OUTPUT_LIMIT, Completed

# SOURCE stays a global of the agent: its keeper runs the same program (agent_remote.keep)
BOOTSTRAP = "import sys; SOURCE = sys.stdin.buffer.read(int(sys.argv[1])); exec(SOURCE)"


def connection_lost(link: str, why: object) -> TransportError:
    """The one wording for a host that went away mid-task, with or without the agent; `link`
    says what was lost, in its transport's words ("the SSH connection to gpu-01", "the Slurm
    step on n1")."""
    return TransportError(f"lost {link}: {why}")


class AgentUnavailable(Exception):
    """The helper did not start (no such python, a restricted shell): use a session per task."""


def command(python: str, source: bytes, marker: bytes, token: str | None = None) -> str:
    """The remote command line that reads the agent's source from stdin and runs it; the agent
    prints `marker` before its first frame (a fresh one per start, so no banner can fake it).
    `token` starts the marks of its tasks (by default its own, made there)."""
    settings = [python, str(OUTPUT_LIMIT), marker.decode(), *([token] if token else [])]
    return shlex.join([python, "-c", BOOTSTRAP, str(len(source)), *settings])


@dataclass
class _Waiting:
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: dict[str, Any] | None = None


@dataclass
class HostAgent:
    """The running helper on one host; `run` is safe to call from many tasks at once."""

    process: Any
    where: str
    marker: bytes
    link: str  # what a lost stream is called, in the transport's words (connection_lost)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _waiting: dict[int, _Waiting] = field(default_factory=dict)
    _lost: str | None = None
    _reader: asyncio.Task[None] | None = None
    _stderr: bytearray = field(default_factory=bytearray)

    @classmethod
    async def start(
        cls,
        connection: Any,
        python: str,
        where: str,
        timeout: float,
        token: str | None = None,
        link: str | None = None,
    ) -> HostAgent:
        source = resources.files(__package__).joinpath("agent_remote.py").read_bytes()
        marker = f"matrix-agent-{secrets.token_hex(8)}".encode()
        argv = command(python, source, marker, token)
        process = await connection.create_process(argv, encoding=None)
        process.stdin.write(source)
        agent = cls(process, where, marker, link or f"the SSH connection to {where}")
        try:
            with anyio.fail_after(timeout):
                await agent._skip_banner()
                await agent._receive()  # its hello: the agent runs
        except Exception as exc:
            process.close()
            why = await _stderr(process) or f"{type(exc).__name__} {exc}".strip()
            raise AgentUnavailable(f"{python} on {where}: {why}") from None
        agent._reader = asyncio.ensure_future(agent._read())
        return agent

    async def _read_stderr(self) -> None:
        """Keep the tail of what the agent itself printed (a traceback names why it died)."""
        while chunk := await self.process.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-4096:]

    async def _skip_banner(self) -> None:
        """Whatever a login shell printed on stdout comes before the agent's marker."""
        await self.process.stdout.readuntil(self.marker)

    async def _receive(self) -> dict[str, Any]:
        head = await self.process.stdout.readexactly(4)
        body = await self.process.stdout.readexactly(struct.unpack(">I", head)[0])
        return json.loads(body)

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        self.process.stdin.write(struct.pack(">I", len(data)) + data)

    async def _read(self) -> None:
        """Hand each reply to its task; when the stream ends, fail every task still waiting."""
        stderr = asyncio.ensure_future(self._read_stderr())
        try:
            while True:
                reply = await self._receive()
                waiting = self._waiting.pop(reply["id"], None)
                if waiting is not None:
                    waiting.reply = reply
                    waiting.done.set()
        except asyncio.IncompleteReadError:
            with anyio.move_on_after(1):
                await stderr
            last = self._stderr.decode(errors="replace").strip().splitlines()[-1:]
            self._lost = f"the session closed{': ' + last[0] if last else ''}"
        except Exception as exc:
            self._lost = str(exc) or type(exc).__name__
        stderr.cancel()
        for waiting in self._waiting.values():
            waiting.done.set()
        self._waiting.clear()

    async def run(
        self, argv: Sequence[str], *, input: bytes | None, env: Mapping[str, str] | None
    ) -> Completed:
        if self._lost is not None:
            raise self._lost_error()
        ident = next(self._ids)
        waiting = self._waiting[ident] = _Waiting()
        started = time.perf_counter()
        self._send(
            {
                "id": ident,
                "argv": list(argv),
                "env": dict(env or {}),
                "input": base64.b64encode(input).decode() if input is not None else None,
            }
        )
        try:
            await waiting.done.wait()
        except BaseException:  # timeout or Ctrl-C: kill the task's process group on the host
            if self._waiting.pop(ident, None) is not None and self._lost is None:
                with contextlib.suppress(Exception):  # the session may be going away
                    self._send({"kill": ident})
            raise
        reply = waiting.reply
        if reply is None:
            raise self._lost_error()
        if "unstarted" in reply:
            raise ProbeError(f"cannot start {argv[0]} on {self.where}: {reply['unstarted']}")
        if "error" in reply:
            raise TransportError(f"{reply['error']} (on {self.where})")
        out, err = (bytearray(base64.b64decode(reply[k])) for k in ("out", "err"))
        return Completed.captured(reply["code"], out, err, time.perf_counter() - started)

    @property
    def lost(self) -> str | None:
        """Why its stream ended, once it has: every task it ran or will run errors."""
        return self._lost

    def _lost_error(self) -> TransportError:
        return connection_lost(self.link, self._lost)

    async def aclose(self) -> None:
        """Close its stdin: the agent kills what it still runs and exits."""
        if self._lost is None:
            with contextlib.suppress(Exception):
                self.process.stdin.write_eof()
        if self._reader is not None:
            with anyio.move_on_after(2), anyio.CancelScope(shield=True):
                await self._reader
        self.process.close()
        with anyio.move_on_after(2), anyio.CancelScope(shield=True):
            await self.process.wait_closed()  # reaped here, not left to the loop's end


async def _stderr(process: Any) -> str:
    """What the failed helper printed on stderr, in one line."""
    with anyio.move_on_after(1):
        text = (await process.stderr.read(4096)).decode(errors="replace")
        return " | ".join(line for line in text.strip().splitlines()[-3:])
    return ""
