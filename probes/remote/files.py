# Observe a file, a directory or the disk holding a path (params["op"]: file | dir | disk).
import glob
import hashlib
import os
import re
import shutil
import stat

from _prelude import ObserveError, by_op, gb

CONTAINS_LIMIT = 16 << 20  # `contains` searches the first 16 MiB: enough for configs and logs


def _why(exc):
    return (exc.strerror or str(exc)).lower()


def _name(lookup, ident):
    """User or group name of an id; the id itself when the target has no such entry."""
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _owner(st):
    try:
        import grp
        import pwd
    except ImportError:  # not a POSIX target
        return str(st.st_uid), str(st.st_gid)
    return _name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid)


def _type(st):
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def _read(path, wanted, want_hash):
    """One pass over the file: hash all of it, search `wanted` in its first 16 MiB."""
    digest = hashlib.sha256() if want_hash else None
    head = b""
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                if digest is not None:
                    digest.update(chunk)
                if wanted and len(head) < CONTAINS_LIMIT:
                    head += chunk[: CONTAINS_LIMIT - len(head)]
                elif digest is None:
                    break
    except OSError as exc:
        raise ObserveError(f"cannot read {path}: {_why(exc)}") from None
    missing = [text for text in wanted if text.encode() not in head]
    return (digest.hexdigest() if digest else None), missing


def observe_file(params):
    path, want_hash = params["path"], params.get("sha256")
    wanted = params.get("contains") or []
    wanted = [wanted] if isinstance(wanted, str) else wanted
    facts = {"path": path, "symlink": os.path.islink(path)}
    if facts["symlink"]:
        facts["link_target"] = os.readlink(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ObserveError(f"cannot stat {path}: {_why(exc)}") from None
    digest, missing = None, wanted
    if st is None:
        facts.update(exists=False, type="missing")
    else:
        facts.update(exists=True, type=_type(st), size_bytes=st.st_size, mtime=st.st_mtime)
        facts["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
        facts["owner"], facts["group"] = _owner(st)
        facts["readable"] = os.access(path, os.R_OK)
        facts["writable"] = os.access(path, os.W_OK)
        if wanted or want_hash:
            if facts["type"] != "file":
                kind = facts["type"]
                raise ObserveError(
                    f"{path} is a {kind}; `contains` and `sha256` need a regular file"
                )
            digest, missing = _read(path, wanted, want_hash)
    if want_hash:
        facts["sha256"] = digest
    if wanted:
        facts["contains_missing"] = missing
    facts["contains_ok"] = not missing
    return facts


def observe_dir(params):
    path, required = params["path"], params.get("required") or []
    facts = {"path": path, "exists": os.path.exists(path), "is_dir": os.path.isdir(path)}
    facts.update(entries=0, files=[], missing=list(required), total_bytes=0)
    if not facts["is_dir"]:
        return facts
    try:
        children = list(os.scandir(path))
    except OSError as exc:
        raise ObserveError(f"cannot list {path}: {_why(exc)}") from None
    base = glob.escape(path)
    facts.update(
        entries=len(children),
        files=sorted(entry.name for entry in children)[:50],
        # follow symlinks: a Hugging Face snapshot is a dir of links into blobs/
        total_bytes=sum(e.stat().st_size for e in children if e.is_file()),
        missing=[p for p in required if not glob.glob(os.path.join(base, p))],
    )
    return facts


def _mount_point(path):
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _unescape(field):
    """/proc/mounts writes spaces and tabs in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_entry(mount):
    """(device, fstype) of the last /proc/mounts line for `mount`: the one on top."""
    found = None
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and _unescape(fields[1]) == mount:
                    found = fields[0], fields[2]
    except OSError:  # not Linux: device and fstype are best effort
        pass
    return found


def observe_disk(params):
    path = params["path"]
    if not os.path.exists(path):
        raise ObserveError(f"No such directory: {path} — is the volume mounted?")
    real = os.path.realpath(path)
    mount = _mount_point(real)
    usage = shutil.disk_usage(real)
    usable = usage.used + usage.free  # what df calls size for Use%: root's reserve excluded
    facts = {
        "path": path,
        "exists": True,
        "mount": mount,
        "is_mount": mount == real,
        "total_gb": gb(usage.total),
        "free_gb": gb(usage.free),
        "used_gb": gb(usage.used),
        "used_percent": round(100.0 * usage.used / usable, 1) if usable else 0.0,
    }
    entry = _mount_entry(mount)
    if entry:
        facts["device"], facts["fstype"] = entry
    return facts


observe = by_op({"file": observe_file, "dir": observe_dir, "disk": observe_disk})
