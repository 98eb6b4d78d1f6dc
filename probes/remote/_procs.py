# The module `_procs`: a server as the processes that make it up (Linux /proc). A server is
# named by a pid, a pid file, a process name, a cgroup or a systemd unit; it is measured as
# its whole process tree (a pre-fork master and every worker, those started later too), or
# as every process of its cgroup.
import os
import socket

from _prelude import ObserveError

SHOWN = 64  # processes listed in facts; the totals count them all


def _read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def _stat(pid):
    """(parent pid, name) of a running process, else None."""
    try:
        text = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return (None if fields[0] == "Z" else int(fields[1])), name


def _processes():
    """{pid: (parent pid, name)} of every running process but zombies."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[0] is not None:
                found[int(entry)] = stat
    return found


def _cmdline(pid):
    try:
        words = _read(f"/proc/{pid}/cmdline", "rb").decode(errors="replace").split("\0")
    except OSError:
        return []
    return [word for word in words if word]


def _ancestors(pid, table):
    """The pids above `pid`, its parent first."""
    seen = set()
    pid = table[pid][0] if pid in table else None
    while pid in table and pid not in seen:
        seen.add(pid)
        pid = table[pid][0]
    return seen


def _cgroup_dir(spec):
    """The cgroup directory `cgroup:PATH` or `unit:NAME` (a systemd unit) names."""
    root = "/sys/fs/cgroup"
    kind, _, name = spec.partition(":")
    if kind == "cgroup":
        for base in (root, root + "/memory", root + "/unified"):
            path = os.path.join(base, name.strip("/"))
            if os.path.isfile(os.path.join(path, "cgroup.procs")):
                return path
        raise ObserveError(
            f"no cgroup {name} under {root} on {socket.gethostname()} — give its path as "
            "`cgroup:/system.slice/app.service` (see /proc/<server pid>/cgroup)"
        )
    for top, dirs, _ in os.walk(root):
        if name in dirs:
            return os.path.join(top, name)
    raise ObserveError(
        f"no systemd unit {name} has a cgroup on {socket.gethostname()} — check `systemctl "
        f"status {name}` (is it running?) or give the server's pid file as `process`"
    )


def _cgroup_members(path):
    members = set()
    for top, _, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                members.update(int(pid) for pid in _read(os.path.join(top, "cgroup.procs")).split())
            except OSError:
                continue
    return members


def _described(pid):
    return f"pid {pid} ({' '.join(_cmdline(pid))[:120]})"


def _from_pid_file(path, table, host):
    try:
        pid = int(_read(path).split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise ObserveError(f"cannot read a pid from {path} on {host}: {exc}") from None
    if pid not in table:
        raise ObserveError(
            f"{path} names pid {pid}, which is not running on {host}: the pid file is stale "
            "(the server exited or restarted without rewriting it) — start the server, or "
            "point `process` at the pid file it writes now"
        )
    return pid


def _by_name(name, table, host):
    """The one tree whose processes carry `name` (as their name or a word of their command
    line); several unrelated ones are an error listing them."""
    ours = {os.getpid(), *_ancestors(os.getpid(), table)}  # this script, the agent, matrix
    matched = {
        pid
        for pid, (_, comm) in table.items()
        if pid not in ours
        and (comm == name or any(os.path.basename(word) == name for word in _cmdline(pid)))
    }
    roots = sorted(pid for pid in matched if not _ancestors(pid, table) & matched)
    if not roots:
        raise ObserveError(
            f"no process named {name!r} runs on {host} — give the server's process name, pid, "
            "pid file or `unit:NAME.service` as `process`"
        )
    if len(roots) > 1:
        listed = "; ".join(_described(pid) for pid in roots[:5])
        raise ObserveError(
            f"{name!r} names {len(roots)} unrelated processes on {host}: {listed} — give the "
            "server's pid file, pid or `unit:NAME.service` as `process` to say which"
        )
    return roots[0]


class Server:
    """The processes `spec` names, found once; `members()` lists them now (a tree is walked
    again, so workers started later count)."""

    def __init__(self, spec):
        self.spec, self.host = spec, socket.gethostname()
        table = _processes()
        self.root, self.cgroup = None, None
        if spec.isdigit():
            if int(spec) not in table:
                raise ObserveError(f"no process {spec} runs on {self.host}")
            self.root = int(spec)
        elif spec.startswith("/"):
            self.root = _from_pid_file(spec, table, self.host)
        elif spec.startswith(("cgroup:", "unit:")):
            self.cgroup = _cgroup_dir(spec)
            if not _cgroup_members(self.cgroup):
                raise ObserveError(f"{spec} has no processes on {self.host}: is it running?")
        else:
            self.root = _by_name(spec, table, self.host)

    def members(self):
        """{pid: name} of the server's processes now; ObserveError when it is gone."""
        table = _processes()
        if self.cgroup:
            pids = {pid for pid in _cgroup_members(self.cgroup) if pid in table}
            if not pids:
                raise ObserveError(f"{self.spec} has no processes left on {self.host}")
            return {pid: table[pid][1] for pid in pids}
        if self.root not in table:
            raise ObserveError(
                f"the server's process {self.root} ({self.spec}) on {self.host} is gone: it "
                "died under load — see its log (an out-of-memory kill shows in dmesg)"
            )
        children = {}
        for pid, (parent, _) in table.items():
            children.setdefault(parent, []).append(pid)
        tree, todo = {}, [self.root]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree[pid] = table[pid][1]
                todo.extend(children.get(pid, ()))
        return tree


def rss_mb(pid):
    """Resident memory of a process in MiB; None once it is gone."""
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        return None
    return 0.0  # a kernel thread: no user memory


def snapshot(server):
    """{pid: (name, rss MiB)} of the server's processes now."""
    found = {}
    for pid, name in server.members().items():
        rss = rss_mb(pid)
        if rss is not None:
            found[pid] = (name, rss)
    return found


def _pct(before, after):
    return round((after - before) / before * 100, 1) if before else None


def growth(before, after):
    """Facts of the server's memory between two snapshots: per process and in total, the
    processes that exited, and `rss_growth_pct`, the worse of the total's and any one
    process's growth (a leak in one of eight workers is an eighth of the total)."""
    rows = []
    for pid in sorted(set(before) | set(after)):
        name, start = before.get(pid, (after.get(pid, ("?",))[0], None))
        end = after.get(pid, (name, None))[1]
        grew = _pct(start, end) if None not in (start, end) else None
        rows.append({"pid": pid, "name": name, "rss_before_mb": start, "rss_after_mb": end,
                     "growth_pct": grew})  # fmt: skip
    total_before = round(sum(rss for _, rss in before.values()), 2)
    total_after = round(sum(rss for _, rss in after.values()), 2)
    total = _pct(total_before, total_after)
    each = [row["growth_pct"] for row in rows if row["growth_pct"] is not None]
    worst = max(each + ([total] if total is not None else []), default=None)
    return {
        "processes": rows[:SHOWN],
        "process_count": len(after),
        "exited": [row["pid"] for row in rows if row["rss_after_mb"] is None],
        "rss_before_mb": total_before,
        "rss_after_mb": total_after,
        "rss_total_growth_pct": total,
        "rss_growth_pct": worst,
    }
