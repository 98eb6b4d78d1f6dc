"""Where probes run: the table of transports by a target group's `via:`, and the pool of
open targets a run shares.

A transport is one module with an `open(ref, pool) -> Target` function plus one row here; the row
also says what the planner and the engine need to know about it without importing it (it may
pull in asyncssh), so `validate` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from matrix.transport.base import Target, TargetRef, split_host


@dataclass(frozen=True)
class Gate:
    """A check every task on a remote host needs first: the host is reached once, and a dead
    host gives one error instead of one timeout per task. Its probe is `kind`, run on the host
    under the group's connect timeout plus `slack` seconds, or under what `budget` ("module:
    function" of the group's options) gives, for a transport whose reaching a host has more
    steps than a connection (Slurm: a job, then a step that waits for the node's prolog): the
    gate's timeout must leave the transport room to say in its own words what held it."""

    kind: str
    id: str
    title: str
    category: str
    failure: str
    fix: str
    slack: float = 5.0
    budget: str | None = None


@dataclass(frozen=True)
class Transport:
    """One row of the table. `remote`: reached over a network, so `--limit` selects its hosts,
    `max_sessions` bounds its tasks, and results name its address (`default_port` unless the
    host or the group gives one)."""

    via: str
    opener: str  # "module:function" taking a TargetRef and the pool, imported on first use
    remote: bool = False
    default_port: int | None = None
    gate: Gate | None = None
    # "module:function" giving a group's host patterns from its options (Slurm's nodes),
    # raising TransportError; None: the group lists `hosts:`
    inventory: str | None = None


TRANSPORTS: dict[str, Transport] = {
    row.via: row
    for row in (
        Transport("local", "matrix.transport.local:open_target"),
        Transport(
            "ssh",
            "matrix.transport.ssh:open_target",
            remote=True,
            default_port=22,
            gate=Gate(
                kind="ssh.connect",
                id="ssh-connect",
                title="SSH connection",
                category="SSH Access",
                failure="Cannot connect to the host",
                fix=(
                    "Check the address and port of {{ target.host }}, that sshd runs there, the "
                    "user, the key (chmod 600) and known_hosts"
                ),
            ),
        ),
        Transport(
            "slurm",
            "matrix.transport.slurm:open_target",
            remote=True,
            inventory="matrix.transport.slurm:inventory",
            gate=Gate(
                budget="matrix.transport.slurm:gate_budget",
                kind="slurm.connect",
                id="slurm-connect",
                title="Slurm node",
                category="Slurm",
                failure="Cannot run on the node through Slurm",
                fix=(
                    "Check `sinfo -N -n {{ target.host }}`: a down or drained node takes no "
                    "job (`scontrol update NodeName={{ target.host }} State=RESUME` once it is "
                    "fixed); check the group's partition, account, qos and python"
                ),
            ),
        ),
    )
}


def load(reference: str) -> Any:
    """The object a row names as "module:function", imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def transport(via: str) -> Transport:
    """The row for `via` (the planner has already rejected unknown ones)."""
    return TRANSPORTS[via]


def address(ref: TargetRef) -> tuple[str | None, int | None]:
    """(host, port) a remote target is reached at; (None, None) for this machine."""
    row = transport(ref.via)
    if not row.remote:
        return None, None
    host, port = split_host(ref.host)
    configured = ref.options.port if ref.options else None
    return host, port or configured or row.default_port


class Closing(Protocol):
    async def aclose(self) -> None: ...


Shared = TypeVar("Shared", bound=Closing)


class TargetPool:
    """One Target per concrete place, opened on first use and shared by its tasks. Used as
    `async with`, it makes this process adopt its probes' orphans (see transport/local.py)
    and closes every target at the end whatever happened (also on Ctrl-C). `refs`: every
    place the run may use, so that what a group's targets share can cover the group."""

    def __init__(
        self,
        refs: Iterable[TargetRef] = (),
        spec: str = "matrix",
        budgets: Mapping[str, float] | None = None,
    ) -> None:
        self.refs = {ref.name: ref for ref in refs}
        self.spec = spec  # the spec's name: what a Slurm job of the run is named after
        self.budgets = dict(budgets or {})  # {group: the most its tasks take} (Plan.budgets)
        self.notes: list[str] = []  # what the transports did beyond the tasks, for the run's
        # warnings (a stale job of an earlier run cancelled, a job Slurm would not confirm ended)
        self._targets: dict[str, Target] = {}
        self._shared: dict[object, Closing] = {}
        self._stack = ExitStack()

    def get(self, ref: TargetRef) -> Target:
        if ref.name not in self._targets:
            self._targets[ref.name] = load(transport(ref.via).opener)(ref, self)
        return self._targets[ref.name]

    def shared(self, key: object, make: Callable[[], Shared]) -> Shared:
        """The one object of this run for `key`, made on first use (a Slurm group's job,
        which its nodes' targets share); closed after every target."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]  # type: ignore[return-value]  # make() gave this key's

    async def __aenter__(self) -> TargetPool:
        from matrix.transport.local import adopting_orphans, fast_child_watcher

        self._stack.enter_context(fast_child_watcher())
        self._stack.enter_context(adopting_orphans())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close every target at once: closing an SSH host waits a round trip or two for its
        agent to end what it runs, which one host after another would pay a fleet's times
        over. A target that fails to close leaves the others closing; its error is raised."""
        import anyio

        errors: list[Exception] = []

        async def close(target: Closing) -> None:
            try:
                await target.aclose()
            except Exception as error:
                errors.append(error)

        with self._stack, anyio.CancelScope(shield=True):
            for closing in (self._targets.values(), self._shared.values()):
                async with anyio.create_task_group() as group:
                    for each in closing:
                        group.start_soon(close, each)
        if errors:
            raise errors[0]
