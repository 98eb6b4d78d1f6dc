"""`gpu.health`: what a GPU fleet checks before it accepts work, read by probes/remote/gpu.py.

The remote script asks `nvidia-smi` (CSV queries), `dcgmi diag -r 1 --json` when DCGM is
installed, and the kernel log for Xid errors. A host without NVIDIA tools is a fact
(`nvidia_smi: false`), not an error, so one spec can run on mixed fleets.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from matrix.probe import ProbeContext, ScriptProbe, probe

DCGM_SECONDS = {1: 300, 2: 900, 3: 3600, 4: 10800}  # time each level may take, at most


@probe(
    "gpu.health",
    default_expect={"nvidia_smi": True, "ok": True},
    facts={
        "nvidia_smi": "nvidia-smi is installed and listed at least one GPU",
        "driver_version": 'NVIDIA driver version, e.g. "535.129.03"',
        "gpus": "number of GPUs nvidia-smi lists (0 without nvidia-smi)",
        "devices": "per GPU: index, name, uuid, pci_bus_id, persistence_mode, temperature_c, "
        "memory_total_mb, memory_used_mb, ecc_uncorrected_volatile, ecc_uncorrected_aggregate, "
        "retired_pages_pending, remapped_rows_*, clock_reasons (active, decoded), throttled; "
        "null where the GPU reports [N/A] or [Not Supported]",
        "ecc_uncorrected": "uncorrected ECC errors since the driver loaded (volatile), summed "
        "over GPUs; null when no GPU reports ECC",
        "ecc_uncorrected_aggregate": "uncorrected ECC errors over the GPUs' lifetime, summed "
        "(not part of `ok`: a GPU whose rows were remapped after an error is usable)",
        "retired_pages_pending": "indices of GPUs with memory pages waiting for a reset to retire",
        "remapped_rows_pending": "indices of GPUs with a memory row remap waiting for a reset",
        "remapped_rows_failed": "indices of GPUs that ran out of spare rows (RMA)",
        "throttled": 'GPUs held back by hardware, e.g. "GPU 3: hw_slowdown, sw_thermal_slowdown" '
        "(idle, sw_power_cap and application clocks are normal and not listed)",
        "persistence_off": "indices of GPUs with persistence mode disabled (not part of `ok`)",
        "temperature_max_c": "hottest GPU, °C",
        "min_memory_gb": "memory of the smallest GPU in GB (1024³ bytes)",
        "xid": "Xid errors in the kernel log since boot, one entry per GPU and code: "
        "{gpu, pci, code, count, message}; null when the log cannot be read (no guessing)",
        "xid_source": "dmesg or journalctl; null when neither could be read",
        "dcgm": "`dcgmi diag -r LEVEL` ran and its JSON was read",
        "dcgm_level": "the diagnostic level asked for (`dcgm_level`)",
        "dcgm_version": "DCGM version from the diagnostic's JSON",
        "dcgm_failures": 'failed DCGM tests, e.g. "memory on GPU 3: <DCGM\'s message>"; null '
        "when the diagnostic did not run",
        "dcgm_error": "why dcgmi diag could not run (e.g. no host engine); null otherwise",
        "problems": "every finding that makes the host unhealthy, each with what to do",
        "problem": "the problems joined by '; '; null when healthy",
        "ok": "no problems: GPUs listed, no volatile uncorrected ECC errors, no pending "
        "retirement or remap, no remap failure, no hardware throttling, no Xid outside "
        "`xid_ignore`, no DCGM failure",
    },
)
class GpuHealth(ScriptProbe):
    """NVIDIA GPU health: count, ECC, row remapping, throttling, Xid errors, DCGM's quick diag."""

    script = "gpu"
    exclusive = True  # DCGM's diagnostic loads the GPUs; it must not overlap torch probes

    dcgm: bool | Literal["auto"] = "auto"
    """Run `dcgmi diag -r LEVEL --json`: auto when dcgmi is installed (a DCGM that cannot run
    is reported, not counted against the host); true requires it; false skips it."""
    dcgm_level: int = Field(1, ge=1, le=4)
    """DCGM's diagnostic level: 1 quick (seconds), 2 medium (about 2 minutes), 3 long (about
    30 minutes), 4 extended (about 2 hours, stresses the GPUs: drain the node first). Give
    the check a `timeout` that fits the level: the diagnostic gets the level's usual time,
    at most what is left of the check's timeout less 10% (at least a second, for the rest
    of the probe), and a diagnostic cut short says so."""

    def script_params(self, ctx: ProbeContext) -> dict[str, Any]:
        """The diagnostic's own time bound, from its level and the task's timeout; the script
        takes off what it spent before the diagnostic (nvidia-smi, the kernel log)."""
        budget = min(DCGM_SECONDS[self.dcgm_level], ctx.timeout - max(ctx.timeout * 0.1, 1.0))
        return {**super().script_params(ctx), "dcgm_timeout": round(budget, 1)}

    xid: bool = True
    """Read the kernel log (dmesg, else journalctl -k) for Xid errors since boot."""
    xid_ignore: list[int] = Field(default_factory=lambda: [13, 31, 43, 45])
    """Xid codes that do not make the host unhealthy. The default ignores the codes NVIDIA
    attributes to applications (13, 31, 43, 45: exceptions, page faults, stopped work)."""
