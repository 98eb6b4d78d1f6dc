"""The `slurm` transport: the nodes of a Slurm partition, reached through Slurm itself.

A group names a partition (and optionally a hostlist of nodes, features, account, qos and a
time limit); its hosts are node names, listed by `sinfo` when the spec is planned unless the
group names them. Each node's tasks run through one `srun` job step that holds the host
agent (agent_remote.py, the helper SSH hosts get): a node pays one step launch, not one per
check, a timeout or Ctrl-C kills exactly that task's processes there, and closing the agent
ends the step. A node Slurm reports down, drained or failing is not used: its gate says so,
with Slurm's state and reason, and its checks are blocked.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from matrix.errors import TransportError
from matrix.spec.models import TargetSpec
from matrix.transport.agent import AgentUnavailable, HostAgent
from matrix.transport.base import Completed, TargetRef, split_hostlist
from matrix.transport.local import Here, LocalTarget

# A node in one of these states takes no job: say so instead of waiting for one
UNUSABLE = ("down", "drain", "fail", "not_responding", "maint", "reserved", "inval", "unknown")
LIST_TIMEOUT = 10.0
_FEATURE = re.compile(r"^[A-Za-z0-9_.-]+$")


def inventory(options: TargetSpec) -> list[str]:
    """The group's host patterns: its `nodes` hostlist, else every node `sinfo` lists for its
    partition that has the `constraint`'s features. Raises TransportError saying why not."""
    if options.nodes:
        return split_hostlist(options.nodes)
    argv = ["sinfo", "--noheader", "--Node", "--format=%N|%f"]
    if options.partition:
        argv.append(f"--partition={options.partition}")
    listed = _slurm(argv, "list the nodes of " + _partition(options))
    nodes: list[str] = []
    for line in listed.splitlines():
        name, _, features = line.partition("|")
        if name and name not in nodes and _has_features(features, options.constraint):
            nodes.append(name)
    if not nodes:
        having = f" with features {options.constraint!r}" if options.constraint else ""
        raise TransportError(
            f"Slurm lists no node in {_partition(options)}{having}: check the name "
            "(`sinfo --summarize` lists the partitions) or name the nodes with `nodes:`"
        )
    return nodes


def _partition(options: TargetSpec) -> str:
    return f"partition '{options.partition}'" if options.partition else "the default partition"


def _has_features(listed: str, constraint: str | None) -> bool:
    """Whether a node's features (`a100,ib`) meet a constraint of names joined by `&` (and)
    and `|` (or); richer constraints (counts, brackets) need `nodes:`."""
    if not constraint:
        return True
    have = set(listed.split(","))
    alternatives = [[name.strip() for name in part.split("&")] for part in constraint.split("|")]
    if not all(_FEATURE.match(name) for names in alternatives for name in names):
        raise TransportError(
            f"constraint {constraint!r}: matrix lists nodes for feature names joined by & and | "
            "only; name the nodes with `nodes:` (srun still gets the whole constraint)"
        )
    return any(all(name in have for name in names) for names in alternatives)


def _slurm(argv: list[str], doing: str) -> str:
    """Run a Slurm client command here; its stdout, or a TransportError naming the cause."""
    if shutil.which(argv[0]) is None:
        raise TransportError(
            f"cannot {doing}: {argv[0]} not found — run matrix where Slurm's client commands "
            "are installed (a login node), or name the nodes with `nodes:`"
        )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=LIST_TIMEOUT)
    except subprocess.TimeoutExpired:
        why = f"{argv[0]} gave no answer in {LIST_TIMEOUT:g}s"
        raise TransportError(f"cannot {doing}: {why}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        why = why.removeprefix(f"{argv[0]}: ")  # Slurm's commands name themselves
        raise TransportError(f"cannot {doing}: {argv[0]}: {why}")
    return done.stdout


def set_state(node: str, state: str, reason: str | None = None) -> None:
    """`scontrol update` a node's state (DRAIN with a reason, RESUME); TransportError when
    Slurm refuses (matrix's user must be a Slurm operator for this)."""
    argv = ["scontrol", "update", f"NodeName={node}", f"State={state}"]
    _slurm([*argv, *([f"Reason={reason}"] if reason else [])], f"set node {node} to {state}")


def srun_argv(options: TargetSpec, node: str, immediate: float) -> list[str]:
    """One task on `node` through Slurm; output unbuffered (the agent's frames are not lines)
    and no waiting for a node that is busy past `immediate` seconds."""
    argv = ["srun", f"--nodelist={node}", "--nodes=1", "--ntasks=1", "--unbuffered"]
    argv += ["--job-name=matrix", f"--immediate={max(1, round(immediate))}", "--quiet"]
    for option in ("partition", "account", "qos", "time", "constraint"):
        value = getattr(options, option)
        if value:
            argv.append(f"--{option}={value}")
    return argv


def open_target(ref: TargetRef) -> SlurmTarget:
    """One node of a `via: slurm` group; nothing is started until its first task."""
    assert ref.options is not None  # every host of a group carries the group's options
    return SlurmTarget(ref.name, ref.host, ref.group, ref.options, ref.options.python or "python3")


@dataclass
class SlurmTarget:
    """One Slurm node. `connect()` checks its state and starts its agent, once; a failure is
    remembered for every task of the node."""

    name: str
    host: str
    group: str
    options: TargetSpec
    python: str = "python3"
    agent_problem: str | None = None
    _state: tuple[str, str] | None = None
    _agent: HostAgent | None = None
    _failure: TransportError | None = None
    _lock: anyio.Lock = field(default_factory=anyio.Lock)
    _here: LocalTarget = field(default_factory=LocalTarget)
    _token: str = field(default_factory=lambda: secrets.token_hex(8))

    async def connect(self) -> dict[str, Any]:
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._state is None:
                try:
                    self._state = await anyio.to_thread.run_sync(node_state, self.host)
                    _usable(self.host, *self._state)
                    self._agent = await self._start_agent()
                except TransportError as exc:
                    self._failure = exc
                    raise
        return {
            "via": "slurm",
            "node": self.host,
            "partition": self.options.partition,
            "state": self._state[0],
            "agent": self._agent is not None,
            "agent_problem": self.agent_problem,
        }

    async def _start_agent(self) -> HostAgent | None:
        """The node's helper python in a job step of its own, or None with `agent: false`."""
        if not self.options.agent:
            return None
        timeout = self.options.connect_timeout
        try:
            srun = [*srun_argv(self.options, self.host, timeout), "sh", "-c"]
            here = Here(f"{self._token}.agent.", srun)  # the agent's own stdin and stdout
            return await HostAgent.start(here, self.python, f"node {self.host}", timeout)
        except AgentUnavailable as exc:
            raise TransportError(
                f"cannot start matrix's helper through srun: {exc} — check that {self.python} "
                f"runs on {self.host} (or set the group's `python:`), and that the partition, "
                "account and qos accept a job"
            ) from None

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        await self.connect()
        if self._agent is not None:
            return await self._agent.run(argv, input=input, env=env)
        step = [*srun_argv(self.options, self.host, self.options.connect_timeout), *argv]
        return await self._here.run(step, input=input, env=env)  # srun exports env to the node

    async def aclose(self) -> None:
        if self._agent is not None:
            await self._agent.aclose()
        await self._here.aclose()


def node_state(node: str) -> tuple[str, str]:
    """(state, reason) of a node as Slurm reports it now, e.g. ('drained', 'bad GPU')."""
    listed = _slurm(
        ["sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%T|%E"],
        f"read the state of node {node}",
    )
    line = listed.splitlines()[0] if listed.strip() else ""
    if not line:
        raise TransportError(f"Slurm knows no node {node}: check the group's `nodes:`")
    state, _, reason = line.partition("|")
    return state.strip(), reason.strip()


def _usable(node: str, state: str, reason: str) -> None:
    if state.endswith("*"):  # sinfo's mark for a node that does not answer slurmctld
        state = f"{state[:-1]} and not responding"
    if any(word in state.lower().replace(" ", "_") for word in UNUSABLE):
        why = f" (reason: {reason})" if reason and reason != "none" else ""
        raise TransportError(
            f"node {node} is {state} in Slurm{why} — it takes no job; once it is fixed, return "
            f"it with `scontrol update NodeName={node} State=RESUME`"
        )
