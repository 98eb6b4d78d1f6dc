"""`torch.distributed`: can this host run multi-process training? Observed by
probes/remote/torch_distributed.py, which forks `world_size` ranks on the target from its own
process (torch imported once), has them meet over TCP at 127.0.0.1 and checks an all_reduce
and a broadcast of known tensors.

Every wait is bounded by `timeout` (torch's own default is 30 minutes), and no rank outlives
the probe: ranks are killed and reaped on failure, at the deadline, and when the probe is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from matrix.probe import ScriptProbe, probe


@probe(
    "torch.distributed",
    default_expect={"all_reduce_ok": True, "broadcast_ok": True},
    facts={
        "backend": "the backend used: gloo or nccl (auto picks nccl when every rank can have "
        "a GPU)",
        "world_size": "number of ranks",
        "host": "host name of the target",
        "port": "the rendezvous port on 127.0.0.1",
        "torch": "torch version on the target",
        "init_ms": "slowest rank's init_process_group (the rendezvous), milliseconds",
        "all_reduce_ms": "slowest rank's timed all_reduce of `elements` float32 values (after "
        "one untimed warm-up), milliseconds",
        "broadcast_ms": "slowest rank's broadcast of the same size from rank 0, milliseconds",
        "all_reduce_ok": "every rank finished and holds the right sum",
        "broadcast_ok": "every rank finished and holds rank 0's tensor",
        "ranks": '{rank: what went wrong} for each rank that failed, e.g. {"1": "killed at the '
        'deadline while waiting for the rendezvous at 127.0.0.1:29500"}; empty when all did',
        "problem": "what went wrong across the ranks and what to do; null when all is well",
    },
)
class TorchDistributed(ScriptProbe):
    """Local ranks rendezvous, all_reduce and broadcast with gloo (CPU) or NCCL (GPU).

    Errors, not facts: torch not installed, NCCL asked for without CUDA (or with fewer GPUs
    than ranks), a given `port` in use."""

    script = "torch_distributed"
    preload = ("torch", "torch.distributed")  # the agent imports it once; ranks are forks
    exclusive = True  # its ranks take every GPU (NCCL) or core they are given

    world_size: int = Field(2, ge=1)
    """Ranks to start on the target (NCCL needs one GPU each)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """auto: nccl when CUDA shows at least `world_size` GPUs, else gloo on the CPU."""
    port: int | None = Field(None, ge=1, le=65535)
    """Rendezvous port (MASTER_PORT); by default a free one is picked."""
    timeout: float = Field(30.0, gt=0)
    """Seconds for the whole probe: starting the ranks, the rendezvous and the collectives.
    init_process_group gets what is left of it, so no rank waits torch's 30-minute default.
    Keep the check's own `timeout` above it (its default, 60s, is)."""
    elements: int = Field(1_048_576, ge=1)
    """float32 values per tensor (4 MiB by default); raise it to measure bandwidth."""
