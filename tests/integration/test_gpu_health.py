"""`gpu.health` through the real engine on the local target. Only the GPU is faked: small
executables named nvidia-smi, dcgmi and dmesg print recorded output (tests/data/gpu) and are
the only programs on the target's PATH, which the local target inherits from os.environ."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from matrix.results import Result, Run

DATA = Path(__file__).resolve().parent.parent / "data" / "gpu"
DRIVER_DOWN = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
BOOT_LOG = "[    0.000000] Linux version 5.15.0-91-generic\n[   12.350664] NVRM: loading NVIDIA\n"


def tool(bin_dir: Path, name: str, outputs: dict[str, str], exit_code: int = 0) -> None:
    """An executable printing outputs[first argument that is a key] (or outputs[""])."""
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"outputs, code = {outputs!r}, {exit_code}\n"
        "key = next((a.split('=')[0] for a in sys.argv[1:] if a.split('=')[0] in outputs), '')\n"
        "sys.stdout.write(outputs.get(key, ''))\n"
        "sys.exit(code)\n"
    )
    script.chmod(0o755)


def nvidia_smi(bin_dir: Path, devices: str, remapped_rows: str) -> None:
    tool(
        bin_dir,
        "nvidia-smi",
        {
            "--query-gpu": (DATA / devices).read_text(),
            "--query-remapped-rows": (DATA / remapped_rows).read_text(),
        },
    )


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that is the whole PATH of the target."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


@pytest.fixture
def gpu_run(run_spec: Callable[..., Run], by_id: Callable[[Run], dict[str, Result]]):
    """gpu_run(rows) → results by check id; rows are YAML check lines under `checks:`."""

    def run(*rows: str) -> dict[str, Result]:
        checks = "\n".join(f"      - {row}" for row in rows)
        spec = f"version: 1\nname: gpus\nphases:\n  - id: gpu\n    checks:\n{checks}\n"
        return by_id(run_spec(spec))

    return run


def test_healthy_node_passes_the_fleet_expectations(bin_dir: Path, gpu_run) -> None:
    nvidia_smi(bin_dir, "h100x8-healthy.csv", "h100x8-healthy-remapped-rows.csv")
    tool(bin_dir, "dmesg", {"": BOOT_LOG})
    tool(bin_dir, "dcgmi", {"": (DATA / "dcgm-diag-pass.json").read_text()})

    results = gpu_run(
        "{id: default, probe: {kind: gpu.health}}",
        "{id: fleet, probe: {kind: gpu.health, dcgm: true}, expect: {nvidia_smi: {eq: true}, "
        "gpus: {ge: 8}, ecc_uncorrected: {eq: 0}, throttled: {len: 0}, xid: {len: 0}, "
        "dcgm_failures: {len: 0}, min_memory_gb: {ge: 79}}}",
    )

    assert {r.status.value for r in results.values()} == {"pass"}, results["fleet"].reason
    facts = results["fleet"].facts
    assert (facts["gpus"], facts["driver_version"], facts["ok"]) == (8, "535.129.03", True)
    assert (facts["xid"], facts["xid_source"], facts["dcgm"]) == ([], "dmesg", True)
    assert facts["dcgm_version"] == "4.1.1" and facts["problem"] is None
    assert facts["devices"][7]["remapped_rows_pending"] is False
    assert facts["devices"][7]["clock_reasons"] == ["gpu_idle"]


def test_faulty_node_fails_with_a_diagnostic_per_gpu(bin_dir: Path, gpu_run) -> None:
    nvidia_smi(bin_dir, "h100x8-faulty.csv", "h100x8-faulty-remapped-rows.csv")
    tool(bin_dir, "dmesg", {"": (DATA / "dmesg-xid.txt").read_text()})
    tool(bin_dir, "dcgmi", {"": (DATA / "dcgm-diag-fail.json").read_text()}, exit_code=226)

    results = gpu_run(
        "{id: default, probe: {kind: gpu.health, dcgm: false, xid: false}}",
        "{id: ecc, probe: {kind: gpu.health}, expect: {ecc_uncorrected: {eq: 0}}, "
        "diagnostic: '{{ facts.problems | first }}'}",
        "{id: everything, probe: {kind: gpu.health, xid_ignore: [13, 63]}}",
    )

    assert {r.status.value for r in results.values()} == {"fail"}
    assert results["default"].reason == (
        "GPU 3 (NVIDIA H100 80GB HBM3) has 2 uncorrected ECC errors — drain the node and open a "
        "ticket; GPU 5 (NVIDIA H100 80GB HBM3) is throttled (hw_slowdown, sw_thermal_slowdown) — "
        "check cooling and power (nvidia-smi -q -d PERFORMANCE -i 5); GPU 6 (NVIDIA H100 80GB "
        "HBM3) has a memory row remap pending — reset the GPU (nvidia-smi -r -i 6) or reboot the "
        "node before use (ok is false, expected == true)"
    )
    assert results["ecc"].diagnostic == (
        "GPU 3 (NVIDIA H100 80GB HBM3) has 2 uncorrected ECC errors — drain the node and open a "
        "ticket"
    )
    facts = results["everything"].facts
    assert (facts["ecc_uncorrected"], facts["ecc_uncorrected_aggregate"]) == (2, 3)
    assert facts["throttled"] == ["GPU 5: hw_slowdown, sw_thermal_slowdown"]
    assert (facts["remapped_rows_pending"], facts["remapped_rows_failed"]) == ([6], [])
    assert (facts["persistence_off"], facts["temperature_max_c"]) == ([6], 91)
    assert [(e["gpu"], e["code"], e["count"]) for e in facts["xid"]] == [
        (4, 13, 2),
        (3, 94, 2),
        (3, 63, 1),
    ]
    assert facts["problems"][3:] == [
        "GPU 3 (NVIDIA H100 80GB HBM3) logged Xid 94 2 times since boot (Contained: SM (0x1). "
        "RST: No, D-RST: No) — drain the node and open a ticket",
        "DCGM diag: software on GPU 3: GPU 3 had uncorrectable memory errors and row remapping "
        "failed. Drain the GPU and reset it or reboot the node. (act on DCGM's advice; if it "
        "gives none, drain the node and open a ticket)",
        "DCGM diag: software on GPU 6: GPU 6 had uncorrectable memory errors and row remapping is "
        "pending. Run 'nvidia-smi -r' to reset the GPU.; Persistence mode for GPU 6 is currently "
        "disabled. The DCGM diagnostic requires peristence mode to be enabled. Enable persistence "
        'mode by running "nvidia-smi -i <gpuId> -pm 1 " as root. (act on DCGM\'s advice; if it '
        "gives none, drain the node and open a ticket)",
    ]


def test_host_without_nvidia_tools_reports_facts_not_errors(bin_dir: Path, gpu_run) -> None:
    results = gpu_run(
        "{id: default, probe: {kind: gpu.health}}",
        "{id: dcgm-required, probe: {kind: gpu.health, dcgm: true}, expect: {gpus: 0}}",
    )

    facts = results["default"].facts
    assert (facts["nvidia_smi"], facts["gpus"], facts["devices"]) == (False, 0, [])
    assert (facts["xid"], facts["dcgm"], facts["dcgm_failures"]) == (None, False, None)
    assert facts["ecc_uncorrected"] is None and facts["throttled"] == []
    assert results["default"].status.value == "fail"
    assert results["default"].reason == (
        "nvidia-smi is not on PATH — install the NVIDIA driver, or run this check only on GPU "
        "hosts (nvidia_smi is false, expected == true; ok is false, expected == true)"
    )
    assert results["dcgm-required"].status.value == "pass"  # its own expect: only gpus
    assert results["dcgm-required"].facts["problems"][1] == (
        "dcgmi is not on PATH — install DCGM (datacenter-gpu-manager) or set `dcgm: auto`"
    )


def test_driver_that_does_not_answer_and_dcgm_without_host_engine(bin_dir: Path, gpu_run) -> None:
    tool(bin_dir, "nvidia-smi", {"": DRIVER_DOWN + "\n"}, exit_code=9)
    no_engine = "Error: unable to establish a connection to the specified host: localhost\n"
    tool(bin_dir, "dcgmi", {"": no_engine}, exit_code=255)

    results = gpu_run("{id: default, probe: {kind: gpu.health}}")

    facts = results["default"].facts
    assert (facts["nvidia_smi"], facts["gpus"]) == (False, 0)
    assert facts["problems"] == [
        f"nvidia-smi failed (exit 9): {DRIVER_DOWN} — drain the node; a GPU may have fallen off "
        "the bus or the driver is not loaded"
    ]
    # dcgm: auto reports a DCGM that cannot run without counting it against the host
    assert (facts["dcgm"], facts["dcgm_error"]) == (False, no_engine.strip())


def test_a_lost_gpu_fails_the_query_while_the_others_answer(bin_dir: Path, gpu_run) -> None:
    lost = "Unable to determine the device handle for GPU0000:5D:00.0: Unknown Error\n"
    rows = (DATA / "h100x8-healthy.csv").read_text().splitlines()
    tool(bin_dir, "nvidia-smi", {"--query-gpu": lost + "\n".join(rows[:3] + rows[4:])}, 15)

    results = gpu_run("{id: eight, probe: {kind: gpu.health}, expect: {gpus: {ge: 8}}}")

    assert results["eight"].status.value == "fail"
    facts = results["eight"].facts
    assert (facts["nvidia_smi"], facts["gpus"], facts["ok"]) == (True, 7, False)
    assert results["eight"].reason == (
        f"nvidia-smi failed (exit 15): {lost.strip()} — drain the node; a GPU may have fallen off "
        "the bus or the driver is not loaded (gpus is 7, expected >= 8)"
    )


def test_the_dcgm_level_is_asked_for_and_a_diagnostic_past_its_time_says_so(
    bin_dir: Path, gpu_run
) -> None:
    nvidia_smi(bin_dir, "h100x8-healthy.csv", "h100x8-healthy-remapped-rows.csv")
    passing, failing = (DATA / "dcgm-diag-pass.json").read_text(), "not JSON"
    tool(bin_dir, "dcgmi", {"3": passing, "": failing})  # answers well to `-r 3` only

    results = gpu_run(
        "{id: long, timeout: 60s, probe: {kind: gpu.health, dcgm: true, dcgm_level: 3, "
        "xid: false}}",
    )

    facts = results["long"].facts
    assert results["long"].status.value == "pass", results["long"].reason
    assert (facts["dcgm"], facts["dcgm_level"], facts["dcgm_failures"]) == (True, 3, [])

    slow = bin_dir / "dcgmi"
    slow.write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    results = gpu_run(
        "{id: cut, timeout: 3s, probe: {kind: gpu.health, dcgm: true, dcgm_level: 2, xid: false}}",
    )

    assert results["cut"].status.value == "fail", results["cut"].reason
    assert re.fullmatch(  # 3s less a second, less the time the probe took before it
        r"dcgmi diag -r 2 did not finish within (1\.\d|2\.0)s — give the check a timeout that "
        r"fits level 2 \(see `dcgm_level`\), or lower the level",
        results["cut"].facts["problem"],
    ), results["cut"].facts["problem"]
