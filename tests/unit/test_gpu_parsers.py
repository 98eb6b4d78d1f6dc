"""The parsers of probes/remote/gpu.py on recorded nvidia-smi, dcgmi and kernel-log output.

The functions are the remote script's own, loaded the way a target runs them (the program of
matrix/remote.py without its entry call), so nothing here duplicates parser code on the
controller side.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from matrix.remote import program

DATA = Path(__file__).resolve().parent.parent / "data" / "gpu"


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    """The namespace of the program a target runs, without its entry call (the last line)."""
    source, entry = program("gpu").rstrip(b"\n").rsplit(b"\n", 1)
    assert entry.endswith(b".main(observe, '{}')")
    namespace: dict[str, Any] = {"__name__": "remote_gpu"}
    with patch.dict(sys.modules):  # the program registers its prelude as a module
        exec(compile(source, "<stdin>", "exec"), namespace)
    return namespace


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_healthy_h100_node(gpu: dict[str, Any]) -> None:
    devices = gpu["parse_gpus"](read("h100x8-healthy.csv"))

    assert [d["index"] for d in devices] == list(range(8))
    first = devices[0]
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-0c7a1f55-2b1e-9d3f-7c44-1a9e55b0d2f1",
        "pci_bus_id": "00000000:18:00.0",
        "driver_version": "535.129.03",
        "persistence_mode": True,
        "temperature_c": 31,
        "memory_total_mb": 81559,
        "memory_used_mb": 0,
        "ecc_uncorrected_volatile": 0,
        "ecc_uncorrected_aggregate": 0,
        "retired_pages_pending": None,  # Hopper remaps rows instead of retiring pages
        "clock_reasons": ["gpu_idle"],
    }
    remapped = gpu["parse_remapped_rows"](read("h100x8-healthy-remapped-rows.csv"))
    assert not [p for d in devices for p in gpu["_device_problems"]({**d, **remapped[d["uuid"]]})]


def test_faulty_node_names_each_gpu_and_what_to_do(gpu: dict[str, Any]) -> None:
    devices = gpu["parse_gpus"](read("h100x8-faulty.csv"))
    remapped = gpu["parse_remapped_rows"](read("h100x8-faulty-remapped-rows.csv"))
    problems = []
    for device in devices:
        device.update(remapped[device["uuid"]])
        problems += gpu["_device_problems"](device)

    assert devices[1]["clock_reasons"] == ["sw_power_cap"]  # under load: not a problem
    assert devices[5]["clock_reasons"] == ["hw_slowdown", "sw_thermal_slowdown"]
    assert devices[6]["persistence_mode"] is False
    assert (devices[6]["ecc_uncorrected_volatile"], devices[6]["ecc_uncorrected_aggregate"]) == (
        0,
        1,
    )
    assert remapped[devices[3]["uuid"]] == {
        "remapped_rows_correctable": 0,
        "remapped_rows_uncorrectable": 2,
        "remapped_rows_pending": False,
        "remapped_rows_failure": False,
    }
    assert problems == [
        "GPU 3 (NVIDIA H100 80GB HBM3) has 2 uncorrected ECC errors — drain the node and open "
        "a ticket",
        "GPU 5 (NVIDIA H100 80GB HBM3) is throttled (hw_slowdown, sw_thermal_slowdown) — check "
        "cooling and power (nvidia-smi -q -d PERFORMANCE -i 5)",
        "GPU 6 (NVIDIA H100 80GB HBM3) has a memory row remap pending — reset the GPU "
        "(nvidia-smi -r -i 6) or reboot the node before use",
    ]


def test_na_and_not_supported_fields_are_null(gpu: dict[str, Any]) -> None:
    geforce, vgpu = gpu["parse_gpus"](read("na-fields.csv"))

    assert geforce["ecc_uncorrected_volatile"] is None and geforce["persistence_mode"] is False
    assert geforce["memory_used_mb"] == 412 and geforce["clock_reasons"] == ["gpu_idle"]
    assert vgpu["name"] == "GRID A100-40C" and vgpu["memory_total_mb"] == 40960
    for field in ("persistence_mode", "temperature_c", "memory_used_mb", "clock_reasons"):
        assert vgpu[field] is None, field
    assert (
        gpu["_sum"]([geforce["ecc_uncorrected_volatile"], vgpu["ecc_uncorrected_volatile"]]) is None
    )


def test_rows_that_are_not_devices_are_skipped(gpu: dict[str, Any]) -> None:
    text = (
        "Unable to determine the device handle for GPU0000:5D:00.0: Unknown Error\n"
        + read("h100x8-healthy.csv").splitlines()[0]
    )
    assert [d["index"] for d in gpu["parse_gpus"](text)] == [0]


@pytest.mark.parametrize(
    ("mask", "names"),
    [
        ("0x0000000000000000", []),
        ("0x0000000000000001", ["gpu_idle"]),
        ("0x00000000000000C8", ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"]),
        ("0x0000000000000200", ["unknown_0x200"]),
        ("[Not Supported]", None),
        ("garbage", None),
    ],
)
def test_clock_reasons_are_decoded(gpu: dict[str, Any], mask: str, names: list[str] | None):
    assert gpu["decode_reasons"](mask) == names


def test_xid_events_are_grouped_per_gpu_and_code(gpu: dict[str, Any]) -> None:
    events = gpu["parse_xid"](read("dmesg-xid.txt"))

    assert events == [
        {
            "pci": "0000:9a:00",
            "code": 13,
            "count": 2,
            "message": "Graphics Exception: ESR 0x525648=0x102000e 0x525650=0x20 "
            "0x525644=0xd3eff2 0x52564c=0x17f",
        },
        {
            "pci": "0000:5d:00",
            "code": 94,
            "count": 2,
            "message": "Contained: SM (0x1). RST: No, D-RST: No",
        },
        {
            "pci": "0000:5d:00",
            "code": 63,
            "count": 1,
            "message": "Row Remapper: New row (0x0000000011a3c180) Marked for Remapping, reset gpu "
            "to activate",
        },
    ]


def test_xid_problems_map_pci_to_gpus_and_skip_ignored_codes(gpu: dict[str, Any]) -> None:
    devices = gpu["parse_gpus"](read("h100x8-healthy.csv"))
    log = read("dmesg-xid.txt") + (
        "[99.1] NVRM: Xid (PCI:0000:c1:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen "
        "off the bus.\n"
    )
    events = gpu["match_xid"](gpu["parse_xid"](log), devices)

    problems = list(gpu["_xid_problems"](events, devices, {13, 63}))

    assert [e["gpu"] for e in events] == [4, 3, 3, None]
    assert problems == [
        "GPU 3 (NVIDIA H100 80GB HBM3) logged Xid 94 2 times since boot (Contained: SM (0x1). "
        "RST: No, D-RST: No) — drain the node and open a ticket",
        "the GPU at PCI 0000:c1:00 logged Xid 79 once since boot (GPU has fallen off the bus) — "
        "drain the node and open a ticket",
    ]


def test_dcgm_pass(gpu: dict[str, Any]) -> None:
    assert gpu["parse_dcgm"](read("dcgm-diag-pass.json")) == {
        "version": "4.1.1",
        "failures": [],
        "error": None,
    }


def test_dcgm_failures_come_from_the_json_structure(gpu: dict[str, Any]) -> None:
    result = gpu["parse_dcgm"](read("dcgm-diag-fail.json"))

    assert result["version"] == "4.1.1" and result["error"] is None
    assert result["failures"] == [
        "software on GPU 3: GPU 3 had uncorrectable memory errors and row remapping failed. "
        "Drain the GPU and reset it or reboot the node.",
        "software on GPU 6: GPU 6 had uncorrectable memory errors and row remapping is pending. "
        "Run 'nvidia-smi -r' to reset the GPU.; Persistence mode for GPU 6 is currently "
        "disabled. The DCGM diagnostic requires peristence mode to be enabled. Enable "
        'persistence mode by running "nvidia-smi -i <gpuId> -pm 1 " as root.',
    ]


def test_dcgm3_layout_and_leading_text(gpu: dict[str, Any]) -> None:
    result = gpu["parse_dcgm"](read("dcgm3-diag-fail.json"))

    assert result["version"] == "3.3.5"
    assert result["failures"] == [
        "Page Retirement/Row Remap on GPU 0,1,2,3,4,5,6,7: GPU 6 had uncorrectable memory "
        "errors and row remapping is pending. Run 'nvidia-smi -r' to reset the GPU."
    ]


def test_dcgm_that_cannot_run_is_an_error_not_a_failure(gpu: dict[str, Any]) -> None:
    text = "Error: unable to establish a connection to the specified host: localhost\n"
    no_engine = gpu["parse_dcgm"](text)
    runtime = gpu["parse_dcgm"](
        '{"DCGM Diagnostic": {"runtime_error": "The GPU is busy", "test_categories": []}}'
    )

    assert no_engine == {"version": None, "failures": None, "error": text.strip()}
    assert runtime == {"version": None, "failures": [], "error": "The GPU is busy"}


@pytest.mark.parametrize(
    ("bus_id", "key"),
    [
        ("00000000:3B:00.0", "0000:3b:00"),
        ("0000:3b:00", "0000:3b:00"),
        ("0001:C1:00.0", "0001:c1:00"),
    ],
)
def test_pci_keys_match_between_nvidia_smi_and_xid_lines(
    gpu: dict[str, Any], bus_id: str, key: str
):
    assert gpu["pci_key"](bus_id) == key
