"""`data.jsonl`, `data.files`: the training data itself, read where it lives.

Files are read on the check's target (local or an SSH host) by probes/remote/data.py, one line
at a time: memory stays flat whatever the file's size. `s3://` paths in `data.jsonl` are read
by the controller, streamed from S3 through the same scanning core (probes/remote/_jsonl.py);
a check naming both gets one set of facts. gzip is recognised by content (the 1f 8b magic),
whatever the file is called, and decompressed as it streams.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import Field, field_validator

from matrix.probe import ProbeContext, ProbeError, ScriptProbe, probe
from probes import awsapi
from probes.awsapi import AwsParams
from probes.remote import _jsonl

CHUNK = 1 << 20  # bytes asked of S3, and the most one decompression step may produce
LIST_PAGES = 100  # an s3:// glob lists at most this many pages of 1000 keys
GZIP_MAGIC = b"\x1f\x8b"


def _paths(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


@probe(
    "data.jsonl",
    default_expect={
        "files": {"gt": 0},
        "unreadable": {"len": 0},
        "records": {"gt": 0},
        "empty_files": {"len": 0},
        "invalid": 0,
        "incomplete": 0,
    },
    facts={
        "files": "files (and S3 objects) opened and read",
        "paths": "the files read, in order, at most 50",
        "per_file": "{path, records, valid, invalid, empty_text} for each file read, in order, at "
        "most 50: which shard is bad",
        "empty_files": "files read that hold no records (empty, or blank lines only), at most 50; "
        "a shard cut to nothing among full ones",
        "unreadable": '"path: reason" for each path that could not be read to its end, and '
        'each pattern that matches nothing ("path: no file matches"); at most 50, `problem` '
        "counts the rest",
        "records": "non-blank lines read",
        "valid": "records that are JSON objects with every `required` field present and not "
        "null, and a non-blank text",
        "invalid": "records that are not a JSON object: unparsable, another JSON type, or "
        "longer than max_line_bytes",
        "errors": '"file:line: error" for the first 5 invalid records',
        "missing": "{field: JSON objects without it (absent or null)} for each `required` "
        "field; dotted fields nest, so `missing.meta.lang` reads in an expect",
        "coverage": "{field: percent of JSON objects that have it}, 1 decimal, nested likewise",
        "empty_text": "JSON objects whose text_field is blank, an empty list or an empty object",
        "incomplete": "JSON objects that are not valid: a required field missing, or blank text",
        "bytes": "bytes of JSONL read (after decompression)",
        "complete": "everything the paths name was read to its end: no bound (sample, limit, "
        "max_files) cut it and nothing is unreadable",
        "seconds": "time spent reading and parsing",
        "records_per_second": "records / seconds",
        "peak_rss_mb": "peak resident memory of the scanning process in MiB (the target's "
        "python; the controller's own, for S3 objects)",
        "problem": 'the first thing wrong in one sentence, e.g. "Invalid JSON in '
        "/data/train.jsonl:17: Expecting ',' delimiter at column 42 (1 of 1000 records "
        'invalid)"; null when nothing is',
        "problems": "{fact: one sentence on what is wrong with it} (`unreadable`, `invalid`, "
        "`records`, `empty_files`, `missing.<field>`, `incomplete`, `valid`, …): a failed "
        "check's `{{ error }}` is the sentence for its first unmet fact",
    },
)
class Jsonl(AwsParams):
    """JSONL training data: every line a JSON object holding the fields training reads."""

    script: ClassVar[str] = "data"
    libraries: ClassVar[tuple[str, ...]] = ("_jsonl",)

    paths: list[str] = Field(min_length=1)
    """Files or globs on the target (`**` recursive, `~` expanded), `.gz` or not, and
    `s3://bucket/key` objects or globs (`s3://bucket/shards/*.jsonl.gz`) read by the controller
    with the AWS params (profile, region, endpoint_url). One path may be given as a string."""
    sample: int = Field(0, ge=0)
    """Records read per file; 0 reads each file to its end."""
    limit: int = Field(0, ge=0)
    """Records read over all files together; 0 for no bound."""
    required: list[str] = Field(default_factory=lambda: ["text"])
    """Fields every record must have (not null); `meta.lang` reads a nested object."""
    text_field: str | None = "text"
    """Field holding the text; a record whose text is blank counts in `empty_text` and is not
    valid. null to skip the check."""
    max_line_bytes: int = Field(16 << 20, ge=1)
    """A longer line is an invalid record, skipped without being held in memory."""
    max_files: int = Field(10_000, ge=1)
    """Bound on the files one check reads (a glob over a big tree); the rest are not read and
    `complete` is false."""

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return _paths(value)

    @field_validator("required")
    @classmethod
    def _fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or "" in name.split("."):
                raise ValueError(f"field name {name!r} is empty or has an empty part")
            for other in value:
                if other.startswith(name + "."):
                    raise ValueError(
                        f"'{name}' is implied by '{other}' (a nested field is only present when "
                        f"its parent is): list just '{other}'"
                    )
        return list(dict.fromkeys(value))

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        import anyio

        local = [p for p in self.paths if not p.startswith("s3://")]
        objects = [p for p in self.paths if p.startswith("s3://")]
        found: dict[str, dict[str, Any]] = {}

        async def target(limit: int) -> None:
            params = {
                "op": self.kind,
                "paths": local,
                "required": self.required,
                "text_field": self.text_field,
                "sample": self.sample,
                "limit": limit,
                "max_line_bytes": self.max_line_bytes,
                "max_files": self.max_files,
            }
            found["target"] = await ctx.python(self.script, params, libraries=self.libraries)

        async def controller(remaining: int | None) -> None:
            found["controller"] = await self._scan_s3(objects, remaining)

        if not objects:
            await target(self.limit)
        elif not local:
            await controller(self.limit or None)
        elif self.limit:  # a shared bound: the target's files first, then what is left for S3
            await target(self.limit)
            await controller(max(self.limit - found["target"]["records"], 0))
        else:
            async with anyio.create_task_group() as group:
                group.start_soon(target, 0)
                group.start_soon(controller, None)
        parts = [found[side] for side in ("target", "controller") if side in found]
        stats = parts[0] if len(parts) == 1 else _jsonl.merge(*parts)
        return _jsonl.finish(stats, self.text_field or "text")

    # ── s3:// ────────────────────────────────────────────────────────────────

    async def _scan_s3(self, uris: list[str], remaining: int | None) -> dict[str, Any]:
        """Stats of the s3:// paths, read here; any failure makes a path unreadable."""
        scan = _jsonl.Scan(self.required, self.text_field, self.sample, 0, self.max_line_bytes)
        scan.limit = remaining
        pending = list(uris)
        try:
            async with awsapi.client("s3", self) as s3:
                while pending:
                    await self._scan_uri(s3, pending[0], scan)
                    pending.pop(0)
            return scan.stats()
        except ProbeError as exc:  # e.g. aioboto3 is not installed
            why = str(exc)
        except Exception as exc:  # no client: a missing profile, no credentials
            why = self._failure(exc)
        for uri in pending:
            scan.cannot_read(uri, why)
        return scan.stats()

    def _failure(self, exc: BaseException) -> str:
        """An S3 failure in words: awsapi's reading of it, else the exception itself."""
        try:
            return awsapi.classify(exc, self).message
        except Exception:
            return f"{type(exc).__name__}: {exc}"

    async def _scan_uri(self, s3: Any, uri: str, scan: _jsonl.Scan) -> None:
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket or not key:
            scan.cannot_read(uri, "not an s3://bucket/key path")
            return
        if not _is_glob(key):
            await self._scan_object(s3, bucket, key, scan)
            return
        try:
            keys, cut = await _list_keys(s3, bucket, key, self.max_files)
        except Exception as exc:
            scan.cannot_read(uri, self._failure(exc))
            return
        if not keys:
            scan.cannot_read(uri, "no file matches")
        if cut:
            scan.complete = False
        for found in keys:
            await self._scan_object(s3, bucket, found, scan)

    async def _scan_object(self, s3: Any, bucket: str, key: str, scan: _jsonl.Scan) -> None:
        uri = f"s3://{bucket}/{key}"
        try:
            reply = await s3.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            scan.cannot_read(uri, self._failure(exc))
            return
        body = reply["Body"]
        feed = scan.feeder(uri)
        try:
            async for chunk in _plain(body):
                if not feed.feed(chunk):
                    return
            feed.end()
        except zlib.error as exc:
            scan.cannot_read(uri, f"corrupt gzip ({exc})")
        except EOFError as exc:
            scan.cannot_read(uri, f"truncated gzip ({exc})")
        except Exception as exc:
            scan.cannot_read(uri, self._failure(exc))
        finally:
            body.close()


async def _plain(body: Any) -> AsyncIterator[bytes]:
    """An S3 body's bytes, gunzipped as they come when they start with the gzip magic. Each
    step yields at most CHUNK bytes, so a small compressed chunk cannot balloon in memory;
    concatenated gzip members (`cat a.gz b.gz`) are read one after another."""
    head = b""
    while len(head) < 2:
        chunk = await body.read(CHUNK)
        if not chunk:
            break
        head += chunk
    if head[:2] != GZIP_MAGIC:
        if head:
            yield head
        while chunk := await body.read(CHUNK):
            yield chunk
        return
    inflate = zlib.decompressobj(wbits=31)
    data = head
    while True:
        out = inflate.decompress(data, CHUNK)
        if out:
            yield out
        data = inflate.unconsumed_tail
        if inflate.eof:  # a member ended: another may follow (unconsumed_tail is stale now)
            data = inflate.unused_data or await body.read(CHUNK)
            if not data:
                return
            inflate = zlib.decompressobj(wbits=31)
        elif not data and len(out) < CHUNK:  # input used up and no output pending
            data = await body.read(CHUNK)
            if not data:
                raise EOFError("the compressed stream ended before its end marker")


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def key_pattern(glob: str) -> Any:
    """A key glob as an RE2 pattern (linear time, however many `*` and keys), with the
    filesystem's meaning: `*` and `?` stay within one `/`-separated level, `**` spans levels
    (`a/**/b` matches a/b too), `[...]` is a class."""
    import re2

    out, i, n = [], 0, len(glob)
    while i < n:
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := _class_end(glob, i)) > 0:
            inner = glob[i + 1 : end].replace("\\", "\\\\")
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            elif inner.startswith("^"):
                inner = "\\" + inner
            out.append(f"[{inner}]")
            i = end + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    options = re2.Options()
    options.dot_nl = True
    options.log_errors = False
    try:
        return re2.compile("".join(out) + r"\z", options)
    except re2.error as exc:
        raise ProbeError(f"key glob {glob!r} is not a valid pattern: {exc}") from None


def _class_end(glob: str, start: int) -> int:
    at = start + 1
    if at < len(glob) and glob[at] == "!":
        at += 1
    if at < len(glob) and glob[at] == "]":
        at += 1
    return glob.find("]", at)


async def _list_keys(s3: Any, bucket: str, glob: str, bound: int) -> tuple[list[str], bool]:
    """Keys matching `glob`, listed from its literal prefix, sorted; at most `bound` of them
    and LIST_PAGES pages of listing. Returns (keys, whether a bound cut the list)."""
    prefix = re.split(r"[*?\[]", glob, maxsplit=1)[0]
    pattern = key_pattern(glob)
    keys: list[str] = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    listed = 0
    async for page in pages:
        listed += 1
        for item in page.get("Contents", []):
            if pattern.match(item["Key"]) and not item["Key"].endswith("/"):
                keys.append(item["Key"])
                if len(keys) > bound:
                    return sorted(keys[:bound]), True
        if listed >= LIST_PAGES and page.get("IsTruncated"):
            return sorted(keys), True
    return sorted(keys), False


@probe(
    "data.files",
    default_expect={"count": {"gt": 0}},
    facts={
        "count": "regular files matched (links followed), each once",
        "bytes": "their total size",
        "gb": "bytes in GB (1024³), 2 decimals",
        "per_pattern": "{pattern: files it matched}",
        "unmatched": "patterns that match no file",
        "largest": "{path, bytes} of the biggest file; null when none matched",
        "first": "the first 20 files, in order (each pattern's matches sorted)",
        "truncated": "the walk stopped at max_files: count and bytes are lower bounds",
        "unreadable": '"path: reason" for matched files that could not be sized, at most 50',
        "problem": 'e.g. "No file matches /data/pdfs/**/*.pdf"; null when nothing is wrong',
    },
)
class Files(ScriptProbe):
    """Files matching globs on the target, counted and sized (e.g. PDFs against a processing
    limit)."""

    script = "data"
    libraries = ("_jsonl",)

    paths: list[str] = Field(min_length=1)
    """Globs or paths on the target (`**` recursive, `~` expanded); one may be a string."""
    max_files: int = Field(100_000, ge=1)
    """Bound on the walk; past it `truncated` is true."""

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return _paths(value)

    @field_validator("paths")
    @classmethod
    def _local(cls, value: list[str]) -> list[str]:
        for path in value:
            if path.startswith("s3://"):
                raise ValueError(
                    f"{path}: data.files reads the target's filesystem; count S3 objects with "
                    "aws.s3, or read them with data.jsonl"
                )
        return value
