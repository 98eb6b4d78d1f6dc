"""`memory`, `env`: the memory a job on the target gets (a cgroup limit counts) and its
environment, read by probes/remote/host.py with probes/remote/_memory.py.

Environment variables are read on the target, where the pipeline will run, not in matrix's own
process; a `path` variable is checked for existence there too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from matrix.probe import ScriptProbe, probe


class _Host(ScriptProbe):
    script = "host"
    libraries = ("_memory",)


@probe(
    "memory",
    facts={
        "total_gb": "effective memory in GB (1024³ bytes): the smallest of physical RAM and the "
        "cgroup (v1/v2) limit of the process; in a container or Slurm job that is the job's limit",
        "available_gb": "GB the job can still allocate without swapping or an OOM kill: under a "
        "cgroup limit, the limit less the cgroup's usage (not counting reclaimable page cache), "
        "never more than the host's MemAvailable; else MemAvailable",
        "used_percent": "share of total_gb not available, 0-100",
        "physical_gb": "physical RAM of the host in GB (MemTotal), whatever the limit",
        "limit_source": "where total_gb came from: the cgroup file, e.g. "
        '"cgroup v2 /sys/fs/cgroup/slurm/uid_0/job_12/memory.max" or '
        '"cgroup v1 /sys/fs/cgroup/memory/docker/<id>/memory.limit_in_bytes", or "physical"',
        "swap_total_gb": "swap size in GB (Linux only)",
        "swap_free_gb": "unused swap in GB (Linux only)",
    },
)
class Memory(_Host):
    """The memory a job on the target will really get, and swap; passes when observed, so set
    `expect`.

    Inside a container or a Slurm job the process's cgroup limit (v1 or v2) is what it gets,
    not the host's RAM: a job that allocates past it is OOM-killed. `limit_source` says which
    limit counted, `physical_gb` what the host has."""


@probe(
    "env",
    default_expect={"valid": True},
    facts={
        "name": "the variable's name",
        "present": "the variable is set (possibly to an empty string)",
        "empty": "it is set to an empty string",
        "value": "the raw value (redacted when the name is in `secrets`)",
        "typed": "the value (or the `default`, when unset) converted to `type`; null when "
        "unset without a default, or unconvertible",
        "defaulted": "unset, so the `default` was checked and `typed` holds it",
        "valid": "set (or not required, or defaulted), of the right type, in range and among "
        "`choices`",
        "problem": 'why it is not valid, e.g. "BATCH=0 is below min 1"; null when valid',
    },
)
class Env(_Host):
    """An environment variable on the target, typed and range-checked."""

    name: str
    """Variable name, e.g. CUDA_VISIBLE_DEVICES."""
    type: Literal["str", "int", "float", "bool", "path"] = "str"
    """bool takes 1/0, true/false, yes/no, on/off; path must exist on the target."""
    min: float | None = None
    """Smallest allowed value (int and float only)."""
    max: float | None = None
    """Largest allowed value (int and float only)."""
    choices: list[str] | None = None
    """Allowed raw values."""
    required: bool = True
    """When false, an unset variable is valid."""
    default: str | None = None
    """Value the program falls back to when the variable is unset: it is checked like a set
    value (type, range, choices) and makes the variable optional."""

    @model_validator(mode="after")
    def _numeric_bounds(self) -> Env:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min and max need type int or float, not {self.type}")
        return self
