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

What Slurm did to the run is said in Slurm's words, and never passes for something seen on
a node: a step held behind a prolog, a node other jobs hold, a step lost to a cancelled job
or a dead slurmd are transport errors naming the cause (Slurm's job and node states), which
`run --drain` never acts on. The job is named after the spec, carries who holds it in its
comment, and has a time limit derived from the checks' timeouts, so it ends by itself
whatever ends matrix; the next run of the spec cancels one whose matrix is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from matrix.errors import TransportError
from matrix.spec.models import TargetSpec
from matrix.transport.agent import AgentUnavailable, HostAgent, connection_lost
from matrix.transport.agent_remote import start_time
from matrix.transport.base import Completed, Step, Target, TargetRef, split_hostlist
from matrix.transport.local import AgentProcess, Here, LocalTarget

if TYPE_CHECKING:
    from matrix.transport import TargetPool

# A node in one of these states takes no job: say so instead of waiting for one
UNUSABLE = ("down", "drain", "fail", "not_responding", "maint", "reserved", "inval", "unknown")
LIST_TIMEOUT = 10.0
_FEATURE = re.compile(r"^[A-Za-z0-9_.-]+$")


def gate_budget(options: TargetSpec) -> float:
    """A node gate's timeout: asking Slurm for the job (all usable nodes, then the idle ones,
    each up to `connect_timeout` plus Slurm's answer), the waits behind a prolog (the job's
    with PrologFlags=Alloc, then the node's step: `start_timeout` each) and the helper's
    start, with slack, so that the transport always says first what held a node."""
    ask = options.connect_timeout + LIST_TIMEOUT
    return 2 * ask + 2 * options.start_timeout + options.connect_timeout + 5.0


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
    job = pool.shared(
        ("slurm", ref.group),
        lambda: SlurmJob(
            options, nodes or [ref.host], _job_name(pool.spec), pool.budgets.get(ref.group, 0.0),
            pool.notes,
        ),
    )  # fmt: skip
    return SlurmTarget(ref.name, ref.host, ref.group, options, job, options.python or "python3")


def _job_name(spec: str) -> str:
    """`matrix-<spec>`: what squeue shows, and how a run finds a stale job of its spec."""
    return "matrix-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-")[:60] or "spec")


HOLD = 'echo "$SLURM_JOB_ID"; exec cat >/dev/null'  # the job lasts as long as its stdin
RELEASE_WAIT = 10.0  # seconds salloc gets to give the job back before it is cancelled
CONFIRM_WAIT = 30.0  # seconds to keep cancelling a job Slurm still lists (slurmctld restarting)
ENDING_READS = 6  # reads, half a second apart, for a COMPLETING job to show how it ended
STARTED = "matrix-step-started"  # a node's step prints it first: its task runs on the node
LAUNCH_TIMED_OUT = "Socket timed out"  # srun's words when slurmd kept a launch past MessageTimeout
# srun's words for a step that never ran its task (as against the task's own failure)
UNLAUNCHED = ("Application launch failed", "Unable to create step", "Job step aborted")
LIVE = ("RUNNING", "PENDING", "CONFIGURING", "SUSPENDED", "REQUEUED", "RESIZING")
ENDED_BY = {  # what a job state other than RUNNING says happened to the run's job
    "CANCELLED": "someone cancelled it (scancel) or an admin did",
    "TIMEOUT": "it reached its time limit",
    "NODE_FAIL": "a node of it failed",
    "PREEMPTED": "a job of higher priority took its nodes",
    "BOOT_FAIL": "a node of it failed to boot",
    "DEADLINE": "it reached its deadline",
    "OUT_OF_MEMORY": "it ran out of memory",
}
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
    the job back, with every step in it; should salloc fail to (slurmctld away), matrix
    cancels it, the job's time limit ends it, and the next run of the spec cancels it. A node
    Slurm reports down, drained or failing is left out of the job and its gate says why."""

    @property
    def time_limit(self) -> str:
        """The job's `--time`: the group's `time`, else whole minutes covering every task of
        the group run out one after another, the gates' waits and the release."""
        if self.options.time:
            return self.options.time
        seconds = self.budget + gate_budget(self.options) + RELEASE_WAIT + CONFIRM_WAIT
        return str(math.ceil(seconds / 60) + 1)

    @property
    def comment(self) -> str:
        """Who holds the job, so that a later run can tell a job whose matrix is gone."""
        pid = os.getpid()
        return f"matrix pid={pid} start={start_time(pid)} host={socket.gethostname()}"

    options: TargetSpec
    nodes: list[str]
    name: str = "matrix"
    budget: float = 0.0  # seconds the group's tasks can take at most (Plan.budgets)
    notes: list[str] = field(default_factory=list)  # the run's warnings (TargetPool.notes)
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
        """Cancel a stale job of the spec, read every node's state in one call, and hold a
        job on those that take one; when some are busy with other jobs and Slurm cannot give
        all at once, on the idle ones."""
        try:
            self.notes += await anyio.to_thread.run_sync(_cancel_stale, self.name)
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
        left = [node for node in usable if node not in held]
        holders = await anyio.to_thread.run_sync(_holders, left) if left else {}
        for node in left:
            self._failures[node] = self._refused(node, usable, refused, holders.get(node))

    def _refused(
        self, node: str, asked: list[str], why: str | None, jobs: list[str] | None
    ) -> TransportError:
        state = self.states[node][0]
        held = f"to job {', '.join(jobs)}" if jobs else "(held by other jobs)"
        busy = f"node {node} is {state} {held} and " if state.startswith(BUSY) else ""
        return TransportError(
            f"{busy}Slurm gave no job on {_hostlist(asked)} within "
            f"{self.options.connect_timeout:g}s: {why} — wait until the nodes are free, leave "
            "the busy ones out (--limit, or the group's `nodes:`), or check the partition, "
            "account, qos, time and gres the group asks for"
        )

    async def _hold(self, nodes: list[str]) -> str | None:
        """Start salloc for a job on exactly `nodes`; None once it holds one, else why not."""
        timeout = self.options.connect_timeout
        argv = ["salloc", f"--job-name={self.name}", f"--comment={self.comment}"]
        argv += [f"--time={self.time_limit}", f"--nodelist={','.join(nodes)}"]
        argv += [f"--nodes={len(nodes)}", f"--immediate={max(1, round(timeout))}"]
        for option in ("partition", "account", "qos", "constraint", "gres"):
            value = getattr(self.options, option)
            if value:
                argv.append(f"--{option}={value}")
        if shutil.which("salloc") is None:
            return "salloc not found — run matrix where Slurm's client commands are installed"
        holder = await Here(f"{self._token}.job.", [*argv, "sh", "-c"]).create_process(HOLD)
        try:  # with PrologFlags=Alloc the job's command starts once the prologs have run
            with anyio.move_on_after(timeout + LIST_TIMEOUT + self.options.start_timeout):
                line = await holder.stdout.readline()
                if line.strip().isdigit():
                    self.job_id, self._holder = line.strip().decode(), holder
                    return None
        finally:
            if self._holder is not holder:  # no job, or cancelled (Ctrl-C) while waiting
                await _end(holder)
        said = (await holder.stderr.read()).decode(errors="replace").strip().splitlines()
        errors = [line for line in said if "error" in line]
        granted = next((line.split()[-1] for line in said if "Granted job" in line), None)
        if granted and not errors:
            return (
                f"Slurm gave job {granted}, but its nodes were not ready within "
                f"{timeout + LIST_TIMEOUT + self.options.start_timeout:g}s (with "
                "PrologFlags=Alloc the job waits for every node's prolog: raise the group's "
                "`start_timeout` to the prolog's budget)"
            )
        return (errors or said or ["no answer"])[-1].split("error: ", 1)[-1]

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
            await _end(holder)
        with anyio.CancelScope(shield=True):
            unconfirmed = await anyio.to_thread.run_sync(_end_job, self.job_id)
        if unconfirmed:
            self.notes.append(
                f"Slurm: could not confirm that job {self.job_id} ({self.name}) ended: "
                f"{unconfirmed} — it ends by itself at its time limit ({self.time_limit} min), "
                f"or run `scancel {self.job_id}`; the next run of the spec cancels it"
            )
        await self._here.aclose()

    async def lost(self, node: str) -> str:
        """Why a step on `node` ended before its tasks did, as Slurm tells it now."""
        assert self.job_id is not None
        return await anyio.to_thread.run_sync(_lost_why, self.job_id, node)

    async def running(self) -> bool:
        """Whether the run's job still runs (a step's failure is then the step's own)."""
        assert self.job_id is not None
        state, _ = await anyio.to_thread.run_sync(job_state, self.job_id)
        return state == "RUNNING"


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
    a step of it, once; a failure is remembered for every task of the node, and so is the
    loss of the step, worded by what Slurm says happened."""

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
    _lost: TransportError | None = None
    _waited: float = 0.0
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
            "time_limit": self.job.time_limit,
            "state": self._state,
            "step_wait": round(self._waited, 2),
            "agent": self._agent is not None,
            "agent_problem": self.agent_problem,
        }

    async def _start_agent(self) -> HostAgent | None:
        """The node's helper python in a step of its own, or None with `agent: false`."""
        if not self.options.agent:
            return None
        step = NodeStep(self, f"{self._token}.agent.")
        try:
            while True:
                try:
                    return await HostAgent.start(
                        step, self.python, f"node {self.host}", self.options.connect_timeout,
                        link=f"the Slurm step on {self.host}",
                    )  # fmt: skip
                except AgentUnavailable as exc:
                    if not (LAUNCH_TIMED_OUT in str(exc) and await step.may_retry()):
                        raise TransportError(
                            f"cannot start matrix's helper in its Slurm step: {exc} — check "
                            f"that {self.python} runs on {self.host} (or set the group's "
                            "`python:`)"
                        ) from None
        finally:
            self._waited = step.waited

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        await self.connect()
        if self._agent is not None:
            try:
                done = await self._agent.run(argv, input=input, env=env)
            except TransportError:
                if self._agent.lost is None:
                    raise
                raise await self.lost(self._agent.lost) from None
            if _signalled(done.exit_code) and not await self.job.running():
                raise await self.lost(f"its task was killed: exit {done.exit_code}")
            return done
        step = [*self.job.step_argv(self.host), *argv]
        done = await self._here.run(step, input=input, env=env)  # srun exports env to the node
        if done.exit_code == 0:
            return done
        said = done.stderr.decode(errors="replace").strip().splitlines()
        unlaunched = next((line for line in said if any(w in line for w in UNLAUNCHED)), None)
        if unlaunched is not None:
            raise TransportError(f"the Slurm step on {self.host} did not launch: {unlaunched}")
        if not await self.job.running():
            raise await self.lost(said[-1] if said else f"srun exited {done.exit_code}")
        return done

    async def lost(self, said: str) -> TransportError:
        """The loss of this node's step, asked of Slurm once for all the node's tasks: it is
        the transport's error, never an observation of the node."""
        async with self._lock:
            if self._lost is None:
                why = await self.job.lost(self.host)
                self._lost = connection_lost(
                    f"the Slurm step on {self.host}",
                    f"{why} — nothing more was observed on {self.host} ({said})",
                )
            return self._lost

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


def _signalled(code: int) -> bool:
    """Whether a task's exit code says a signal ended it (-N from Python, 128+N from a
    shell): what Slurm does to the tasks of a job it cancels or loses a node of, so such an
    end counts as the task's own only while the job still runs."""
    return code < 0 or code > 128


class NodeStep:
    """A node's step of the run's job, in the place of an SSH connection to start the agent
    on: `create_process` returns once the step's task runs on the node. Until then Slurm
    holds it (the node's prolog runs before a job's first step there; a slurmd that does not
    answer): that wait is bounded by the group's `start_timeout`, and running out of it, or
    losing the step before it started, is a TransportError saying what Slurm says."""

    def __init__(self, node: SlurmTarget, mark: str) -> None:
        self.node = node
        self.here = Here(mark, [*node.job.step_argv(node.host), "sh", "-c"])
        self.started = time.perf_counter()
        self.deadline = self.started + node.options.start_timeout
        self.waited = 0.0

    async def may_retry(self) -> bool:
        """Whether a launch that timed out may be tried again: time is left and the job
        runs (srun gave up waiting on slurmd, which answers once the node's prolog ends)."""
        return time.perf_counter() < self.deadline and await self.node.job.running()

    async def create_process(self, command: str, encoding: None = None) -> AgentProcess:
        try:
            with anyio.fail_after(max(0.0, self.deadline - time.perf_counter())):
                while True:  # srun gives up on a launch after slurm.conf's MessageTimeout
                    process = await self._launch(command)
                    if process is not None:
                        return process
        except TimeoutError:
            host, limit = self.node.host, self.node.options.start_timeout
            why = await anyio.to_thread.run_sync(_held_why, self.node.job.job_id, host)
            raise TransportError(
                f"the Slurm step on {host} did not start within {limit:g}s: {why} — give the "
                "group's `start_timeout` at least the prolog's time budget, or find what holds "
                f"it in slurmd's log on {host}"
            ) from None
        finally:
            self.waited = time.perf_counter() - self.started

    async def _launch(self, command: str) -> AgentProcess | None:
        """One srun of the step: its process once its task runs on the node; None when srun
        gave up waiting for slurmd while the node's prolog still runs (try again)."""
        process = await self.here.create_process(f"echo {STARTED}; exec {command}")
        try:
            await process.stdout.readuntil(STARTED.encode())
            return process
        except asyncio.IncompleteReadError:
            said = (await process.stderr.read()).decode(errors="replace").strip().splitlines()
            await _closed(process)
        except BaseException:  # out of time, or cancelled (Ctrl-C): the step goes too
            await _closed(process)
            raise
        host, job = self.node.host, self.node.job
        if said and LAUNCH_TIMED_OUT in said[-1] and await job.running():
            return None  # slurmd answers a launch only once the node's prolog has ended
        why = await job.lost(host)
        tail = f" ({said[-1]})" if said else ""
        raise TransportError(f"the Slurm step on {host} ended before it started: {why}{tail}")


async def _closed(process: AgentProcess) -> None:
    """End a step's srun and reap it, shielded (it runs when a run is cut short too)."""
    process.close()
    with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_WAIT):
        await process.wait_closed()


def _show_job(job_id: str) -> dict[str, str]:
    """`scontrol show job -o`'s fields (JobState, Reason, TimeLimit, …); TransportError when
    Slurm cannot answer."""
    shown = _slurm(["scontrol", "show", "job", "-o", job_id], f"read the state of job {job_id}")
    return dict(part.split("=", 1) for part in shown.split() if "=" in part)


def job_state(job_id: str) -> tuple[str, str]:
    """(state, reason) of a job, e.g. ('CANCELLED', 'None'); ('GONE', why) when Slurm no
    longer lists it, ('UNKNOWN', why) when Slurm does not answer."""
    try:
        fields = _show_job(job_id)
    except TransportError as exc:
        gone = "Invalid job id" in str(exc)
        return ("GONE" if gone else "UNKNOWN"), str(exc)
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "None")


def _lost_why(job_id: str, node: str) -> str:
    """Why a step on `node` is gone, in Slurm's words: the job's end, the node's state."""
    state, reason = job_state(job_id)
    for _ in range(ENDING_READS):  # a job being cancelled is COMPLETING for a moment
        if state != "COMPLETING":
            break
        time.sleep(0.5)
        state, reason = job_state(job_id)
    if state == "UNKNOWN":
        return f"Slurm does not answer ({reason})"
    if state == "GONE":
        return f"Slurm no longer knows the run's job {job_id}"
    if state != "RUNNING":
        cause = ENDED_BY.get(state, "")
        said = f", reason {reason}" if reason not in ("None", "") else ""
        return f"the run's job {job_id} is {state}{said}" + (f": {cause}" if cause else "")
    try:
        node_state_now, node_reason = node_state(node)
        _usable(node, node_state_now, node_reason)
    except TransportError as exc:
        return str(exc).split(" — ")[0]
    return f"its step ended while the run's job {job_id} still runs"


def _held_why(job_id: str | None, node: str) -> str:
    """What holds a step that has not started on `node`, as far as Slurm shows it."""
    if job_id is None:
        return "the run has no job"
    state, _ = job_state(job_id)
    try:
        node_state_now, _ = node_state(node)
    except TransportError as exc:
        return f"Slurm does not answer ({exc})"
    if node_state_now.endswith("*"):
        return f"slurmd on {node} does not answer slurmctld (node {node_state_now})"
    if state == "CONFIGURING":
        return f"the job's prolog is still running (job {job_id} is CONFIGURING)"
    return (
        f"the job's prolog on {node} is still running, or slurmd there is slow to start steps "
        f"(Slurm starts a job's first step on a node once its prolog has ended; job {job_id} "
        f"is {state}, node {node} {node_state_now})"
    )


def _holders(nodes: Sequence[str]) -> dict[str, list[str]]:
    """{node: the other jobs running on it}, for a node's gate to name; {} when Slurm cannot
    say."""
    found: dict[str, list[str]] = {}
    for node in nodes:
        with contextlib.suppress(TransportError):
            listed = _slurm(
                ["squeue", "--noheader", f"--nodelist={node}", "--format=%i"],
                f"list the jobs on {node}",
            )
            found[node] = listed.split()
    return found


def _end_job(job_id: str | None) -> str | None:
    """Make sure the run's job has ended (salloc ends it; with slurmctld away it cannot):
    cancel it while Slurm still lists it as live, for up to CONFIRM_WAIT seconds. None once
    it has ended, else why that could not be confirmed."""
    if job_id is None:
        return None
    deadline = time.monotonic() + CONFIRM_WAIT
    while True:
        state, why = job_state(job_id)
        if state not in (*LIVE, "UNKNOWN"):
            return None
        if state != "UNKNOWN":
            with contextlib.suppress(TransportError):
                _slurm(["scancel", job_id], f"cancel job {job_id}")
            why = f"Slurm still lists it {state}"
        if time.monotonic() > deadline:
            return why
        time.sleep(1.0)


def _cancel_stale(name: str) -> list[str]:
    """Cancel this user's jobs of the spec (`name`) that an earlier run on this machine left:
    their comment names a matrix process that is gone. One line per job, for the warnings."""
    try:
        listed = _slurm(
            ["squeue", "--noheader", f"--user={os.getuid()}", f"--name={name}", "--format=%i|%k"],
            f"list the jobs named {name}",
        )
    except TransportError:
        return []  # the allocation that follows says why Slurm cannot answer
    done = []
    for line in listed.splitlines():
        job_id, _, comment = line.strip().partition("|")
        holder = dict(part.split("=", 1) for part in comment.split() if "=" in part)
        if holder.get("host") != socket.gethostname() or not holder.get("pid", "").isdigit():
            continue
        if str(start_time(int(holder["pid"]))) == holder.get("start"):
            continue  # its matrix still runs
        with contextlib.suppress(TransportError):
            _slurm(["scancel", job_id], f"cancel job {job_id}")
            done.append(
                f"Slurm: cancelled job {job_id} ({name}), left by an earlier run of the spec "
                f"whose matrix (pid {holder['pid']} on {holder['host']}) is gone"
            )
    return done


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
