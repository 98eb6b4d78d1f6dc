"""The `slurm` transport: the nodes of a Slurm partition, reached through Slurm itself.

A group names a partition (and optionally a hostlist of nodes, features, account, qos, a
time limit and gres); its hosts are node names, listed by `sinfo` when the spec is planned
unless the group names them. A run holds one job on the group's nodes (`SlurmJob`), and
each node's tasks run through one step of it that holds the host agent (agent_remote.py,
the helper SSH hosts get): a node pays one step launch, not one per check, a timeout or
Ctrl-C kills exactly that task's processes there, and closing the agent ends the step. A
check across the group is one more step, its tasks on every node (`launch`). A node Slurm
reports down, drained or failing is left out: its gate says so, with Slurm's state and
reason, and its checks are blocked.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from matrix.errors import TransportError
from matrix.spec.models import TargetSpec
from matrix.transport.agent import AgentUnavailable, HostAgent
from matrix.transport.base import Completed, Step, Target, TargetRef, split_hostlist
from matrix.transport.local import Here, LocalTarget

if TYPE_CHECKING:
    from matrix.transport import TargetPool

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


def open_target(ref: TargetRef, pool: TargetPool) -> SlurmTarget:
    """One node of a `via: slurm` group; nothing is started until its first task. The nodes
    of a group share one job for the run (its `SlurmJob`)."""
    assert ref.options is not None  # every host of a group carries the group's options
    options = ref.options
    nodes = [r.host for r in pool.refs.values() if r.via == "slurm" and r.group == ref.group]
    job = pool.shared(("slurm", ref.group), lambda: SlurmJob(options, nodes or [ref.host]))
    return SlurmTarget(ref.name, ref.host, ref.group, options, job, options.python or "python3")


HOLD = 'echo "$SLURM_JOB_ID"; exec cat >/dev/null'  # the job lasts as long as its stdin
RELEASE_WAIT = 10.0  # seconds salloc gets to give the job back before it is cancelled
BUSY = ("allocated", "mixed", "completing")  # states of a node other jobs hold (some of)
_LABEL = re.compile(rb"^\s*(\d+): ?(.*)$")  # srun --label: "3: text" for task 3


@dataclass
class SlurmJob:
    """The one job a run holds on the nodes of a Slurm group: every task on a node is a step
    of it (`srun --jobid --overlap`), so the nodes are checked inside the same allocation
    (and with the same `gres`: GPUs) a training job gets, a check across the group is one
    step over all of them, and a node pays no job start per task.

    The job is held by `salloc` running `cat` on this machine, reading a pipe from matrix:
    when matrix ends — even killed — the pipe closes, `cat` and salloc end, and Slurm takes
    the job back, with every step in it. A node Slurm reports down, drained or failing is
    left out of the job and its gate says why."""

    options: TargetSpec
    nodes: list[str]
    states: dict[str, tuple[str, str]] = field(default_factory=dict)
    job_id: str | None = None
    _holder: Any = None
    _failures: dict[str, TransportError] = field(default_factory=dict)
    _lock: anyio.Lock = field(default_factory=anyio.Lock)
    _started: bool = False
    _token: str = field(default_factory=lambda: secrets.token_hex(8))
    _here: LocalTarget = field(default_factory=LocalTarget)

    async def node(self, node: str) -> tuple[str, str]:
        """The job id for a task on `node`, once the job holds it, and the node's (state,
        reason); TransportError saying why the node is not in the job."""
        async with self._lock:
            if not self._started:
                self._started = True
                await self._allocate()
        if node in self._failures:
            raise self._failures[node]
        if self.job_id is None or node not in self.nodes:
            raise TransportError(f"node {node} is not in the run's job on {_hostlist(self.nodes)}")
        return self.job_id, self.states[node][0]

    async def _allocate(self) -> None:
        """Read every node's state in one call, and hold a job on those that take one; when
        some are busy with other jobs and Slurm cannot give all at once, on the idle ones."""
        try:
            self.states = await anyio.to_thread.run_sync(node_states, self.nodes)
        except TransportError as exc:
            self._failures = dict.fromkeys(self.nodes, exc)
            return
        usable = []
        for node in self.nodes:
            try:
                _usable(node, *self.states[node])
                usable.append(node)
            except TransportError as exc:
                self._failures[node] = exc
        idle = [node for node in usable if not self.states[node][0].startswith(BUSY)]
        held: list[str] = []
        refused: str | None = None  # why Slurm gave no job on every usable node
        for nodes in (usable, idle) if idle != usable else (usable,):
            why = await self._hold(nodes) if nodes else None
            if nodes and why is None:
                held = nodes
                break
            refused = refused or why
        for node in usable:
            if node not in held:
                self._failures[node] = self._refused(node, usable, refused)

    def _refused(self, node: str, asked: list[str], why: str | None) -> TransportError:
        state = self.states[node][0]
        busy = f"node {node} is {state} (held by other jobs) and " if state.startswith(BUSY) else ""
        return TransportError(
            f"{busy}Slurm gave no job on {_hostlist(asked)} within "
            f"{self.options.connect_timeout:g}s: {why} — wait until the nodes are free, leave "
            "the busy ones out (--limit, or the group's `nodes:`), or check the partition, "
            "account, qos, time and gres the group asks for"
        )

    async def _hold(self, nodes: list[str]) -> str | None:
        """Start salloc for a job on exactly `nodes`; None once it holds one, else why not."""
        timeout = self.options.connect_timeout
        argv = ["salloc", "--job-name=matrix", f"--nodelist={','.join(nodes)}"]
        argv += [f"--nodes={len(nodes)}", f"--immediate={max(1, round(timeout))}"]
        for option in ("partition", "account", "qos", "time", "constraint", "gres"):
            value = getattr(self.options, option)
            if value:
                argv.append(f"--{option}={value}")
        if shutil.which("salloc") is None:
            return "salloc not found — run matrix where Slurm's client commands are installed"
        holder = await Here(f"{self._token}.job.", [*argv, "sh", "-c"]).create_process(HOLD)
        try:
            with anyio.move_on_after(timeout + LIST_TIMEOUT):
                line = await holder.stdout.readline()
                if line.strip().isdigit():
                    self.job_id, self._holder = line.strip().decode(), holder
                    return None
        finally:
            if self._holder is not holder:  # no job, or cancelled (Ctrl-C) while waiting
                await _end(holder)
        said = (await holder.stderr.read()).decode(errors="replace").strip().splitlines()
        errors = [line for line in said if "error" in line] or said or ["no answer"]
        return errors[-1].split("error: ", 1)[-1]

    def step_argv(self, *nodes: str) -> list[str]:
        """`srun` for a step of the job on `nodes`, sharing the job's resources with its other
        steps, its output unbuffered (an agent's frames are not lines)."""
        assert self.job_id is not None
        argv = ["srun", f"--jobid={self.job_id}", "--overlap", f"--nodelist={','.join(nodes)}"]
        return [*argv, f"--nodes={len(nodes)}", "--unbuffered", "--quiet"]

    async def launch(
        self,
        nodes: Sequence[str],
        per_node: int,
        argv: Sequence[str],
        *,
        input: bytes,
        env: Mapping[str, str],
    ) -> Step:
        """`argv` as one step of `per_node` tasks on each of `nodes`, task i on
        nodes[i // per_node] (SLURM_PROCID = i), the same `input` to each; the first task
        that exits non-zero ends the others (`--kill-on-bad-exit`)."""
        for node in nodes:
            await self.node(node)  # raises for one that is not in the job
        assert self.job_id is not None
        with tempfile.NamedTemporaryFile("w", prefix="matrix-hosts-", suffix=".txt") as hosts:
            hosts.write("".join(f"{node}\n" for node in nodes for _ in range(per_node)))
            hosts.flush()
            srun = ["srun", f"--jobid={self.job_id}", "--overlap", "--overcommit"]
            srun += ["--distribution=arbitrary", f"--ntasks={len(nodes) * per_node}"]
            srun += ["--label", "--unbuffered", "--input=all", "--kill-on-bad-exit=1", "--quiet"]
            done = await self._here.run(
                [*srun, *argv], input=input, env={**env, "SLURM_HOSTFILE": hosts.name}
            )
        outputs = [b""] * (len(nodes) * per_node)
        for line in done.stdout.splitlines():
            found = _LABEL.match(line)
            if found and int(found[1]) < len(outputs):
                outputs[int(found[1])] += found[2] + b"\n"
        return Step(outputs, done)

    async def aclose(self) -> None:
        """Give the job back: salloc's `cat` reads the end of its input and salloc ends the
        job; one that does not within RELEASE_WAIT is cancelled."""
        holder = self._holder
        if holder is None:
            return
        holder.stdin.close()
        with anyio.move_on_after(RELEASE_WAIT) as waited:
            await holder.wait_closed()
        if waited.cancelled_caught:
            with contextlib.suppress(TransportError):
                await anyio.to_thread.run_sync(_slurm, ["scancel", self.job_id], "cancel job")
            await _end(holder)
        await self._here.aclose()


async def _end(holder: Any) -> None:
    """Stop a salloc: SIGTERM first, on which it cancels its job (pending or held), then
    SIGKILL if it lingers; shielded, as it runs when a run is cut short too."""
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(ProcessLookupError):
            holder.process.terminate()
        with anyio.move_on_after(RELEASE_WAIT) as waited:
            await holder.wait_closed()
        if waited.cancelled_caught:
            holder.close()
            await holder.wait_closed()


@dataclass
class SlurmTarget:
    """One Slurm node. `connect()` waits for the group's job and starts the node's agent in
    a step of it, once; a failure is remembered for every task of the node."""

    name: str
    host: str
    group: str
    options: TargetSpec
    job: SlurmJob
    python: str = "python3"
    agent_problem: str | None = None
    _state: str | None = None
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
                    _, self._state = await self.job.node(self.host)
                    self._agent = await self._start_agent()
                except TransportError as exc:
                    self._failure = exc
                    raise
        return {
            "via": "slurm",
            "node": self.host,
            "partition": self.options.partition,
            "job": self.job.job_id,
            "state": self._state,
            "agent": self._agent is not None,
            "agent_problem": self.agent_problem,
        }

    async def _start_agent(self) -> HostAgent | None:
        """The node's helper python in a step of its own, or None with `agent: false`."""
        if not self.options.agent:
            return None
        timeout = self.options.connect_timeout
        try:
            here = Here(f"{self._token}.agent.", [*self.job.step_argv(self.host), "sh", "-c"])
            return await HostAgent.start(here, self.python, f"node {self.host}", timeout)
        except AgentUnavailable as exc:
            raise TransportError(
                f"cannot start matrix's helper through srun: {exc} — check that {self.python} "
                f"runs on {self.host} (or set the group's `python:`)"
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
        step = [*self.job.step_argv(self.host), *argv]
        return await self._here.run(step, input=input, env=env)  # srun exports env to the node

    async def launch(
        self,
        targets: Sequence[Target],
        per_host: int,
        argv: Sequence[str],
        *,
        input: bytes,
        env: Mapping[str, str],
    ) -> Step | None:
        """One step across `targets` when all are nodes of this one's job; else None."""
        if not all(isinstance(t, SlurmTarget) and t.job is self.job for t in targets):
            return None
        for target in targets:
            await target.connect()  # each node's gate passed; this raises its failure if not
        hosts = [target.host for target in targets]
        return await self.job.launch(hosts, per_host, argv, input=input, env=env)

    async def aclose(self) -> None:
        if self._agent is not None:
            await self._agent.aclose()
        await self._here.aclose()


def node_states(nodes: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{node: (state, reason)} as Slurm reports them now, in one call; TransportError for a
    node Slurm does not know."""
    listed = _slurm(
        ["sinfo", "--noheader", "--Node", f"--nodes={','.join(nodes)}", "--format=%N|%T|%E"],
        f"read the state of {_hostlist(nodes)}",
    )
    found: dict[str, tuple[str, str]] = {}
    for line in listed.splitlines():
        name, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        found.setdefault(name.strip(), (state.strip(), reason.strip()))
    unknown = [node for node in nodes if node not in found]
    if unknown:
        raise TransportError(
            f"Slurm knows no node {_hostlist(unknown)}: check the group's `nodes:`"
        )
    return found


def node_state(node: str) -> tuple[str, str]:
    """(state, reason) of a node as Slurm reports it now, e.g. ('drained', 'bad GPU')."""
    return node_states([node])[node]


def _hostlist(nodes: Sequence[str], shown: int = 8) -> str:
    """Nodes for a message: the first `shown`, then how many more."""
    more = f" and {len(nodes) - shown} more" if len(nodes) > shown else ""
    return ", ".join(nodes[:shown]) + more


def _usable(node: str, state: str, reason: str) -> None:
    if state.endswith("*"):  # sinfo's mark for a node that does not answer slurmctld
        state = f"{state[:-1]} and not responding"
    if any(word in state.lower().replace(" ", "_") for word in UNUSABLE):
        why = f" (reason: {reason})" if reason and reason != "none" else ""
        raise TransportError(
            f"node {node} is {state} in Slurm{why} — it takes no job; once it is fixed, return "
            f"it with `scontrol update NodeName={node} State=RESUME`"
        )
