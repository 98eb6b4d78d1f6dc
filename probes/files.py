"""`file`, `dir`, `disk`: what is on the target's filesystem, read by probes/remote/files.py.

One remote script serves all three (params carry `op`), so a check against a remote host reads
the host's filesystem, never the controller's. Sizes are in GB of 1024³ bytes, like `df -h`.
"""

from __future__ import annotations

from pydantic import Field

from matrix.probe import ScriptProbe, probe


class _Filesystem(ScriptProbe):
    script = "files"


@probe(
    "file",
    default_expect={"exists": True, "contains_ok": True},
    facts={
        "path": "the path as given",
        "exists": "false when nothing is there (a missing file is a fact, not an error)",
        "type": "file | dir | other | missing, after following symlinks",
        "symlink": "the path itself is a symbolic link",
        "link_target": "where the symlink points, present only for symlinks",
        "size_bytes": "size in bytes",
        "mode": "permission bits as an octal string, e.g. 0644",
        "owner": "owning user name (the uid when the target has no such user)",
        "group": "owning group name (likewise the gid)",
        "mtime": "last modification, seconds since the epoch",
        "readable": "the probing user may read it",
        "writable": "the probing user may write it",
        "sha256": "hex digest of the content, present when `sha256: true`",
        "contains_missing": "the `contains` strings absent from the first 16 MiB",
        "contains_ok": "every `contains` string was found (true when none were asked for)",
    },
)
class File(_Filesystem):
    """A file that must exist, optionally holding given text or a known hash."""

    path: str
    """File to inspect; symlinks are followed."""
    contains: str | list[str] | None = None
    """Plain substrings (not regexes) that must appear in the first 16 MiB."""
    sha256: bool = False
    """Hash the whole content; compare with `expect: {sha256: <hex>}`."""


@probe(
    "dir",
    default_expect={"exists": True, "is_dir": True, "missing": {"len": 0}},
    facts={
        "path": "the path as given",
        "exists": "something is at the path",
        "is_dir": "it is a directory (symlinks followed)",
        "entries": "number of direct children",
        "files": "names of the direct children, sorted, at most 50",
        "missing": "`required` patterns that match nothing",
        "total_bytes": "sum of the sizes of the direct children that are files (links followed)",
    },
)
class Dir(_Filesystem):
    """A directory that must hold given entries, e.g. a model checkpoint."""

    path: str
    """Directory to inspect."""
    required: list[str] = Field(default_factory=list)
    """Glob patterns relative to the directory that must each match, e.g. [*.safetensors]."""


@probe(
    "disk",
    facts={
        "path": "the path as given",
        "exists": "always true: a missing path is an error",
        "mount": "mount point of the filesystem holding the path",
        "is_mount": "the path itself is a mount point",
        "total_gb": "filesystem size in GB (1024³ bytes)",
        "free_gb": "GB available to unprivileged users",
        "used_gb": "GB in use",
        "used_percent": "used share, 0-100, as df reports it (root's reserve excluded)",
        "device": "device or source of the mount, from /proc/mounts when present",
        "fstype": "filesystem type, from /proc/mounts when present",
    },
)
class Disk(_Filesystem):
    """Space on the filesystem holding a path; passes when observed, so set `expect`."""

    path: str
    """Any path on the filesystem; it must exist."""
