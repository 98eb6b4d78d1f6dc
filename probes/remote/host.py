# Observe the host itself (params["op"]: memory | env).
import math
import os

from _prelude import by_op, gb

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _meminfo():
    """/proc/meminfo in bytes; empty off Linux."""
    info = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                info[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return info


def observe_memory(params):
    info = _meminfo()
    if "MemTotal" in info:
        total = info["MemTotal"]
        available = info.get("MemAvailable")  # kernels before 3.14 lack it
        if available is None:
            available = sum(info.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
        swap = {"swap_total_gb": gb(info.get("SwapTotal", 0))}
        swap["swap_free_gb"] = gb(info.get("SwapFree", 0))
    else:  # macOS, BSD: no swap figures, and available only where sysconf has it
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        names = getattr(os, "sysconf_names", {})
        available = os.sysconf("SC_AVPHYS_PAGES") * page if "SC_AVPHYS_PAGES" in names else None
        swap = {}
    facts = {"total_gb": gb(total)}
    if available is not None:
        facts["available_gb"] = gb(available)
        facts["used_percent"] = round(100.0 * (total - available) / total, 1)
    facts.update(swap)
    return facts


def _number(text, kind):
    """`text` as an int or a finite float, or None."""
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _check(name, raw, params):
    """(typed value, problem or None) for a set variable."""
    kind = params.get("type") or "str"
    choices = params.get("choices")
    if choices is not None and raw not in choices:
        return raw, f"{name}={raw!r} is not one of {', '.join(choices)}"
    if kind == "bool":
        if raw.strip().lower() in TRUE + FALSE:
            return raw.strip().lower() in TRUE, None
        return None, f"{name}={raw!r} is not a bool (use 1/0, true/false, yes/no, on/off)"
    if kind == "path":
        path = os.path.expanduser(raw)
        return path, (None if os.path.exists(path) else f"{name}={raw} does not exist")
    if kind in ("int", "float"):
        value = _number(raw.strip(), kind)
        if value is None:
            what = "an int" if kind == "int" else "a number"
            return None, f"{name}={raw!r} is not {what}"
        low, high = params.get("min"), params.get("max")
        if low is not None and value < low:
            return value, f"{name}={raw} is below min {low:g}"
        if high is not None and value > high:
            return value, f"{name}={raw} is above max {high:g}"
        return value, None
    return raw, None


def observe_env(params):
    name = params["name"]
    raw = os.environ.get(name)
    facts = {"name": name, "present": raw is not None, "empty": raw == "", "value": raw}
    default = params.get("default")
    facts["defaulted"] = raw is None and default is not None
    if facts["defaulted"]:
        facts["typed"], problem = _check(name, default, params)
        facts["problem"] = problem and f"{name} is unset and its default is invalid: {problem}"
    elif raw is None:
        problem = f"{name} is not set" if params.get("required", True) else None
        facts.update(typed=None, problem=problem)
    else:
        facts["typed"], facts["problem"] = _check(name, raw, params)
    facts["valid"] = facts["problem"] is None
    return facts


observe = by_op({"memory": observe_memory, "env": observe_env})
