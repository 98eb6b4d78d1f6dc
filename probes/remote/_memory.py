# The module `_memory` of remote programs (matrix/remote.py): the memory this process will
# really get. Inside a container or a Slurm job a cgroup limits it, and a job that allocates past
# the limit is OOM-killed however much RAM /proc/meminfo shows. Stdlib only, python3 >= 3.8.
#
# The process's cgroups come from /proc/self/cgroup, where they are mounted from
# /proc/self/mountinfo, and the path is mapped onto the mount the way the JDK and automaxprocs
# do. Every limit on the way from the process's cgroup up to the mount's root counts: cgroup v2
# `memory.max` at each level, cgroup v1 `hierarchical_memory_limit` (else the smallest
# `memory.limit_in_bytes` up the tree). A hybrid host (v1 controllers, an empty v2 hierarchy
# beside them) has no v2 memory files, so its v1 memory controller is the one that counts.
# Nothing here raises: what cannot be read is not a limit.
import os

V1, V2 = "cgroup v1", "cgroup v2"


def meminfo(proc="/proc"):
    """/proc/meminfo in bytes ({"MemTotal": ..., "MemAvailable": ...}); empty off Linux."""
    info = {}
    try:
        with open(os.path.join(proc, "meminfo")) as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if fields:
                    info[name] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    except (OSError, ValueError):
        return {}
    return info


def effective_memory(proc="/proc", root="/"):
    """The memory this process will really get, in bytes:

    {"total": the smallest of physical RAM and every cgroup memory limit over this process,
     "available": what it can still allocate: the tightest limit less its cgroup's usage (not
         counting reclaimable page cache), never more than the host's MemAvailable; with no
         limit, MemAvailable. None only off Linux where sysconf cannot tell,
     "physical": physical RAM (MemTotal),
     "source": where `total` came from: "physical", or the limit's file, e.g.
         "cgroup v2 /sys/fs/cgroup/slurm/uid_0/job_12/memory.max"}

    `proc` is where /proc is and `root` is prefixed to the mount points in mountinfo, so a test
    can point both at a constructed tree."""
    info = meminfo(proc)
    if "MemTotal" not in info:
        return _sysconf()
    physical = info["MemTotal"]
    available = info.get("MemAvailable")  # kernels before 3.14 lack it
    if available is None:
        available = sum(info.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    found = {"total": physical, "available": min(available, physical)}
    found.update(physical=physical, source="physical")
    try:
        limits = _limits(proc, root, physical)
    except Exception:  # a layout nobody foresaw: RAM is still the honest answer
        limits = []
    for limit, headroom, source in limits:
        if limit < found["total"]:
            found["total"], found["source"] = limit, source
        found["available"] = min(found["available"], max(headroom, 0))
    return found


def _sysconf():
    """macOS, BSD: physical memory only, available where sysconf has it."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
    except (AttributeError, OSError, ValueError):
        total = 0
    available = None
    if "SC_AVPHYS_PAGES" in getattr(os, "sysconf_names", {}):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * page
        except (OSError, ValueError):
            available = None
    return {"total": total, "available": available, "physical": total, "source": "physical"}


def _limits(proc, root, physical):
    """[(limit, limit less usage, source)] for each cgroup level that limits memory below RAM."""
    v1_path, v2_path = _own_cgroups(os.path.join(proc, "self", "cgroup"))
    mounts = _mounts(os.path.join(proc, "self", "mountinfo"), root)
    found = []
    if v1_path is not None:
        directory = _cgroup_dir(mounts[V1], v1_path)
        if directory is not None:
            found += _v1_limits(directory[0], directory[1], physical)
    if v2_path is not None:
        directory = _cgroup_dir(mounts[V2], v2_path)
        if directory is not None:
            found += _v2_limits(directory[0], directory[1], physical)
    return found


def _own_cgroups(path):
    """(v1 memory cgroup path, v2 cgroup path) of this process; None where it has none."""
    v1 = v2 = None
    for line in _lines(path):
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, cgroup = parts
        if number == "0" and controllers == "":
            v2 = cgroup
        elif "memory" in controllers.split(","):
            v1 = cgroup
    return v1, v2


def _mounts(path, root):
    """{V1: [(mount root, mount point)] of v1 memory hierarchies, V2: the same of cgroup2}, the
    mount points under `root`."""
    mounts = {V1: [], V2: []}
    for line in _lines(path):
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 3:
            continue
        fstype = fields[dash + 1]
        options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        where = os.path.normpath(os.path.join(root, _unescape(fields[4]).lstrip("/")))
        if fstype == "cgroup" and "memory" in options:
            mounts[V1].append((_unescape(fields[3]), where))
        elif fstype == "cgroup2":
            mounts[V2].append((_unescape(fields[3]), where))
    return mounts


def _unescape(text):
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    for code in ("040", "011", "012", "134"):
        text = text.replace("\\" + code, chr(int(code, 8)))
    return text


def _cgroup_dir(mounts, cgroup):
    """(directory of `cgroup`, its mount point) in the first of `mounts` [(mount root, mount
    point)] that has it, else the first mount point that exists; None without one."""
    for mount_root, mount_point in mounts:
        directory = _mapped(mount_root, mount_point, cgroup)
        if os.path.isdir(directory):
            return directory, mount_point
    for _, mount_point in mounts:  # the cgroup is not visible: the mount's root still limits
        if os.path.isdir(mount_point):
            return mount_point, mount_point
    return None


def _mapped(mount_root, mount_point, cgroup):
    """Where `cgroup` is under this mount, like the JDK: the mount point plus the path, less the
    mount's root when the path starts with it (a container that sees only its own subtree)."""
    if mount_root == "/":
        relative = cgroup
    elif cgroup == mount_root or cgroup.startswith(mount_root.rstrip("/") + "/"):
        relative = cgroup[len(mount_root) :]
    else:  # a cgroup namespace: the path is relative to the namespace's root
        relative = cgroup
    directory = os.path.normpath(os.path.join(mount_point, relative.lstrip("/")))
    return directory if _within(directory, mount_point) else mount_point  # "/.." escapes


def _within(path, top):
    top = os.path.normpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")


def _levels(directory, mount_point):
    """`directory` and each parent up to the mount point, innermost first."""
    top = os.path.normpath(mount_point)
    while True:
        yield directory
        if directory == top or not _within(directory, top):
            return
        directory = os.path.dirname(directory)


def _v2_limits(directory, mount_point, physical):
    found = []
    for level in _levels(directory, mount_point):
        limit = _number(_first_line(os.path.join(level, "memory.max")))
        if limit is None or limit >= physical:  # absent, unreadable or "max"
            continue
        used = _usage(level, "memory.current", "inactive_file")
        found.append((limit, limit - used, V2 + " " + os.path.join(level, "memory.max")))
    return found


def _v1_limits(directory, mount_point, physical):
    levels = []
    for level in _levels(directory, mount_point):
        limit = _number(_first_line(os.path.join(level, "memory.limit_in_bytes")))
        if limit is not None and limit < physical:  # "unlimited" is 2^63 rounded to a page
            levels.append((limit, level))
    hierarchical = _number(_stat(directory).get("hierarchical_memory_limit"))
    if hierarchical is not None:
        # what the kernel enforces, including levels above the mount a container cannot see
        if hierarchical >= physical:
            return []
        named = [level for limit, level in levels if limit == hierarchical]
        if named:
            levels = [(hierarchical, named[0])]
        else:
            source = V1 + " " + os.path.join(directory, "memory.stat")
            used = _usage(directory, "memory.usage_in_bytes", "total_inactive_file")
            return [(hierarchical, hierarchical - used, source + " hierarchical_memory_limit")]
    found = []
    for limit, level in levels:
        used = _usage(level, "memory.usage_in_bytes", "total_inactive_file")
        found.append((limit, limit - used, V1 + " " + os.path.join(level, "memory.limit_in_bytes")))
    return found


def _usage(directory, usage_file, inactive):
    """Bytes the cgroup uses, less its inactive page cache (the kernel reclaims it before an
    OOM kill); 0 when unreadable."""
    used = _number(_first_line(os.path.join(directory, usage_file))) or 0
    cache = _number(_stat(directory).get(inactive)) or 0
    return max(used - cache, 0)


def _stat(directory):
    """memory.stat as {name: value text}."""
    stat = {}
    for line in _lines(os.path.join(directory, "memory.stat")):
        fields = line.split()
        if len(fields) == 2:
            stat[fields[0]] = fields[1]
    return stat


def _number(text):
    """An int from a cgroup file, or None ("max", empty, missing)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _first_line(path):
    lines = _lines(path)
    return lines[0].strip() if lines else None


def _lines(path):
    try:
        with open(path) as handle:
            return handle.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
