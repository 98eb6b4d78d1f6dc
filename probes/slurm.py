"""`slurm.connect`: can matrix run on the Slurm node? Every task on a node needs this first."""

from __future__ import annotations

from matrix.probe import probe
from probes.ssh import SshConnect


@probe(
    "slurm.connect",
    facts={
        "host": "the target's name as given",
        "via": "slurm",
        "node": "the node's name in Slurm",
        "partition": "the group's partition (null: the cluster's default)",
        "state": "the node's state as sinfo reports it (idle, mixed, allocated…)",
        "agent": "tasks run through one helper python in one srun job step",
        "agent_problem": "always null: a node whose helper cannot start is an error",
    },
)
class SlurmConnect(SshConnect):
    """Check the node's state in Slurm and start its helper through srun; a down, drained
    or failing node is an error that says why, and its checks are blocked."""
