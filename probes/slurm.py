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
        "job": "the id of the job the run holds on the group's nodes (each task is a step of it)",
        "state": "the node's state as sinfo reports it before the job (idle, mixed…)",
        "agent": "tasks run through one helper python in one step of the job",
        "agent_problem": "always null: a node whose helper cannot start is an error",
    },
)
class SlurmConnect(SshConnect):
    """Check the node's state in Slurm, wait for the group's job, and start the node's helper
    in a step of it; a down, drained or failing node, or one Slurm gives no job, is an error
    that says why, and its checks are blocked."""
