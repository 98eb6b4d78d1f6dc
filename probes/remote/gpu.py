# Observe NVIDIA GPU health: nvidia-smi queries, DCGM's quick diagnostic, Xid errors in the
# kernel log. Stdlib only; a host without NVIDIA tools is a fact (nvidia_smi: false).
import csv
import json
import re
import shutil
import subprocess
import time

GPU_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "driver_version",
    "persistence_mode",
    "temperature.gpu",
    "memory.total",
    "memory.used",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "retired_pages.pending",
)
# drivers from 535 call the bitmask clocks_event_reasons; older ones know only the first name
REASON_FIELDS = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")
REMAP_FIELDS = (
    "gpu_uuid",
    "remapped_rows.correctable",
    "remapped_rows.uncorrectable",
    "remapped_rows.pending",
    "remapped_rows.failure",
)
REMAP_FACTS = tuple(name.replace(".", "_") for name in REMAP_FIELDS[1:])
# nvmlClocksEventReasons bits (nvml.h)
REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# the reasons that mean the hardware is held back (heat, power brake, a slowdown signal);
# idle, a power cap under load and application clocks are normal operation
SLOWDOWNS = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown")
XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+)[^)]*\): (\d+),?\s*(.*)"
)
XID_PROCESS = re.compile(r"^pid=[^,]*,\s*name=[^,]*,\s*")
SMI_TIMEOUT = 30  # a hung driver makes nvidia-smi hang too
DCGM_TIMEOUT = 300  # without `dcgm_timeout`: `-r 1` takes seconds, a busy host minutes
STARTED = time.monotonic()  # `dcgm_timeout` counts from the script's start, not dcgmi's
LOG_TIMEOUT = 20


def _run(argv, timeout):
    """(exit code, stdout, stderr) of argv; None when the program is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"{argv[0]} did not answer within {timeout}s"
    return done.returncode, done.stdout, done.stderr


def _value(text):
    """A CSV cell without the markers nvidia-smi writes for absent values ([N/A], ...)."""
    text = text.strip()
    return None if not text or text.startswith("[") or text == "N/A" else text


def _int(text):
    value = _value(text)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _flag(text):
    value = _value(text)
    if value is None:
        return None
    return value.lower() in ("enabled", "yes", "1", "true")


def _rows(text):
    return [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if row]


def decode_reasons(text):
    """Names of the bits set in a clocks-event bitmask such as 0x0000000000000048."""
    value = _value(text)
    if value is None:
        return None
    try:
        mask = int(value, 16)
    except ValueError:
        return None
    names = [name for bit, name in sorted(REASONS.items()) if mask & bit]
    unknown = mask & ~sum(REASONS)
    return names + ([f"unknown_0x{unknown:x}"] if unknown else [])


def parse_gpus(text):
    """Devices from `nvidia-smi --query-gpu=<GPU_FIELDS + a reason field> --format=csv,...`."""
    devices = []
    for row in _rows(text):
        if len(row) != len(GPU_FIELDS) + 1:
            continue  # a warning line, not a device row
        cell = dict(zip(GPU_FIELDS, row))
        devices.append(
            {
                "index": _int(cell["index"]),
                "name": _value(cell["name"]),
                "uuid": _value(cell["uuid"]),
                "pci_bus_id": _value(cell["pci.bus_id"]),
                "driver_version": _value(cell["driver_version"]),
                "persistence_mode": _flag(cell["persistence_mode"]),
                "temperature_c": _int(cell["temperature.gpu"]),
                "memory_total_mb": _int(cell["memory.total"]),
                "memory_used_mb": _int(cell["memory.used"]),
                "ecc_uncorrected_volatile": _int(cell["ecc.errors.uncorrected.volatile.total"]),
                "ecc_uncorrected_aggregate": _int(cell["ecc.errors.uncorrected.aggregate.total"]),
                "retired_pages_pending": _flag(cell["retired_pages.pending"]),
                "clock_reasons": decode_reasons(row[-1]),
            }
        )
    return devices


def parse_remapped_rows(text):
    """{uuid: row-remapper state} from `nvidia-smi --query-remapped-rows=<REMAP_FIELDS>`."""
    rows = {}
    for row in _rows(text):
        if len(row) != len(REMAP_FIELDS) or not row[0].startswith("GPU-"):
            continue
        values = (_int(row[1]), _int(row[2]), _flag(row[3]), _flag(row[4]))
        rows[row[0]] = dict(zip(REMAP_FACTS, values))
    return rows


def pci_key(bus_id):
    """'00000000:3B:00.0' (nvidia-smi) and '0000:3b:00' (an Xid line) → '0000:3b:00'."""
    domain, bus, device = bus_id.lower().split(".")[0].split(":")[-3:]
    return f"{domain[-4:]}:{bus}:{device}"


def parse_xid(text):
    """Xid events of a kernel log: [{pci, code, count, message}], one per (GPU, code)."""
    seen = {}
    for line in text.splitlines():
        found = XID.search(line)
        if not found:
            continue
        pci, code = pci_key(found.group(1)), int(found.group(2))
        message = XID_PROCESS.sub("", found.group(3)).strip().rstrip(".")
        event = seen.setdefault((pci, code), {"pci": pci, "code": code, "count": 0})
        event["count"] += 1
        event["message"] = message  # the latest wording
    return list(seen.values())


def _kernel_log():
    """(text, source) of the kernel log since boot; (None, None) when it cannot be read
    (dmesg_restrict, no journal access). An empty log counts as unreadable: a booted
    kernel has always logged something."""
    for argv in (["dmesg"], ["journalctl", "-k", "-b", "-q", "--no-pager", "-o", "cat"]):
        done = _run(argv, LOG_TIMEOUT)
        if done is not None and done[0] == 0 and done[1].strip():
            return done[1], argv[0]
    return None, None


def _label(entry):
    """'GPU 3' for a DCGM result entry (4.x entity fields, or 3.x gpu_ids)."""
    if "entity_id" in entry:
        return f"{entry.get('entity_group') or 'GPU'} {entry['entity_id']}"
    ids = entry.get("gpu_ids", entry.get("gpu_id"))
    return f"GPU {ids}" if ids not in (None, "") else "all GPUs"


def _warnings(entry):
    texts = []
    for item in entry.get("warnings") or []:
        text = item.get("warning") if isinstance(item, dict) else item
        if text:
            texts.append(" ".join(str(text).split()))
    return texts


def parse_dcgm(text):
    """{version, failures, error} from `dcgmi diag -r 1 --json` (DCGM 3.x or 4.x layout)."""
    start = text.find("{")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else (None, 0)
    except ValueError:
        doc = None
    root = None
    if isinstance(doc, dict):
        root = doc.get("DCGM Diagnostic") or doc.get("DCGM GPU Diagnostic")
    if not isinstance(root, dict):
        tail = " ".join(text.split())[-300:]
        return {"version": None, "failures": None, "error": tail or "no output"}
    failures = []
    for category in root.get("test_categories") or []:
        for test in category.get("tests") or []:
            name = test.get("name") or category.get("category") or "test"
            failed = False
            for entry in test.get("results") or []:
                if str(entry.get("status", "")).lower() == "fail":
                    failed = True
                    why = "; ".join(_warnings(entry)) or "failed"
                    failures.append(f"{name} on {_label(entry)}: {why}")
            summary = str((test.get("test_summary") or {}).get("status", "")).lower()
            if summary == "fail" and not failed:
                failures.append(f"{name}: failed")
    metadata = doc.get("metadata") or {}
    version = metadata.get("version") or root.get("version")
    return {"version": version, "failures": failures, "error": root.get("runtime_error") or None}


def _query_gpus():
    """(exit code, stdout, stderr) of the device query, trying each name of the reasons field."""
    for reason in REASON_FIELDS:
        fields = ",".join((*GPU_FIELDS, reason))
        done = _run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"], SMI_TIMEOUT
        )
        if done is None or "is not a valid field" not in done[1] + done[2]:
            return done
    return done


def _gpu_name(device):
    return f"GPU {device['index']} ({device['name'] or 'unknown model'})"


def _device_problems(device):
    gpu, index = _gpu_name(device), device["index"]
    ecc = device["ecc_uncorrected_volatile"]
    if ecc:
        yield f"{gpu} has {ecc} uncorrected ECC errors — drain the node and open a ticket"
    if device["remapped_rows_failure"]:
        yield (
            f"{gpu} ran out of spare memory rows (row remapping failed) — drain the node and "
            "RMA the GPU"
        )
    if device["remapped_rows_pending"]:
        yield (
            f"{gpu} has a memory row remap pending — reset the GPU (nvidia-smi -r -i {index}) "
            "or reboot the node before use"
        )
    if device["retired_pages_pending"]:
        yield (
            f"{gpu} has memory pages pending retirement — reset the GPU "
            f"(nvidia-smi -r -i {index}) or reboot the node before use"
        )
    slow = [r for r in device["clock_reasons"] or () if r in SLOWDOWNS]
    if slow:
        yield (
            f"{gpu} is throttled ({', '.join(slow)}) — check cooling and power "
            f"(nvidia-smi -q -d PERFORMANCE -i {index})"
        )


def match_xid(events, devices):
    """Each Xid event with `gpu`: the index of the GPU at its PCI address, or null when
    nvidia-smi does not list that GPU (one that fell off the bus)."""
    by_pci = {pci_key(d["pci_bus_id"]): d["index"] for d in devices if d["pci_bus_id"]}
    for event in events:
        event["gpu"] = by_pci.get(event["pci"])
    return events


def _xid_problems(events, devices, ignore):
    names = {d["index"]: _gpu_name(d) for d in devices}
    for event in events:
        if event["code"] in ignore:
            continue
        where = names.get(event["gpu"]) or f"the GPU at PCI {event['pci']}"
        times = "once" if event["count"] == 1 else f"{event['count']} times"
        yield (
            f"{where} logged Xid {event['code']} {times} since boot ({event['message']}) — "
            "drain the node and open a ticket"
        )


def _smi_failure(done):
    code, out, err = done
    lines = [
        line.strip()
        for line in (err + "\n" + out).splitlines()
        if line.strip() and not parse_gpus(line)  # the devices that did answer
    ]
    return f"nvidia-smi failed (exit {code}): {' '.join(lines[:3]) or 'no output'}"


def _sum(values):
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def observe_nvidia(facts, problems):
    done = _query_gpus()
    if done is None:
        problems.append(
            "nvidia-smi is not on PATH — install the NVIDIA driver, or run this check only on "
            "GPU hosts"
        )
        return []
    devices = parse_gpus(done[1])
    facts["nvidia_smi"] = bool(devices)
    if done[0] != 0:  # a lost GPU fails the query while the others still answer
        problems.append(
            _smi_failure(done) + " — drain the node; a GPU may have fallen off the bus or the "
            "driver is not loaded"
        )
    elif not devices:
        problems.append("nvidia-smi lists no GPUs — check the driver (nvidia-smi -L)")
    if not devices:
        return []
    remap = _run(
        ["nvidia-smi", f"--query-remapped-rows={','.join(REMAP_FIELDS)}", "--format=csv,noheader"],
        SMI_TIMEOUT,
    )
    remapped = parse_remapped_rows(remap[1]) if remap and remap[0] == 0 else {}
    for device in devices:
        device.update(remapped.get(device["uuid"]) or dict.fromkeys(REMAP_FACTS))
        device["throttled"] = [r for r in device["clock_reasons"] or () if r in SLOWDOWNS]
        problems.extend(_device_problems(device))
    return devices


def observe_dcgm(mode, level, timeout, facts, problems):
    timeout = round(max(0.1, timeout - (time.monotonic() - STARTED)), 1)  # what is left of it
    done = _run(["dcgmi", "diag", "-r", str(level), "--json"], timeout) if mode else None
    facts.update(dcgm=False, dcgm_level=level, dcgm_version=None, dcgm_failures=None)
    facts["dcgm_error"] = None
    if done is None:
        if mode is True:
            problems.append(
                "dcgmi is not on PATH — install DCGM (datacenter-gpu-manager) or set `dcgm: auto`"
            )
        return
    if done[0] == -1:  # _run's timeout: cut short, so nothing is known of the GPUs
        why = (
            f"dcgmi diag -r {level} did not finish within {timeout:g}s — give the check a "
            f"timeout that fits level {level} (see `dcgm_level`), or lower the level"
        )
        result = {"version": None, "failures": None, "error": why}
        problem = why
    else:
        result = parse_dcgm(done[1] + "\n" + done[2])
        problem = (
            f"dcgmi diag could not run: {result['error']} — start the DCGM host engine "
            "(systemctl start nvidia-dcgm) or set `dcgm: auto`"
        )
    facts.update(dcgm_version=result["version"], dcgm_failures=result["failures"])
    if result["failures"] is None or result["error"]:
        facts["dcgm_error"] = result["error"]
        if mode is True:
            problems.append(problem)
        return
    facts["dcgm"] = True
    problems.extend(
        f"DCGM diag: {failure} (act on DCGM's advice; if it gives none, drain the node and "
        "open a ticket)"
        for failure in result["failures"]
    )


def observe(params):
    facts = {"nvidia_smi": False}
    problems = []
    devices = observe_nvidia(facts, problems)
    known = [d for d in devices if d["memory_total_mb"] is not None]
    temperatures = [d["temperature_c"] for d in devices if d["temperature_c"] is not None]
    facts.update(
        driver_version=next((d["driver_version"] for d in devices if d["driver_version"]), None),
        gpus=len(devices),
        devices=devices,
        ecc_uncorrected=_sum(d["ecc_uncorrected_volatile"] for d in devices),
        ecc_uncorrected_aggregate=_sum(d["ecc_uncorrected_aggregate"] for d in devices),
        retired_pages_pending=[d["index"] for d in devices if d["retired_pages_pending"]],
        remapped_rows_pending=[d["index"] for d in devices if d["remapped_rows_pending"]],
        remapped_rows_failed=[d["index"] for d in devices if d["remapped_rows_failure"]],
        throttled=[
            f"GPU {d['index']}: {', '.join(d['throttled'])}" for d in devices if d["throttled"]
        ],
        persistence_off=[d["index"] for d in devices if d["persistence_mode"] is False],
        temperature_max_c=max(temperatures) if temperatures else None,
        min_memory_gb=round(min(d["memory_total_mb"] for d in known) / 1024, 2) if known else None,
        xid=None,
        xid_source=None,
    )
    if params.get("xid", True):
        log, source = _kernel_log()
        if log is not None:
            facts["xid"] = match_xid(parse_xid(log), devices)
            facts["xid_source"] = source
            problems.extend(
                _xid_problems(facts["xid"], devices, set(params.get("xid_ignore") or ()))
            )
    level, timeout = params.get("dcgm_level", 1), params.get("dcgm_timeout", DCGM_TIMEOUT)
    observe_dcgm(params.get("dcgm", "auto"), level, timeout, facts, problems)
    facts.update(ok=not problems, problems=problems, problem="; ".join(problems) or None)
    return facts
