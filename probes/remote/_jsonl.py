# The scanning core of `data.jsonl`: JSONL streams read one line at a time, counted, never kept.
# Shared by probes/remote/data.py (files on the target, sent ahead of it) and probes/data.py
# (s3:// objects the controller reads, imported as probes.remote._jsonl). Stdlib only, Python
# >= 3.8, and no imports of its siblings (not even _prelude): the controller could not resolve them.
import json
import sys
import time

MAX_ERRORS = 5  # "file:line: error" kept for the report
MAX_PATHS = 50  # files named in the `paths` fact, and unreadable paths kept
DRAIN = 1 << 20  # an overlong line is skipped in pieces of this size
NEWLINE = 10


def peak_rss_mb():
    """This process's peak resident memory in MiB (None where the OS does not say).

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory.
    getrusage's ru_maxrss is the fallback only: on Linux it also carries the RSS of the parent
    that forked (or vforked) this process before exec, e.g. the whole matrix controller."""
    try:
        with open("/proc/self/status", "rb") as status:
            for row in status:
                if row.startswith(b"VmHWM:"):
                    return round(int(row.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not a POSIX target
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _json_kind(value):
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _parse_error(line):
    """Why `line` does not parse, in words located within it. Parsed again without its newline,
    so that a cut-off string says "Unterminated string", not "Invalid control character"."""
    try:
        json.loads(line.rstrip(b"\r\n"))
    except (ValueError, RecursionError) as exc:
        return _exception_text(exc)
    return "does not parse"


def _exception_text(exc):
    if isinstance(exc, json.JSONDecodeError):  # "Unterminated string starting at" ends so
        at = "" if exc.msg.endswith(" at") else " at"
        return f"{exc.msg}{at} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start + 1}: {exc.reason})"
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    return str(exc)


def _is_blank(value):
    """A text that holds nothing: whitespace only, or an empty list or object."""
    if isinstance(value, str):
        return not value or value.isspace()  # no copy of a long text
    return isinstance(value, (list, dict)) and not value


def _human_size(count):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{count:.3g} {unit}"
        count /= 1024
    return str(count)


class _FileAt:
    """One file of the scan: where it is (line number), what it held, and whether a bound
    stopped it before its end."""

    __slots__ = ("cut", "empty_text", "invalid", "name", "number", "taken", "valid")

    def __init__(self, name):
        self.name = name
        self.number = 0
        self.taken = self.valid = self.invalid = self.empty_text = 0
        self.cut = False

    def counts(self):
        return {
            "path": self.name,
            "records": self.taken,
            "valid": self.valid,
            "invalid": self.invalid,
            "empty_text": self.empty_text,
        }


def _field_getter(path):
    """A function reading field `path` from a record: a literal key first (`"a.b": 1`), else
    the dotted path through nested objects. None when absent."""
    if "." not in path:
        return lambda record: record.get(path)
    parts = path.split(".")

    def get(record):
        value = record.get(path)
        if value is not None:
            return value
        value = record
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


class Scan:
    """Counts over every stream fed to it. Feed files with `read` (a binary stream with
    readline) or `feed` (chunks, e.g. an S3 body); `stats()` is the JSON-able sum, which
    `merge` adds up and `finish` turns into the probe's facts.

    `sample` bounds records per file, `limit` records over all files (None: no bound). When a
    bound stops a file, its next non-blank line is the one that was not taken, so `complete`
    stays true for a file that holds exactly `sample` records."""

    def __init__(self, required=("text",), text_field="text", sample=0, limit=0, max_line=16 << 20):
        self.required = list(required)
        self.fields = [(name, _field_getter(name)) for name in self.required]
        self.text_field = text_field
        self.text = _field_getter(text_field) if text_field else None
        self.sample = sample or None
        self.limit = limit or None
        self.max_line = max_line
        self.files = 0
        self.paths = []
        self.opened = []  # every file's _FileAt, for per-file counts and empty files
        self.unreadable = []
        self.unreadable_more = 0  # unreadable paths past MAX_PATHS: counted, not named
        self.records = self.valid = self.invalid = self.empty_text = self.bytes = 0
        self.errors = []
        self.missing = dict.fromkeys(self.required, 0)
        self.complete = True
        self.started = time.perf_counter()

    # ── sources ──────────────────────────────────────────────────────────────

    def open(self, name):
        self.files += 1
        if len(self.paths) < MAX_PATHS:
            self.paths.append(name)
        at = _FileAt(name)
        self.opened.append(at)
        return at

    def cannot_read(self, name, reason):
        """A source that could not be read (to its end): `reason` says why."""
        if len(self.unreadable) < MAX_PATHS:
            self.unreadable.append([name, reason])
        else:
            self.unreadable_more += 1
        self.complete = False

    def read(self, name, stream):
        """Scan a binary stream to its end or to a bound; memory is one line of at most
        `max_line` bytes. Read errors propagate: the caller says the file is unreadable."""
        at = self.open(name)
        readline = stream.readline
        cap = self.max_line + 1
        while True:
            line = readline(cap)
            if not line:
                return
            if len(line) == cap and line[-1] != NEWLINE:  # longer than max_line: skip the rest
                size = len(line)
                while line and line[-1] != NEWLINE:
                    line = readline(DRAIN)
                    size += len(line)
                if not self.line(at, None, size):
                    return
            elif not self.line(at, line):
                return

    def feeder(self, name):
        """A push-based reader for `name`: call `feed(chunk)` until it returns False (a bound
        was reached) or the data ends, then `end()`."""
        return _LineFeed(self, self.open(name))

    # ── one line ─────────────────────────────────────────────────────────────

    def line(self, at, line, overlong=0):
        """Count one line (with its newline) of file `at`; an overlong line comes as None with
        its size. False when a bound stops the file before this line."""
        at.number += 1
        if not overlong and line.isspace():
            self.bytes += len(line)
            return True
        if (self.sample is not None and at.taken >= self.sample) or (
            self.limit is not None and self.records >= self.limit
        ):
            self.complete, at.cut = False, True
            return False
        at.taken += 1
        self.records += 1
        if overlong:
            self.bytes += overlong
            limit = _human_size(self.max_line)
            self._invalid(
                at, f"line of {_human_size(overlong)} is longer than max_line_bytes ({limit})"
            )
            return True
        self.bytes += len(line)
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            self._invalid(at, _parse_error(line))
            return True
        if type(record) is not dict:
            self._invalid(at, f"{_json_kind(record)}, not a JSON object")
            return True
        ok = True
        for name, get in self.fields:
            if get(record) is None:
                self.missing[name] += 1
                ok = False
        if self.text is not None and _is_blank(self.text(record)):
            self.empty_text += 1
            at.empty_text += 1
            ok = False
        if ok:
            self.valid += 1
            at.valid += 1
        return True

    def _invalid(self, at, why):
        self.invalid += 1
        at.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{at.name}:{at.number}: {why}")

    def stats(self):
        unreadable = {name for name, _ in self.unreadable}
        empty = [
            at.name
            for at in self.opened
            if not at.taken and not at.cut and at.name not in unreadable
        ]
        return {
            "files": self.files,
            "paths": self.paths,
            "per_file": [at.counts() for at in self.opened[:MAX_PATHS]],
            "empty_files": empty[:MAX_PATHS],
            "empty_files_more": max(len(empty) - MAX_PATHS, 0),
            "unreadable": self.unreadable,
            "unreadable_more": self.unreadable_more,
            "records": self.records,
            "valid": self.valid,
            "invalid": self.invalid,
            "errors": self.errors,
            "missing": self.missing,
            "empty_text": self.empty_text,
            "bytes": self.bytes,
            "complete": self.complete,
            "seconds": time.perf_counter() - self.started,
            "peak_rss_mb": peak_rss_mb(),
        }


class _LineFeed:
    """Splits pushed chunks into lines for Scan.line; a line growing past max_line is dropped
    as it arrives and only its size is kept."""

    def __init__(self, scan, at):
        self.scan = scan
        self.at = at
        self.pending = []  # pieces of the line in progress
        self.held = 0  # their total size
        self.skipped = 0  # size of an overlong line in progress (its bytes are gone)

    def feed(self, chunk):
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return True
            if not self._line(chunk[start : end + 1]):
                return False
            start = end + 1

    def end(self):
        """The data ended: count a last line without a newline. False when a bound stopped it."""
        return not (self.held or self.skipped) or self._line(b"")

    def _hold(self, piece):
        if not piece:
            return
        if self.skipped:
            self.skipped += len(piece)
            return
        self.pending.append(piece)
        self.held += len(piece)
        if self.held > self.scan.max_line:
            self.skipped, self.pending, self.held = self.held, [], 0

    def _line(self, last):
        if self.skipped:
            size, self.skipped = self.skipped + len(last), 0
            return self.scan.line(self.at, None, size)
        line = b"".join([*self.pending, last]) if self.pending else last
        self.pending, self.held = [], 0
        content = len(line) - (1 if line.endswith(b"\n") else 0)
        if content > self.scan.max_line:
            return self.scan.line(self.at, None, len(line))
        return self.scan.line(self.at, line)


# ── the controller's side: sums and facts ────────────────────────────────────


def merge(a, b):
    """Two scans' stats as one (a target's files and the controller's S3 objects)."""
    missing = dict(a["missing"])
    for name, count in b["missing"].items():
        missing[name] = missing.get(name, 0) + count
    peaks = [p for p in (a["peak_rss_mb"], b["peak_rss_mb"]) if p is not None]
    summed = ("files", "records", "valid", "invalid", "empty_text", "bytes")
    merged = {key: a[key] + b[key] for key in summed}
    merged.update(
        paths=(a["paths"] + b["paths"])[:MAX_PATHS],
        per_file=(a["per_file"] + b["per_file"])[:MAX_PATHS],
        unreadable=(a["unreadable"] + b["unreadable"])[:MAX_PATHS],
        unreadable_more=_more(a, b, "unreadable"),
        empty_files=(a["empty_files"] + b["empty_files"])[:MAX_PATHS],
        empty_files_more=_more(a, b, "empty_files"),
        errors=(a["errors"] + b["errors"])[:MAX_ERRORS],
        missing=missing,
        complete=a["complete"] and b["complete"],
        seconds=max(a["seconds"], b["seconds"]),
        peak_rss_mb=max(peaks) if peaks else None,
    )
    return merged


def _more(a, b, key):
    """How many of `key`'s entries two stats hold past the MAX_PATHS they keep together."""
    kept = len(a[key]) + len(b[key])
    return a[f"{key}_more"] + b[f"{key}_more"] + max(kept - MAX_PATHS, 0)


def _nest_fields(flat):
    """{"meta.lang": 3} → {"meta": {"lang": 3}}, so `missing.meta.lang` works in an expect."""
    nested = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        here = nested
        for part in parents:
            here = here.setdefault(part, {})
        here[leaf] = value
    return nested


def finish(stats, text_field="text"):
    """The probe's facts from (merged) stats: coverage per field, rates, and the problem."""
    objects = stats["records"] - stats["invalid"]
    coverage = {
        name: round(100.0 * (objects - count) / objects, 1) if objects else 0.0
        for name, count in stats["missing"].items()
    }
    seconds = stats["seconds"]
    facts = dict(stats)
    del facts["unreadable_more"], facts["empty_files_more"]  # told in `problems`
    problems = _problems(stats, objects, text_field)
    facts.update(
        unreadable=[f"{name}: {reason}" for name, reason in stats["unreadable"]],
        missing=_nest_fields(stats["missing"]),
        coverage=_nest_fields(coverage),
        seconds=round(seconds, 3),
        incomplete=objects - stats["valid"],
        records_per_second=round(stats["records"] / seconds) if seconds > 0 else 0,
        problem=next(iter(problems.values()), None),
        problems=problems,
    )
    return facts


def _problems(stats, objects, text_field):
    """{fact: one sentence on what is wrong with it}, the first thing wrong first, so a
    check that expects `missing.text` is told about missing text, not about another file."""
    said = {}
    unreadable = stats["unreadable"]
    if unreadable:
        name, reason = unreadable[0]
        first = (
            f"No file matches {name}"
            if reason == "no file matches"
            else (f"Cannot read {name}: {reason}")
        )
        more = len(unreadable) - 1 + stats["unreadable_more"]
        said["unreadable"] = first + (f" (and {more} more unreadable)" if more else "")
    records, invalid, files = stats["records"], stats["invalid"], stats["files"]
    if invalid:
        said["invalid"] = (
            f"Invalid JSON in {stats['errors'][0]} ({invalid} of {records} records invalid)"
        )
    if not files:
        said["files"] = "No files to read"
    if files and not records:
        said["records"] = (
            f"No records in {stats['paths'][0]}" if files == 1 else f"No records in {files} files"
        )
    empty = stats["empty_files"]
    if empty and records:
        count = len(empty) + stats["empty_files_more"]
        others = f" and {count - 1} more" if count > 1 else ""
        said["empty_files"] = f"No records in {empty[0]}{others} ({count} of {files} files empty)"
    for name, count in stats["missing"].items():
        if count:
            said[f"missing.{name}"] = said[f"coverage.{name}"] = (
                f"Records missing '{name}' field: {count} of {objects}"
            )
    if stats["empty_text"]:
        said["empty_text"] = (
            f"Records with empty '{text_field}': {stats['empty_text']} of {objects}"
        )
    incomplete = [text for key, text in said.items() if key.startswith(("missing.", "empty_text"))]
    if incomplete:
        said["incomplete"] = "; ".join(dict.fromkeys(incomplete))
    if records > stats["valid"]:
        reasons = [text for key, text in said.items() if key in ("invalid", "incomplete")]
        said["valid"] = f"{stats['valid']} of {records} records valid: " + "; ".join(reasons)
    if not stats["complete"] and "unreadable" not in said:
        said["complete"] = "A bound (sample, limit or max_files) stopped reading before the end"
    return said
