"""The `ssh` transport: one asyncssh connection per host, opened lazily, shared by its tasks.

Without the agent every remote command runs under a small sh wrapper. It first reports its
process group, so a timeout or Ctrl-C can kill the whole remote group from a second channel:
sshd neither kills a non-pty command when its channel closes nor (for root) honours signal
requests. It reads the task's environment from stdin, ahead of the input, so no value shows
in the host's process list. And when the command ends it kills what the command left: the
rest of its group and every process carrying the task's mark in its environment.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from matrix.errors import TransportError
from matrix.spec.models import TargetSpec
from matrix.transport.agent import AgentUnavailable, HostAgent, connection_lost
from matrix.transport.agent_remote import MARK
from matrix.transport.base import Completed, TargetRef, drain, split_host

PGID = "matrix-pgid"
# Kill what is left of group $pg and what carries mark $m (a fresh token per task), found in
# /proc, in rounds until two in a row find nothing: a process may fork while it is found, and
# one in the middle of an exec shows no environment; never this shell or its parent (a login
# shell that did not exec the command is in the group too).
SWEEP = (
    "e=0; for _ in 1 2 3 4 5 6 7 8 9 10 11 12; do k=; "
    f'for f in $(grep -l -e "{MARK}=$m" -e ") [A-Za-z] [0-9][0-9]* $pg " '
    "/proc/[0-9]*/environ /proc/[0-9]*/stat 2>/dev/null); do f=${f#/proc/}; f=${f%%/*}; "
    'case $f in $$|$PPID) ;; *) kill -KILL "$f" 2>/dev/null && k=1 ;; esac; done; '
    'if [ -n "$k" ]; then e=0; else e=$((e + 1)); [ $e -lt 2 ] || break; fi; done'
)
# $1: the mark, $2: bytes of `export` lines on stdin, then argv. Report the process group
# (Linux /proc first, ps elsewhere; "-", which matches no process, when neither answers); in
# a subshell (the task's environment stays out of the wrapper) read the environment, add the
# mark and exec argv; sweep; end as argv ended, re-raising the signal that killed it.
WRAPPER = (
    f'pg=$(cut -d" " -f5 /proc/$$/stat 2>/dev/null || ps -o pgid= -p $$); pg=${{pg##* }}; '
    "case $pg in ''|*[!0-9]*) pg=- ;; esac; "
    f'echo "{PGID} $pg" >&2; '
    '( [ "$2" -gt 0 ] && eval "$(dd bs=1 count="$2" 2>/dev/null)"; '
    f'{MARK}=$1; export {MARK}; shift 2; exec "$@" ); '
    f"s=$?; m=$1; {SWEEP}; "
    "[ $s -gt 128 ] && [ $s -lt 160 ] && kill -$((s - 128)) $$; exit $s"
)
KILL = f'kill -KILL -"$1" 2>/dev/null; pg=$1 m=$2; {SWEEP}'
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CHANNEL_RETRIES = 5
KILL_TIMEOUT = 5.0
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"  # what asyncssh reads when given ()


def remote_command(argv: Sequence[str], mark: str, env_bytes: int) -> str:
    """One shell-safe command line: the wrapper, its mark and the size of the environment it
    reads from stdin, then argv. No environment value is on it."""
    return shlex.join(["sh", "-c", WRAPPER, "sh", mark, str(env_bytes), *argv])


def env_script(env: Mapping[str, str] | None) -> bytes:
    """The task's environment as `export` lines for the wrapper to read from stdin."""
    lines = []
    for key, value in (env or {}).items():
        if not NAME.fullmatch(key):
            raise TransportError(f"cannot pass environment variable {key!r} over SSH")
        lines.append(f"export {key}={shlex.quote(value)}\n")
    return "".join(lines).encode()


def open_target(ref: TargetRef, pool: object = None) -> SshTarget:  # pool: unused here
    """One host of a `via: ssh` group; nothing is opened until its first task."""
    assert ref.options is not None  # every host of a group carries the group's options
    return SshTarget(ref.name, ref.host, ref.group, ref.options, ref.options.python or "python3")


@dataclass
class SshTarget:
    """One SSH host. `connect()` is idempotent and remembers a failure for its tasks."""

    name: str
    host: str
    group: str
    options: TargetSpec
    python: str = "python3"
    connect_seconds: float = 0.0
    agent_problem: str | None = None
    _agent: HostAgent | None = None
    _connection: Any = None
    _hops: list[Any] = field(default_factory=list)
    _failure: TransportError | None = None
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def address(self) -> tuple[str, int | None]:
        host, port = split_host(self.host)
        return host, port or self.options.port

    def describe(self) -> str:
        host, port = self.address
        user = self.options.user or "(ssh config/local user)"
        return f"{user}@{host}" + (f":{port}" if port else "")

    def link(self) -> str:
        """What a lost session is, in messages (agent.connection_lost)."""
        return f"the SSH connection to {self.describe()}"

    async def connect(self) -> dict[str, Any]:
        connection = await self._connected()
        key = connection.get_server_host_key()
        return {
            "via": "ssh",
            "connect_seconds": round(self.connect_seconds, 4),
            "server_version": connection.get_extra_info("server_version"),
            "host_key": key.get_fingerprint() if key is not None else None,
            "agent": self._agent is not None,
            "agent_problem": self.agent_problem,
        }

    async def _connected(self) -> Any:
        """The open connection, made on first use; a failure is remembered for every task."""
        async with self._lock:
            if self._connection is not None and not self._closed():
                return self._connection
            if self._failure is not None:
                raise self._failure
            started = time.perf_counter()
            try:
                self._connection = await self._open()
            except TransportError as exc:
                self._failure = exc
                raise
            self._agent = await self._start_agent(self._connection)
            self.connect_seconds = time.perf_counter() - started
            return self._connection

    async def _start_agent(self, connection: Any) -> HostAgent | None:
        """The host's helper python, or None: tasks then open a session each."""
        if not self.options.agent:
            return None
        try:
            return await HostAgent.start(
                connection, self.python, self.describe(), self.options.connect_timeout,
                link=self.link(),
            )  # fmt: skip
        except AgentUnavailable as exc:
            self.agent_problem = f"{exc}; each task opens its own SSH session instead"
            return None

    def _closed(self) -> bool:
        return self._connection.is_closed()

    async def _open(self) -> Any:
        try:
            import asyncssh
        except ImportError:
            raise TransportError(
                "SSH targets need asyncssh: pip install 'preflight-matrix[ssh]'"
            ) from None

        options = self.options
        common: dict[str, Any] = {
            "known_hosts": None if options.insecure else _known_hosts(options.known_hosts),
            "connect_timeout": options.connect_timeout,
            "login_timeout": options.connect_timeout,
        }
        keys = [
            os.path.expanduser(k) for k in ([options.key] if options.key else []) + options.keys
        ]
        if keys:
            common["client_keys"] = keys
        if options.password:
            common["password"] = options.password
        tunnel: Any = ()
        hop = None
        try:
            # Each ProxyJump hop is opened with this target's keys and known_hosts, then
            # carries the next connection.
            for hop in options.jump:
                user, host, port = _hop(hop)
                tunnel = await asyncssh.connect(
                    host, tunnel=tunnel, **_login(user or options.user, port), **common
                )
                self._hops.append(tunnel)
            hop = None
            host, port = self.address
            return await asyncssh.connect(
                host, tunnel=tunnel, **_login(options.user, port), **common
            )
        except Exception as exc:
            via = f" (at jump host {hop})" if hop else ""
            raise TransportError(f"SSH failed: {self._why(exc)}{via}") from None

    def _why(self, exc: BaseException) -> str:
        import asyncssh

        who = self.describe()
        if isinstance(exc, asyncssh.PermissionDenied):
            return f"auth rejected for {who} ({exc.reason or 'publickey'})"
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            default = os.path.expanduser(DEFAULT_KNOWN_HOSTS)
            if not self.options.known_hosts and not os.path.exists(default):
                return self._no_known_hosts(default)
            return (
                f"host key of {who} is not trusted: {exc.reason} — add the host to known_hosts "
                "if it is new; if it changed, find out why before trusting it"
            )
        if isinstance(exc, ConnectionRefusedError):
            return f"connection refused by {who} — is sshd running and the port right?"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve {self.address[0]} ({exc.strerror})"
        if isinstance(exc, (TimeoutError, asyncssh.TimeoutError)):
            return f"no answer from {who} within {self.options.connect_timeout:g}s"
        if isinstance(exc, FileNotFoundError) and exc.filename:
            if exc.filename == _known_hosts(self.options.known_hosts):
                return self._no_known_hosts(exc.filename)
            return f"cannot read {exc.filename} for {who}: no such file (check `key:`/`keys:`)"
        if isinstance(exc, OSError):
            return f"cannot reach {who}: {exc.strerror or exc}"
        if isinstance(exc, asyncssh.Error):
            return f"{who}: {exc.reason}"
        return f"{who}: {type(exc).__name__}: {exc}"

    def _no_known_hosts(self, path: str) -> str:
        """A known_hosts file that is not there: name it and say how to make it."""
        host, port = self.address
        return (
            f"known_hosts file {path} for {self.describe()} does not exist: create it with the "
            f"host's key (`ssh-keyscan -p {port or 22} {host} >> {path}`, then check the "
            "fingerprint) or set `known_hosts:` to the file that has it"
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        import asyncssh

        connection = await self._connected()
        if self._agent is not None:
            return await self._agent.run(argv, input=input, env=env)
        started = time.perf_counter()
        mark, script = f"{secrets.token_hex(8)}.", env_script(env)
        process = await self._open_channel(connection, remote_command(argv, mark, len(script)))
        pgid: int | None = None
        out, err = bytearray(), bytearray()
        try:
            process.stdin.write(script + (input or b""))
            process.stdin.write_eof()
            pgid = await _find_pgid(process.stderr, err)
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, _chunks(process.stderr), err)
                await drain(_chunks(process.stdout), out)
            await process.wait_closed()
            code = process.returncode if process.returncode is not None else -1
        except Exception as exc:
            lost = _lost(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError))
            if lost is None:
                raise
            raise connection_lost(self.link(), lost) from None
        finally:
            if process.returncode is None:  # cut short: the wrapper did not sweep
                with anyio.CancelScope(shield=True):
                    await self._kill(connection, pgid, mark)
                    process.close()
        return Completed.captured(code, out, err, time.perf_counter() - started)

    async def _open_channel(self, connection: Any, command: str) -> Any:
        """Sessions still closing on the server count against MaxSessions: retry a refused
        channel open with backoff instead of failing the task."""
        import asyncssh

        for attempt in range(CHANNEL_RETRIES):
            try:
                return await connection.create_process(command, encoding=None)
            except asyncssh.ChannelOpenError as exc:
                if attempt == CHANNEL_RETRIES - 1:
                    raise TransportError(
                        f"{self.describe()} refused a new SSH session ({exc.reason}); "
                        "lower max_sessions for this target"
                    ) from None
                await anyio.sleep(0.05 * 2**attempt)
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError) as exc:
                raise connection_lost(self.link(), exc) from None
        raise AssertionError("unreachable")

    async def _kill(self, connection: Any, pgid: int | None, mark: str) -> None:
        """Kill the remote process group and what carries the task's mark, from a fresh
        channel; bounded, never raises."""
        if connection.is_closed():
            return
        command = shlex.join(["sh", "-c", KILL, "sh", str(pgid or "-"), mark])
        with anyio.move_on_after(KILL_TIMEOUT):
            try:
                await connection.run(command, check=False)
            except Exception:  # the host may be gone; nothing more to kill then
                return

    async def aclose(self) -> None:
        if self._agent is not None:
            await self._agent.aclose()
        for connection in [self._connection, *reversed(self._hops)]:
            if connection is not None:
                connection.close()
                with anyio.move_on_after(2), anyio.CancelScope(shield=True):
                    await connection.wait_closed()


def _lost(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The connection failure inside `exc`, also when a task group wrapped it in a group."""
    if isinstance(exc, kinds):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        if (found := _lost(inner, kinds)) is not None:
            return found
    return None


async def _find_pgid(stderr: Any, sink: bytearray, lines: int = 50) -> int | None:
    """The wrapper's marker line; what a login shell printed before it stays in stderr."""
    for _ in range(lines):
        line = await stderr.readline()
        if not line:
            return None
        text = line.decode(errors="replace").strip()
        if text.startswith(PGID):
            value = text[len(PGID) :].strip()
            return int(value) if value.isdigit() else None
        sink += line
    return None


async def _chunks(reader: Any) -> AsyncIterator[bytes]:
    """An asyncssh reader as chunks (its own iterator yields lines, unbounded in length)."""
    while chunk := await reader.read(65536):
        yield chunk


def _hop(text: str) -> tuple[str | None, str, int | None]:
    """`user@host:port` (user and port optional) → its parts."""
    user, _, address = text.rpartition("@")
    host, port = split_host(address)
    return user or None, host, port


def _login(user: str | None, port: int | None) -> dict[str, Any]:
    login: dict[str, Any] = {}
    if user:
        login["username"] = user
    if port:
        login["port"] = port
    return login


def _known_hosts(path: str | None) -> Any:
    """The target's known_hosts, else the user's; asyncssh's `()` means ~/.ssh/known_hosts."""
    return os.path.expanduser(path) if path else ()
