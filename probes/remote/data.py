# `data.jsonl` and `data.files` on the target (params["op"]), with the scanning core of
# _jsonl.py, which probes/data.py also uses for s3:// objects on the controller.
import glob
import gzip
import os
import zlib

from _jsonl import Scan
from _prelude import by_op, gb

GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER = 1 << 20


def _reason(exc):
    """Why a file could not be read, in the OS's words ("No such file or directory")."""
    if isinstance(exc, EOFError):
        return f"truncated gzip ({exc})"
    if isinstance(exc, zlib.error):
        return f"corrupt gzip ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _expand(patterns, max_files, keep_literal):
    """Files the patterns name, in order, each once: globs (`**` recursive) expanded to the
    regular files they match, sorted; a literal path kept as given when `keep_literal` (opening
    it says what is wrong), else only when it is a file. Returns (files, {pattern: matches},
    truncated); at most `max_files` files."""
    files, seen, per_pattern, truncated = [], set(), {}, False
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if not glob.has_magic(path):
            found = [path] if keep_literal or os.path.isfile(path) else []
        else:
            found = []
            for match in glob.iglob(path, recursive=True):
                if os.path.isfile(match):
                    found.append(match)
                    if len(found) > max_files:
                        break
            found.sort()
        per_pattern[pattern] = 0
        for match in found:
            if match in seen:
                per_pattern[pattern] += 1
                continue
            if len(files) >= max_files:
                truncated = True
                break
            seen.add(match)
            files.append(match)
            per_pattern[pattern] += 1
    return files, per_pattern, truncated


def _scan_file(scan, path):
    with open(path, "rb", buffering=READ_BUFFER) as raw:
        if raw.peek(2)[:2] == GZIP_MAGIC:  # by content, whatever the name says
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                scan.read(path, unzipped)
        else:
            scan.read(path, raw)


def observe_jsonl(params):
    scan = Scan(
        params.get("required", ["text"]),
        params.get("text_field", "text"),
        params.get("sample", 0),
        params.get("limit", 0),
        params.get("max_line_bytes", 16 << 20),
    )
    files, per_pattern, truncated = _expand(params["paths"], params.get("max_files", 10000), True)
    for pattern, count in per_pattern.items():
        if not count:
            scan.cannot_read(pattern, "no file matches")
    if truncated:
        scan.complete = False
    for path in files:
        try:
            _scan_file(scan, path)
        except (OSError, EOFError, zlib.error) as exc:
            scan.cannot_read(path, _reason(exc))
    return scan.stats()


def observe_files(params):
    patterns = params["paths"]
    files, per_pattern, truncated = _expand(patterns, params.get("max_files", 100000), False)
    total, largest, counted, unreadable = 0, None, [], []
    for path in files:
        try:
            size = os.stat(path).st_size
        except OSError as exc:  # gone since the walk, or a dangling link
            if len(unreadable) < 50:
                unreadable.append(f"{path}: {_reason(exc)}")
            continue
        counted.append(path)
        total += size
        if largest is None or size > largest["bytes"]:
            largest = {"path": path, "bytes": size}
    unmatched = [pattern for pattern, count in per_pattern.items() if not count]
    problem = None
    if unmatched:
        problem = f"No file matches {unmatched[0]}"
        if len(unmatched) > 1:
            problem += f" (and {len(unmatched) - 1} more patterns)"
    elif unreadable:
        problem = f"Cannot read {unreadable[0]}"
    return {
        "count": len(counted),
        "bytes": total,
        "gb": gb(total),
        "per_pattern": per_pattern,
        "unmatched": unmatched,
        "largest": largest,
        "first": counted[:20],
        "truncated": truncated,
        "unreadable": unreadable,
        "problem": problem,
    }


observe = by_op({"data.jsonl": observe_jsonl, "data.files": observe_files})
