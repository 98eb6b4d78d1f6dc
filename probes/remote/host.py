# Observe the host itself (params["op"]: memory | env).
import math
import os

from _memory import effective_memory, meminfo
from _prelude import by_op, gb

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def observe_memory(params):
    """The job's view: total and available are the effective figures (a cgroup limit counts)."""
    found = effective_memory()
    total, available = found["total"], found["available"]
    facts = {"total_gb": gb(total), "physical_gb": gb(found["physical"])}
    if available is not None:
        facts["available_gb"] = gb(available)
        used = 100.0 * (total - available) / total if total else 0.0
        facts["used_percent"] = round(min(max(used, 0.0), 100.0), 1)
    facts["limit_source"] = found["source"]
    info = meminfo()
    if "MemTotal" in info:  # off Linux there are no swap figures
        facts["swap_total_gb"] = gb(info.get("SwapTotal", 0))
        facts["swap_free_gb"] = gb(info.get("SwapFree", 0))
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
