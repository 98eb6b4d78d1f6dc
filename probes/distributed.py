"""`torch.distributed`: can these hosts run multi-process training together? Observed by
probes/remote/torch_distributed.py, which forks `world_size` ranks on each host from its own
process (torch imported once); the ranks meet over TCP, check an all_reduce and a broadcast of
known tensors, time all_reduce over a size sweep and a fixed compute step, take one DDP step,
and resume from rank 0's checkpoint.

On one host (`on:`) the ranks meet at 127.0.0.1. A check `across` a group starts `world_size`
ranks on every host at once, numbered host by host, the rendezvous on the first host: across
a Slurm group as one job step, each rank a task that Slurm launches and numbers (as a
training job's ranks are), elsewhere by the script on each host. The facts merge the hosts',
with bus bandwidth as nccl-tests defines it and the slowest host against the median. A host
that fails or never joins is named, never a bare timeout.

Every wait is bounded by `timeout` (torch's own default is 30 minutes), and no rank outlives
the probe: ranks are killed and reaped on failure, at the deadline, and when the probe is.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from pydantic import Field

from matrix.probe import NoAnswer, ProbeContext, ProbeError, ScriptProbe, probe

AFTER_FAILURE = 3.0  # seconds the other hosts get to report once one failed
TIMINGS = ("init_ms", "all_reduce_ms", "broadcast_ms", "compute_ms")  # slowest rank's, in ms
OKS = ("all_reduce_ok", "broadcast_ok", "ddp_ok", "resume_ok")  # every rank's, and-ed
FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


@probe(
    "torch.distributed",
    default_expect=dict.fromkeys(OKS, True) | {"straggler": False},
    facts={
        "backend": "the backend used: gloo or nccl (auto picks nccl when every rank can have "
        "a GPU)",
        "world_size": "number of ranks, on all hosts",
        "launch": "how the ranks started: `srun` (across a Slurm group: one job step, each "
        "rank a task Slurm numbered, SLURM_PROCID) or `fork` (each host's script forked its "
        "ranks)",
        "host": "host name of the target (across a group: the first host's)",
        "hosts": "across a group: the hosts in rank order (each runs `world_size` ranks); "
        "else [host]",
        "port": "the rendezvous port on the first host",
        "torch": "torch version on the target",
        "init_ms": "slowest rank's init_process_group (the rendezvous), milliseconds",
        "all_reduce_ms": "slowest rank's timed all_reduce of `elements` float32 values (after "
        "one untimed warm-up), milliseconds",
        "broadcast_ms": "slowest rank's broadcast of the same size from rank 0, milliseconds",
        "all_reduce_ok": "every rank finished and holds the right sum",
        "broadcast_ok": "every rank finished and holds rank 0's tensor",
        "ddp_ok": "after one DistributedDataParallel step, each rank with its own data, every "
        "rank holds the same gradients (gradient synchronization works)",
        "resume_ok": "every rank resumed from rank 0's checkpoint of the model and optimizer "
        "(through `checkpoint_dir` when given) and its next step landed on the same weights "
        "as without the break",
        "bandwidth": "all_reduce over the size sweep (`sizes`): [{bytes, ms, algbw_gbps, "
        "busbw_gbps}], the slowest rank's median time; busbw = algbw × 2(n−1)/n (nccl-tests)",
        "busbw_gbps": "bus bandwidth at the largest size, GB/s (10⁹ bytes)",
        "compute_ms": "per host: its slowest rank's fixed compute step, milliseconds",
        "per_host": "per host: its slowest rank's init_ms, all_reduce_ms, broadcast_ms and "
        "compute_ms",
        "per_rank": "per rank (across all hosts): its own init_ms, all_reduce_ms, broadcast_ms "
        "and compute_ms",
        "slowest_host": "the host whose compute step took longest",
        "slowest_ratio": "its compute time over the median host's: 1.0 is even",
        "straggler": "the slowest host's ratio is past `straggler_ratio` (the problem names it)",
        "ranks": '{rank: what went wrong} for each rank that failed, e.g. {"1": "killed at the '
        'deadline while waiting for the rendezvous at 127.0.0.1:29500"}; empty when all did',
        "problem": "what went wrong across the ranks and hosts and what to do (a host that "
        "failed, a straggler past `straggler_ratio`); null when all is well",
        "faulty_hosts": "the hosts at fault by what was measured on them: the host whose own "
        "ranks failed first (exited, wrong results; not a rendezvous timeout or a host that "
        "could not be reached), else a straggler; empty when none is (a `drain: named` row "
        "drains them)",
    },
)
class TorchDistributed(ScriptProbe):
    """Ranks on one host (`on:`) or on every host of a group (`across:`) rendezvous, check
    all_reduce, broadcast, a DDP step and resuming from a checkpoint, and time all_reduce
    over a size sweep (bus bandwidth) and a compute step (stragglers), with gloo (CPU) or
    NCCL (GPU).

    Errors, not facts: torch not installed, NCCL asked for without CUDA (or with fewer GPUs
    than ranks), a given `port` in use."""

    script = "torch_distributed"
    preload = ("torch", "torch.distributed")  # the agent imports it once; ranks are forks
    exclusive = True  # its ranks take every GPU (NCCL) or core they are given
    spans = True

    world_size: int = Field(2, ge=1)
    """Ranks to start on each host (NCCL needs one GPU each)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """auto: nccl when CUDA shows at least `world_size` GPUs, else gloo on the CPU."""
    port: int | None = Field(None, ge=1, le=65535)
    """Rendezvous port (MASTER_PORT) on the first host; by default a free one is picked."""
    master_addr: str | None = None
    """How the hosts reach the first one (MASTER_ADDR), across a group; by default its
    address as the group gives it."""
    timeout: float = Field(30.0, gt=0)
    """Seconds for the whole probe: starting the ranks, the rendezvous and the collectives.
    init_process_group gets what is left of it, so no rank waits torch's 30-minute default.
    Keep the check's own `timeout` above it (its default, 60s, is)."""
    elements: int = Field(1_048_576, ge=1)
    """float32 values per tensor (4 MiB by default) of the all_reduce and broadcast checks."""
    sizes: list[int] = Field(default_factory=list)
    """float32 values per all_reduce of the bandwidth sweep, e.g. [262144, 4194304, 67108864]
    (1, 16 and 256 MiB); by default just `elements`."""
    iterations: int = Field(5, ge=1, le=1000)
    """Timed all_reduce rounds per size (the median is kept)."""
    checkpoint_dir: str | None = None
    """A folder every host sees (shared storage, e.g. /fsx/checkpoints): rank 0 writes its
    checkpoint there and every rank resumes from that file, as a job restarted on other nodes
    does, so a folder one host cannot see fails here. By default the checkpoint reaches the
    ranks over the process group."""
    straggler_ratio: float = Field(1.5, gt=1)
    """A host whose compute step takes this many times the median host's is a straggler (a
    finding in `problem`)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        if len(ctx.targets) <= 1:
            facts = self._host(await super().observe(ctx))
            del facts["timed_out"], facts["failed_at"]  # for merging hosts' replies
            host = facts["host"]
            merged = {**facts, "hosts": [host], "launch": "fork", "faulty_hosts": []}
            merged["compute_ms"] = {host: facts["compute_ms"]}
            merged["per_host"] = {host: {key: facts[key] for key in TIMINGS}}
            return self._findings(merged)
        return self._findings(await self._across(ctx))

    async def _across(self, ctx: ProbeContext) -> dict[str, Any]:
        """The ranks of every host at once: as one Slurm job step when the hosts are nodes of
        one Slurm group's job, else the script on each host; their facts merged."""
        first = ctx.at(ctx.targets[0])
        port = self.port or int((await first.run([first.target.python, "-c", FREE_PORT])).stdout)
        shared = {
            **self.script_params(ctx),
            "nodes": len(ctx.targets),
            "master_addr": self.master_addr or ctx.addresses[0],
            "port": port,
            "deadline": time.time() + self.timeout,
        }
        per_host = self.world_size
        tasks = await ctx.python_across(
            self.script, {**shared, "launch": "srun"}, per_host=per_host,
            libraries=self.libraries, preload=self.preload,
        )  # fmt: skip
        if tasks is None:
            replies, launch = await self._on_each(ctx, shared), "fork"
        else:
            chunks = [tasks[i : i + per_host] for i in range(0, len(tasks), per_host)]
            replies = [self._combine(chunk, i * per_host) for i, chunk in enumerate(chunks)]
            launch = "srun"
        return {**_merged(ctx, replies, shared), "launch": launch}

    async def _on_each(
        self, ctx: ProbeContext, shared: dict[str, Any]
    ) -> list[dict[str, Any] | Exception]:
        """The script on every host, each forking its ranks; once one host failed, the
        others get AFTER_FAILURE seconds to report their side, then are stopped."""
        import anyio  # here: planning a spec imports this module, and must stay light

        replies: dict[int, dict[str, Any] | Exception] = {}

        async def host(index: int, group: Any) -> None:
            params = {**shared, "node_rank": index}
            try:
                reply = await ctx.at(ctx.targets[index]).python(
                    self.script, params, libraries=self.libraries, preload=self.preload
                )
                replies[index] = self._host(reply)
            except Exception as exc:  # one host's failure is a finding about that host
                replies[index] = exc
            if _failed(replies[index]) and group.cancel_scope.deadline == math.inf:
                group.cancel_scope.deadline = anyio.current_time() + AFTER_FAILURE

        async with anyio.create_task_group() as group:
            for index in range(len(ctx.targets)):
                group.start_soon(host, index, group)
        stopped = NoAnswer("stopped")
        return [replies.get(i, stopped) for i in range(len(ctx.targets))]

    def _combine(
        self, tasks: list[dict[str, Any] | ProbeError], first_rank: int
    ) -> dict[str, Any] | Exception:
        """One host's reply from its srun tasks' (one rank each, ranks from `first_rank`). A
        task that printed nothing while others of the host did is a rank stopped before it
        answered."""
        answered = [task for task in tasks if isinstance(task, dict)]
        if not answered:
            said = [task for task in tasks if not isinstance(task, NoAnswer)]
            return (said or tasks)[0]
        ranks = {key: value for task in answered for key, value in task["ranks"].items()}
        silent = [i for i, task in enumerate(tasks) if not isinstance(task, dict)]
        ranks.update((str(first_rank + i), "stopped before it answered") for i in silent)
        whole = not silent
        combined = {
            **answered[0],
            "world_size": len(tasks),
            **{key: _slowest(answered, key) for key in TIMINGS},
            "per_rank": {k: v for task in answered for k, v in task["per_rank"].items()},
            "ranks": ranks,
            "timed_out": any(task["timed_out"] for task in answered),
            "failed_at": min(
                (task["failed_at"] for task in answered if task["failed_at"]), default=None
            ),
            "sweep": _slowest_sweep([task["sweep"] for task in answered]) if whole else [],
        }
        for key in OKS:
            combined[key] = whole and all(task[key] for task in answered)
        return self._host(combined)

    def _host(self, facts: dict[str, Any]) -> dict[str, Any]:
        """A host's reply with its `problem`: its ranks that failed, or wrong results."""
        facts["problem"] = None
        if facts["ranks"]:
            ranks = "; ".join(
                f"rank {rank}: {error}"
                for rank, error in sorted(facts["ranks"].items(), key=_by_rank)
            )
            count = f"{facts['world_size']} rank{'s' if facts['world_size'] != 1 else ''}"
            facts["problem"] = f"torch.distributed ({facts['backend']}, {count}) failed: {ranks}"
            if facts["timed_out"]:
                facts["problem"] += (
                    f" — not done within {self.timeout:g}s: a rank that never joins the "
                    "rendezvous crashed or cannot reach MASTER_ADDR; raise `timeout` if "
                    "importing torch is slow on this host"
                )
            return facts
        wrong = [name for name in ("all_reduce", "broadcast") if not facts[f"{name}_ok"]]
        if wrong:
            facts["problem"] = (
                f"{' and '.join(wrong)} returned wrong values over {facts['backend']} — the "
                "communication library is broken; reinstall torch (and NCCL) on this host"
            )
        return facts

    def _findings(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Bus bandwidth from the sweep, the slowest host, and a straggler as a problem."""
        import statistics  # here: planning imports this module and stays light

        world = facts["world_size"]
        bandwidth = []
        for row in facts.pop("sweep", None) or []:
            size = row["elements"] * 4
            algbw = size / (row["ms"] / 1000) / 1e9 if row["ms"] else None
            busbw = algbw * 2 * (world - 1) / world if algbw is not None else None
            bandwidth.append(
                {"bytes": size, "ms": row["ms"], "algbw_gbps": _round(algbw),
                 "busbw_gbps": _round(busbw)}
            )  # fmt: skip
        facts["bandwidth"] = bandwidth
        facts["busbw_gbps"] = bandwidth[-1]["busbw_gbps"] if bandwidth else None
        timed = {host: ms for host, ms in facts["compute_ms"].items() if ms is not None}
        facts["slowest_host"] = max(timed, key=timed.__getitem__) if timed else None
        median = statistics.median(timed.values()) if timed else None
        ratio = timed[facts["slowest_host"]] / median if median else None
        facts["slowest_ratio"] = _round(ratio)
        facts["straggler"] = ratio is not None and ratio > self.straggler_ratio
        if facts["straggler"] and not facts["faulty_hosts"]:
            facts["faulty_hosts"] = [facts["slowest_host"]]
        if facts["straggler"] and facts["problem"] is None:
            facts["problem"] = (
                f"{facts['slowest_host']} is a straggler: its compute step took {ratio:.1f}× "
                f"the median host's ({timed[facts['slowest_host']]:.0f} ms against "
                f"{median:.0f} ms), and every collective waits for it — check its clocks, "
                "thermals and power (nvidia-smi -q -d PERFORMANCE) and what else runs there"
            )
        return facts


def _merged(
    ctx: ProbeContext, replies: list[dict[str, Any] | Exception], shared: dict[str, Any]
) -> dict[str, Any]:
    """One host's facts from each reply; what failed, by host, the host that failed first
    leading (it is the likely cause of the others' failures), the hosts stopped because of
    it last."""
    names = [target.name for target in ctx.targets]
    observed = [reply for reply in replies if isinstance(reply, dict)]
    failed = {name: reply for name, reply in zip(names, replies) if isinstance(reply, Exception)}
    facts: dict[str, Any] = {
        "backend": next((r["backend"] for r in observed), shared["backend"]),
        "world_size": shared["world_size"] * len(names),
        "host": names[0],
        "hosts": names,
        "port": shared["port"],
        "torch": next((r["torch"] for r in observed if r["torch"]), None),
        **{key: _slowest(observed, key) for key in TIMINGS if key != "compute_ms"},
        "compute_ms": {
            name: reply["compute_ms"] if isinstance(reply, dict) else None
            for name, reply in zip(names, replies)
        },
        "per_host": {
            name: {key: reply[key] for key in TIMINGS}
            for name, reply in zip(names, replies)
            if isinstance(reply, dict)
        },
        "per_rank": {rank: row for reply in observed for rank, row in reply["per_rank"].items()},
        "ranks": {rank: why for reply in observed for rank, why in reply["ranks"].items()},
    }
    for key in OKS:
        facts[key] = not failed and all(reply[key] for reply in observed)
    whole = observed and not failed
    facts["sweep"] = _slowest_sweep([reply["sweep"] for reply in observed]) if whole else []
    facts["problem"] = _problem(names, replies)
    facts["faulty_hosts"] = _at_fault(names, replies)
    return facts


def _problem(names: list[str], replies: list[dict[str, Any] | Exception]) -> str | None:
    """What went wrong, by host: the first to fail (by the time it saw its ranks fail; a host
    that could not run the script at all before one that did), then the others, then those
    stopped because of it."""
    said = {
        name: reply if isinstance(reply, Exception) else reply["problem"]
        for name, reply in zip(names, replies)
        if _failed(reply)
    }
    causes = [name for name, reply in said.items() if not isinstance(reply, NoAnswer)]
    order = sorted(causes, key=lambda name: _failed_at(replies[names.index(name)]))
    problems = [f"{name}: {said[name]}" for name in order]
    stopped = [name for name in said if name not in causes]
    if stopped and order:
        problems.append(f"{', '.join(stopped)}: stopped after {order[0]} failed")
    elif stopped:
        problems += [f"{name}: {said[name]}" for name in stopped]
    return "; ".join(problems) or None


def _failed_at(reply: dict[str, Any] | Exception) -> float:
    """When a host saw its ranks fail; one that could not run the script at all comes first."""
    return reply.get("failed_at") or math.inf if isinstance(reply, dict) else -math.inf


def _at_fault(names: list[str], replies: list[dict[str, Any] | Exception]) -> list[str]:
    """The host whose own ranks failed first, by what they reported (a rank that exited,
    wrong results), not by a rendezvous that timed out or a host that could not be reached:
    the one a `drain: named` row may drain."""
    own = [
        (_failed_at(reply), name)
        for name, reply in zip(names, replies)
        if isinstance(reply, dict) and _failed(reply) and not reply["timed_out"]
    ]
    return [min(own)[1]] if own else []


def _failed(reply: dict[str, Any] | Exception) -> bool:
    return isinstance(reply, Exception) or bool(reply["ranks"]) or reply["problem"] is not None


def _slowest_sweep(sweeps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each size's slowest time: a collective is as fast as its slowest member."""
    if not sweeps or not all(sweeps):
        return []
    return [
        {"elements": row["elements"], "ms": max(sweep[i]["ms"] for sweep in sweeps)}
        for i, row in enumerate(sweeps[0])
    ]


def _by_rank(item: tuple[str, str]) -> int:
    return int(item[0])


def _slowest(replies: list[dict[str, Any]], key: str) -> float | None:
    values = [reply[key] for reply in replies if reply.get(key) is not None]
    return max(values) if values else None


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
