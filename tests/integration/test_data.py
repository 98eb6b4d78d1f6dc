"""`data.jsonl` and `data.files` through the real engine: real files (plain, gzip, globs, a file
of more than 1 GiB), a real sshd host, and S3 objects on a real moto server."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.results import Result, Run

MiB = 1 << 20


@pytest.fixture
def data_run(run_spec: Callable[..., Run]) -> Callable[..., dict[str, Result]]:
    """data_run({check_id: probe}, targets=None) → results by check id, all in one run. A probe
    without `kind` is data.jsonl; a row may carry `expect`/`on`/`timeout` beside the probe."""

    def run(rows: dict[str, dict[str, Any]], targets: dict[str, Any] | None = None):
        checks = []
        for check_id, probe in rows.items():
            probe = dict(probe)
            row: dict[str, Any] = {"id": check_id}
            for key in ("expect", "on", "timeout"):
                if key in probe:
                    row[key] = probe.pop(key)
            row["probe"] = {"kind": "data.jsonl", **probe}
            checks.append(row)
        spec = {"version": 1, "name": "data", "targets": targets or {}}
        spec["phases"] = [{"id": "d", "checks": checks}]
        return {r.check_id: r for r in run_spec(json.dumps(spec)).results}

    return run


def lines(records: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def samples(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"sample number {i}"} for i in range(start, start + count)]


def status(results: dict[str, Result]) -> dict[str, str]:
    return {check_id: r.status.value for check_id, r in results.items()}


# ── data.jsonl on local files ────────────────────────────────────────────────


def test_valid_file_passes_with_exact_counts(tmp_path: Path, data_run) -> None:
    # blank lines are not records; the last line has no newline
    body = lines(samples(999)) + b"\n  \n" + json.dumps({"id": 999, "text": "last"}).encode()
    train = write(tmp_path / "train.jsonl", body)

    results = data_run({"train": {"paths": str(train)}})

    assert status(results) == {"train": "pass"}
    facts = results["train"].facts
    assert {k: facts[k] for k in ("files", "paths", "records", "valid", "invalid")} == {
        "files": 1,
        "paths": [str(train)],
        "records": 1000,
        "valid": 1000,
        "invalid": 0,
    }
    assert facts["bytes"] == len(body) and facts["complete"] is True
    assert (facts["unreadable"], facts["errors"], facts["empty_text"]) == ([], [], 0)
    assert (facts["missing"], facts["coverage"]) == ({"text": 0}, {"text": 100.0})
    assert facts["problem"] is None
    assert facts["seconds"] >= 0 and facts["records_per_second"] > 0
    assert 0 < facts["peak_rss_mb"] < 100


def test_invalid_lines_are_located_and_the_first_five_kept(tmp_path: Path, data_run) -> None:
    good = [json.dumps(r).encode() for r in samples(13)]
    bad = [
        b'{"text": "a",}',  # line 2
        b'["text", "a list"]',  # line 4
        b'"just a string"',  # line 6
        b'{"text": "cut off',  # line 8
        b'{"text": "caf\xe9"}',  # line 10: latin-1, not UTF-8
        b"42",  # line 12
        b'{"text": "a"} {"text": "b"}',  # line 14
    ]
    rows = []
    for i in range(20):
        rows.append(bad[i // 2] if i % 2 == 1 and i // 2 < len(bad) else good.pop())
    train = write(tmp_path / "train.jsonl", b"\n".join(rows) + b"\n")

    results = data_run({"train": {"paths": [str(train)]}})

    facts = results["train"].facts
    assert (facts["records"], facts["invalid"], facts["valid"]) == (20, 7, 13)
    assert facts["errors"] == [
        f"{train}:2: Expecting property name enclosed in double quotes at column 14",
        f"{train}:4: an array, not a JSON object",
        f"{train}:6: a string, not a JSON object",
        f"{train}:8: Unterminated string starting at column 10",
        f"{train}:10: not UTF-8 text (byte 14: invalid continuation byte)",
    ]
    problem = (
        f"Invalid JSON in {train}:2: Expecting property name enclosed in double quotes at "
        "column 14 (7 of 20 records invalid)"
    )
    assert facts["problem"] == problem
    assert results["train"].status.value == "fail"
    assert results["train"].reason == f"{problem} (invalid is 7, expected == 0)"


def test_missing_fields_are_counted_with_coverage(tmp_path: Path, data_run) -> None:
    records = [
        {"text": "a", "meta": {"lang": "en"}},
        {"text": "b", "meta": {"lang": "de"}},
        {"text": "c", "meta": {"lang": "fr"}},
        {"text": "d", "meta": {"lang": "en"}},
        {"text": "e", "meta": {}},  # lang absent
        {"text": "f", "meta": {"lang": None}},  # lang null
        {"text": "g", "meta": "en"},  # meta not an object
        {"meta": {"lang": "en"}},  # text absent
        {"text": None, "meta": {"lang": "en"}},  # text null
        {"body": "h"},  # both absent
    ]
    train = write(tmp_path / "train.jsonl", lines(records))
    fields = {"paths": str(train), "required": ["text", "meta.lang"]}

    results = data_run(
        {
            "default": fields,
            "text": {**fields, "expect": {"missing.text": 0}},
            "lang": {**fields, "expect": {"coverage.meta.lang": {"ge": 60}}},
            "strict-lang": {**fields, "expect": {"coverage.meta.lang": {"ge": 61}}},
        }
    )

    assert status(results) == {
        "default": "fail",  # the default expects every required field
        "text": "fail",
        "lang": "pass",
        "strict-lang": "fail",
    }
    facts = results["default"].facts
    assert facts["missing"] == {"text": 3, "meta": {"lang": 4}}
    assert facts["coverage"] == {"text": 70.0, "meta": {"lang": 60.0}}
    assert (facts["records"], facts["valid"], facts["invalid"]) == (10, 4, 0)
    assert facts["problem"] == "Records missing 'text' field: 3 of 10"
    assert results["text"].reason == (
        "Records missing 'text' field: 3 of 10 (missing.text is 3, expected == 0)"
    )


def test_blank_text_counts_as_empty(tmp_path: Path, data_run) -> None:
    records = [
        {"text": "fine"},
        {"text": ""},
        {"text": "  \n\t"},
        {"text": []},
        {"text": "also fine"},
        {"text": 7},  # not blank: a number is something
    ]
    train = write(tmp_path / "train.jsonl", lines(records))

    results = data_run(
        {
            "text": {"paths": str(train), "expect": {"empty_text": 0}},
            "any": {"paths": str(train), "text_field": None},
        }
    )

    assert status(results) == {"text": "fail", "any": "pass"}
    facts = results["text"].facts
    assert (facts["empty_text"], facts["valid"], facts["missing"]) == (3, 3, {"text": 0})
    assert facts["incomplete"] == 3
    assert facts["problem"] == "Records with empty 'text': 3 of 6"
    assert (results["any"].facts["empty_text"], results["any"].facts["valid"]) == (0, 6)


def test_gzip_files_are_read_by_content(tmp_path: Path, data_run) -> None:
    body = lines(samples(500)) + b"not json\n"
    plain = write(tmp_path / "train.jsonl", body)
    zipped = write(tmp_path / "train.jsonl.gz", gzip.compress(body))
    misnamed = write(tmp_path / "val.jsonl", gzip.compress(body))  # gzip without the suffix
    cut = write(tmp_path / "cut.jsonl.gz", gzip.compress(body)[:-100])

    results = data_run(
        {
            "plain": {"paths": str(plain), "expect": {"invalid": 1}},
            "gz": {"paths": str(zipped), "expect": {"invalid": 1}},
            "misnamed": {"paths": str(misnamed), "expect": {"invalid": 1}},
            "cut": {"paths": str(cut)},
        }
    )

    assert status(results) == {"plain": "pass", "gz": "pass", "misnamed": "pass", "cut": "fail"}
    counted = ("records", "valid", "invalid", "bytes", "missing", "complete")
    expected = {k: results["plain"].facts[k] for k in counted}
    assert expected == {
        "records": 501,
        "valid": 500,
        "invalid": 1,
        "bytes": len(body),  # bytes of JSONL, after decompression
        "missing": {"text": 0},
        "complete": True,
    }
    for check_id in ("gz", "misnamed"):
        assert {k: results[check_id].facts[k] for k in counted} == expected
    assert results["gz"].facts["errors"] == [f"{zipped}:501: Expecting value at column 1"]
    facts = results["cut"].facts
    assert facts["unreadable"] == [
        f"{cut}: truncated gzip (Compressed file ended before the end-of-stream marker was reached)"
    ]
    assert facts["complete"] is False and facts["files"] == 1 and facts["records"] < 501


def test_globs_read_each_file_once_in_order(tmp_path: Path, data_run) -> None:
    root = tmp_path / "shards"
    a = write(root / "a" / "part-0.jsonl", lines(samples(10)))
    b = write(root / "a" / "part-1.jsonl.gz", gzip.compress(lines(samples(20, 10))))
    c = write(root / "b" / "c" / "part-2.jsonl", lines(samples(30, 30)))
    write(root / "b" / "notes.txt", b"not data\n")
    (root / "b" / "dir.jsonl").mkdir()  # a directory matching the glob is not a file

    results = data_run(
        {
            "all": {"paths": [f"{root}/**/*.jsonl*", str(a)]},  # a again: read once
            "top": {"paths": f"{root}/*/*.jsonl"},
        }
    )

    assert status(results) == {"all": "pass", "top": "pass"}
    facts = results["all"].facts
    assert facts["paths"] == [str(a), str(b), str(c)]
    assert (facts["files"], facts["records"], facts["valid"]) == (3, 60, 60)
    top = results["top"].facts
    assert (top["paths"], top["records"]) == ([str(a)], 10)


def test_missing_files_and_empty_globs_are_unreadable(tmp_path: Path, data_run) -> None:
    train = write(tmp_path / "train.jsonl", lines(samples(5)))
    empty = write(tmp_path / "empty.jsonl", b"\n\n")

    results = data_run(
        {
            "gone": {"paths": [str(train), str(tmp_path / "val.jsonl"), f"{tmp_path}/*.parquet"]},
            "dir": {"paths": str(tmp_path)},
            "empty": {"paths": str(empty)},
            "many": {"paths": [f"{tmp_path}/nothing-{i}/*.jsonl" for i in range(60)]},
        }
    )

    assert status(results) == {"gone": "fail", "dir": "fail", "empty": "fail", "many": "fail"}
    facts = results["gone"].facts
    assert facts["unreadable"] == [
        f"{tmp_path}/*.parquet: no file matches",
        f"{tmp_path / 'val.jsonl'}: No such file or directory",
    ]
    assert (facts["files"], facts["records"], facts["complete"]) == (1, 5, False)
    assert facts["problem"] == f"No file matches {tmp_path}/*.parquet (and 1 more unreadable)"
    assert results["dir"].facts["unreadable"] == [f"{tmp_path}: Is a directory"]
    assert results["dir"].facts["problem"] == f"Cannot read {tmp_path}: Is a directory"
    assert results["empty"].facts["problem"] == f"No records in {empty}"
    assert results["empty"].reason.startswith(
        f"No records in {empty} (records is 0, expected > 0; empty_files is ["
    )
    many = results["many"].facts
    assert len(many["unreadable"]) == 50  # the facts stay small; the problem counts the rest
    assert (
        many["problem"] == f"No file matches {tmp_path}/nothing-0/*.jsonl (and 59 more unreadable)"
    )


def test_each_file_is_counted_and_an_empty_one_in_a_glob_is_seen(tmp_path: Path, data_run) -> None:
    """Per-file counts show which shard is bad; an empty shard among full ones fails the
    default expectation and is named."""
    root = tmp_path / "shards"
    good = write(root / "part-0.jsonl", lines(samples(4)))
    mixed = write(root / "part-1.jsonl", lines([{"text": ""}, {"id": 1}]) + b"{cut\n")
    empty = write(root / "part-2.jsonl", b"")
    blank = write(root / "part-3.jsonl.gz", gzip.compress(b"\n \n"))

    results = data_run({"all": {"paths": f"{root}/part-*"}})

    facts = results["all"].facts
    assert facts["per_file"] == [
        {"path": str(good), "records": 4, "valid": 4, "invalid": 0, "empty_text": 0},
        {"path": str(mixed), "records": 3, "valid": 0, "invalid": 1, "empty_text": 1},
        {"path": str(empty), "records": 0, "valid": 0, "invalid": 0, "empty_text": 0},
        {"path": str(blank), "records": 0, "valid": 0, "invalid": 0, "empty_text": 0},
    ]
    assert facts["empty_files"] == [str(empty), str(blank)]
    assert facts["problems"]["empty_files"] == (
        f"No records in {empty} and 1 more (2 of 4 files empty)"
    )
    assert "empty_files is" in results["all"].reason


def test_each_fact_has_its_own_problem_sentence(tmp_path: Path, data_run) -> None:
    """A check about missing fields is told about missing fields, even when another file of
    the same paths cannot be read: `{{ error }}` is the sentence for the first unmet fact."""
    train = write(tmp_path / "train.jsonl", lines([*samples(7), {"id": 8}, {"id": 9}]))
    cut = write(tmp_path / "cut.jsonl.gz", gzip.compress(lines(samples(50)))[:40])
    paths = [str(cut), str(train)]

    results = data_run(
        {
            "content": {"paths": paths, "expect": {"missing.text": 0}},
            "volume": {"paths": paths, "expect": {"valid": {"ge": 100}}},
            "readable": {"paths": paths, "expect": {"unreadable": {"len": 0}}},
        }
    )

    assert status(results) == {"content": "fail", "volume": "fail", "readable": "fail"}
    said = results["content"].facts["problems"]
    assert said["missing.text"] == "Records missing 'text' field: 2 of 9"
    assert said["unreadable"].startswith(f"Cannot read {cut}: truncated gzip")
    assert results["content"].facts["problem"] == said["unreadable"]  # the first thing wrong
    assert results["content"].reason == (
        "Records missing 'text' field: 2 of 9 (missing.text is 2, expected == 0)"
    )
    assert results["volume"].reason.startswith(
        "7 of 9 records valid: Records missing 'text' field: 2 of 9 (valid is 7"
    )
    assert results["readable"].reason.startswith(f"Cannot read {cut}: truncated gzip")


def test_sample_and_limit_bound_the_work(tmp_path: Path, data_run) -> None:
    files = []
    for n in range(3):
        body = lines(samples(40, 100 * n)) + b"{broken\n" + lines(samples(59, 100 * n + 41))
        files.append(write(tmp_path / f"part-{n}.jsonl", body))  # 100 records, line 41 broken
    glob = f"{tmp_path}/part-*.jsonl"

    results = data_run(
        {
            "sample": {"paths": glob, "sample": 10},
            "limit": {"paths": glob, "limit": 25},
            "both": {"paths": glob, "sample": 30, "limit": 75},
            "exact": {"paths": glob, "sample": 100},
            "whole": {"paths": glob},
        }
    )

    got = {
        check_id: (r.facts["files"], r.facts["records"], r.facts["invalid"], r.facts["complete"])
        for check_id, r in results.items()
    }
    assert got == {
        "sample": (3, 30, 0, False),  # the broken line 41 is past every sample
        "limit": (3, 25, 0, False),
        "both": (3, 75, 0, False),
        "exact": (3, 300, 3, True),  # a sample as big as each file reads them whole
        "whole": (3, 300, 3, True),
    }
    first_ten = sum(len(lines(samples(10, 100 * n))) for n in range(3))
    assert results["sample"].facts["bytes"] == first_ten


def test_overlong_line_is_invalid_and_never_held(tmp_path: Path, data_run) -> None:
    huge = b'{"text": "' + b"a" * (64 * MiB) + b'"}'
    at_limit = json.dumps({"text": "b" * 90}).encode()  # 102 bytes without its newline
    train = write(
        tmp_path / "train.jsonl",
        lines(samples(1)) + huge + b"\n" + lines(samples(1)) + at_limit + b"\n" + huge,
    )

    results = data_run(
        {
            "mib": {"paths": str(train), "max_line_bytes": MiB},
            "edge": {"paths": str(train), "max_line_bytes": len(at_limit)},
            "under": {"paths": str(train), "max_line_bytes": len(at_limit) - 1},
        }
    )

    facts = results["mib"].facts
    assert (facts["records"], facts["valid"], facts["invalid"]) == (5, 3, 2)
    assert facts["errors"] == [
        f"{train}:2: line of 64 MiB is longer than max_line_bytes (1 MiB)",
        f"{train}:5: line of 64 MiB is longer than max_line_bytes (1 MiB)",
    ]
    assert facts["bytes"] == train.stat().st_size and facts["complete"] is True
    # holding either line would take 64 MiB on top of the interpreter's ~15
    assert facts["peak_rss_mb"] < 40
    assert results["edge"].facts["invalid"] == 2
    assert results["under"].facts["invalid"] == 3


def test_a_gigabyte_file_scans_in_full_with_flat_memory(tmp_path: Path, data_run) -> None:
    """≥ 1 GiB of ~4.5 KB records: every record counted, memory of the scanner flat."""
    words = [f"w{i:03d}x" for i in range(1000)]
    block_records = [
        {"id": i, "text": " ".join(words[(i * 7 + j) % 1000] for j in range(760))}
        for i in range(230)
    ]
    block = lines(block_records)
    repeats = -(-(1 << 30) // len(block))  # enough blocks for 1 GiB
    tail = b'{"id": "last"}\n{"id": "broken",\n'  # one record without text, one invalid
    big = tmp_path / "big.jsonl"
    try:
        with big.open("wb") as out:
            for _ in range(repeats):
                out.write(block)
            out.write(tail)
        size = big.stat().st_size
        assert size >= 1 << 30

        started = time.perf_counter()
        results = data_run({"big": {"paths": str(big), "timeout": "5m"}})
        took = time.perf_counter() - started
    finally:
        big.unlink(missing_ok=True)

    facts = results["big"].facts
    records = repeats * len(block_records) + 2
    assert (facts["records"], facts["valid"], facts["invalid"]) == (records, records - 2, 1)
    assert facts["missing"] == {"text": 1} and facts["bytes"] == size
    assert facts["complete"] is True
    assert facts["peak_rss_mb"] < 50, facts["peak_rss_mb"]  # the file is 1024+ MiB
    print(
        f"\n1 GiB scan: {took:.1f} s wall, {facts['seconds']} s scanning, "
        f"{facts['peak_rss_mb']} MiB peak RSS"
    )


# ── on an SSH host ───────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sshd import SshServer

    server = SshServer(tmp_path_factory.mktemp("sshd"), 1)
    yield server
    server.stop()


def test_data_probes_read_the_hosts_files(tmp_path: Path, sshd: Any, data_run) -> None:
    import yaml

    train = write(tmp_path / "train.jsonl.gz", gzip.compress(lines(samples(50))))
    write(tmp_path / "docs" / "a.pdf", b"%PDF" + bytes(1000))
    target = yaml.safe_load(sshd.target())

    results = data_run(
        {
            "jsonl": {"paths": f"{tmp_path}/*.jsonl.gz", "on": "gpu"},
            "files": {"kind": "data.files", "paths": f"{tmp_path}/docs/*.pdf", "on": "gpu"},
        },
        targets=target,
    )

    assert status(results) == {"ssh-connect": "pass", "jsonl": "pass", "files": "pass"}
    assert results["jsonl"].task_id == "jsonl@127.0.0.1:" + str(sshd.ports[0])
    jsonl = results["jsonl"].facts
    assert (jsonl["paths"], jsonl["records"], jsonl["valid"]) == ([str(train)], 50, 50)
    assert jsonl["peak_rss_mb"] > 0
    assert (results["files"].facts["count"], results["files"].facts["bytes"]) == (1, 1004)


# ── s3:// objects, read by the controller ────────────────────────────────────


def gzip_members(*parts: bytes) -> bytes:
    """`cat a.gz b.gz`: one gzip stream per part, back to back."""
    return b"".join(gzip.compress(part) for part in parts)


def test_s3_objects_plain_gzip_and_globs(tmp_path: Path, aws: Any, data_run) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="corpus")
    # > 1 MiB each, so lines straddle the chunks the probe reads and inflates
    plain = (
        lines([{"id": i, "text": "x" * 900, "meta": {"lang": "en"}} for i in range(3000)])
        + b"{bad\n"
    )
    # gzip parts of ~1 MiB each from tiny compressed chunks: inflating is bounded per step
    first = lines([{"id": i, "text": f"sample {i} " + "y" * 500} for i in range(2000)])
    second = lines([{"id": i, "text": "z" * 600} for i in range(1500)]) + b'{"id": "none"}\n'
    s3.put_object(Bucket="corpus", Key="train/part-0.jsonl", Body=plain)
    s3.put_object(Bucket="corpus", Key="train/part-1.jsonl.gz", Body=gzip_members(first, second))
    s3.put_object(Bucket="corpus", Key="train/deeper/part-2.jsonl", Body=lines(samples(5)))
    s3.put_object(Bucket="corpus", Key="val/part-0.jsonl", Body=lines(samples(7)))
    local = write(tmp_path / "extra.jsonl", lines(samples(11)))
    endpoint = {"endpoint_url": aws.url}

    results = data_run(
        {
            "plain": {"paths": "s3://corpus/train/part-0.jsonl", **endpoint},
            "gz": {"paths": "s3://corpus/train/part-1.jsonl.gz", **endpoint},
            "glob": {"paths": "s3://corpus/train/*.jsonl*", **endpoint},
            "deep": {"paths": "s3://corpus/**/part-*.jsonl", **endpoint},
            "mixed": {"paths": [str(local), "s3://corpus/val/part-0.jsonl"], **endpoint},
            "bounded": {"paths": [str(local), "s3://corpus/train/*"], "limit": 20, **endpoint},
            "sampled": {"paths": "s3://corpus/train/part-0.jsonl", "sample": 100, **endpoint},
        }
    )

    def counts(check_id: str) -> tuple[int, ...]:
        f = results[check_id].facts
        return f["files"], f["records"], f["valid"], f["invalid"], f["bytes"]

    assert counts("plain") == (1, 3001, 3000, 1, len(plain))
    assert results["plain"].facts["errors"] == [
        "s3://corpus/train/part-0.jsonl:3001: Expecting property name enclosed in double "
        "quotes at column 2"
    ]
    assert counts("gz") == (1, 3501, 3500, 0, len(first) + len(second))
    assert results["gz"].facts["missing"] == {"text": 1}
    assert results["glob"].facts["paths"] == [
        "s3://corpus/train/part-0.jsonl",
        "s3://corpus/train/part-1.jsonl.gz",
    ]
    assert results["deep"].facts["paths"] == [
        "s3://corpus/train/deeper/part-2.jsonl",
        "s3://corpus/train/part-0.jsonl",
        "s3://corpus/val/part-0.jsonl",
    ]
    mixed = results["mixed"].facts
    assert mixed["paths"] == [str(local), "s3://corpus/val/part-0.jsonl"]
    assert counts("mixed")[:3] == (2, 18, 18) and mixed["complete"] is True
    assert results["mixed"].status.value == "pass"
    bounded = results["bounded"].facts
    assert (bounded["records"], bounded["complete"]) == (20, False)
    assert (results["sampled"].facts["records"], results["sampled"].facts["complete"]) == (
        100,
        False,
    )


def test_s3_failures_are_unreadable_sources(tmp_path: Path, aws: Any, data_run) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="corpus")
    s3.put_object(Bucket="corpus", Key="ok.jsonl", Body=lines(samples(3)))
    s3.put_object(Bucket="corpus", Key="cut.jsonl.gz", Body=gzip.compress(lines(samples(9)))[:-20])
    s3.put_object(Bucket="corpus", Key="long.jsonl", Body=b'{"text": "' + b"z" * 5000 + b'"}\n')
    edge = lines([{"text": "b" * 90}, {"text": "c" * 91}])  # 102 and 103 bytes + newlines
    s3.put_object(Bucket="corpus", Key="edge.jsonl", Body=edge)
    endpoint = {"endpoint_url": aws.url}

    results = data_run(
        {
            "key": {"paths": ["s3://corpus/ok.jsonl", "s3://corpus/nope.jsonl"], **endpoint},
            "bucket": {"paths": "s3://no-such-bucket/train.jsonl", **endpoint},
            "glob": {"paths": "s3://corpus/shards/*.jsonl", **endpoint},
            "cut": {"paths": "s3://corpus/cut.jsonl.gz", **endpoint},
            "long": {"paths": "s3://corpus/long.jsonl", "max_line_bytes": 1000, **endpoint},
            "edge": {"paths": "s3://corpus/edge.jsonl", "max_line_bytes": 102, **endpoint},
        }
    )

    assert status(results) == {
        "key": "fail",
        "bucket": "fail",
        "glob": "fail",
        "cut": "fail",
        "long": "fail",
        "edge": "fail",
    }
    key = results["key"].facts
    # awsapi's reading of the failure: AWS's code and message, maybe a hint after them
    (nope,) = key["unreadable"]
    assert nope.startswith("s3://corpus/nope.jsonl: NoSuchKey: The specified key does not exist.")
    assert (key["files"], key["records"]) == (1, 3)
    assert key["problem"] == f"Cannot read {nope}"
    (bucket,) = results["bucket"].facts["unreadable"]
    assert bucket.startswith(
        "s3://no-such-bucket/train.jsonl: NoSuchBucket: The specified bucket does not exist"
    )
    assert results["glob"].facts["problem"] == "No file matches s3://corpus/shards/*.jsonl"
    assert results["cut"].facts["unreadable"] == [
        "s3://corpus/cut.jsonl.gz: truncated gzip (the compressed stream ended before its "
        "end marker)"
    ]
    assert results["long"].facts["errors"] == [
        "s3://corpus/long.jsonl:1: line of 4.9 KiB is longer than max_line_bytes (1000 bytes)"
    ]
    edge_facts = results["edge"].facts
    assert (edge_facts["valid"], edge_facts["invalid"]) == (1, 1)
    assert edge_facts["errors"] == [
        "s3://corpus/edge.jsonl:2: line of 104 bytes is longer than max_line_bytes (102 bytes)"
    ]


# ── data.files ───────────────────────────────────────────────────────────────


def test_files_counts_sizes_and_unmatched_patterns(tmp_path: Path, data_run) -> None:
    docs = tmp_path / "docs"
    sizes = {"a.pdf": 1000, "b.pdf": 5000, "deep/c.pdf": 300, "deep/deeper/d.pdf": 7000}
    for name, size in sizes.items():
        write(docs / name, b"%PDF" + bytes(size - 4))
    write(docs / "notes.txt", b"x" * 10)
    files = {"kind": "data.files"}

    results = data_run(
        {
            "pdfs": {**files, "paths": [f"{docs}/**/*.pdf", f"{docs}/*.docx", f"{docs}/a.pdf"]},
            "top": {**files, "paths": f"{docs}/*.pdf"},
            "none": {**files, "paths": [f"{docs}/*.docx", str(docs / "gone.pdf")]},
            "bounded": {**files, "paths": f"{docs}/**/*.pdf", "max_files": 2},
            "limit": {**files, "paths": f"{docs}/**/*.pdf", "expect": {"bytes": {"le": 10000}}},
        }
    )

    assert status(results) == {
        "pdfs": "pass",
        "top": "pass",
        "none": "fail",
        "bounded": "pass",
        "limit": "fail",
    }
    facts = results["pdfs"].facts
    ordered = [str(docs / n) for n in ("a.pdf", "b.pdf", "deep/c.pdf", "deep/deeper/d.pdf")]
    assert facts == {
        "count": 4,
        "bytes": 13300,
        "gb": 0.0,
        "per_pattern": {f"{docs}/**/*.pdf": 4, f"{docs}/*.docx": 0, f"{docs}/a.pdf": 1},
        "unmatched": [f"{docs}/*.docx"],
        "largest": {"path": str(docs / "deep/deeper/d.pdf"), "bytes": 7000},
        "first": ordered,
        "truncated": False,
        "unreadable": [],
        "problem": f"No file matches {docs}/*.docx",
    }
    assert (results["top"].facts["count"], results["top"].facts["bytes"]) == (2, 6000)
    none = results["none"].facts
    assert (none["count"], none["largest"], none["unmatched"]) == (
        0,
        None,
        [f"{docs}/*.docx", str(docs / "gone.pdf")],
    )
    assert results["none"].reason == (
        f"No file matches {docs}/*.docx (and 1 more patterns) (count is 0, expected > 0)"
    )
    bounded = results["bounded"].facts
    assert (bounded["count"], bounded["truncated"]) == (2, True)
    assert results["limit"].reason == "bytes is 13300, expected <= 10000"


# ── params are checked before anything runs ─────────────────────────────────


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("{kind: data.jsonl, paths: [a.jsonl], required: [meta, meta.lang]}", "implied by"),
        ("{kind: data.jsonl, paths: [a.jsonl], required: ['a..b']}", "empty part"),
        ("{kind: data.jsonl, paths: []}", "at least 1 item"),
        ("{kind: data.jsonl, paths: a.jsonl, sample: -1}", "greater than or equal to 0"),
        ("{kind: data.files, paths: 's3://b/*.pdf'}", "data.files reads the target's"),
    ],
)
def test_bad_params_are_refused(spec_problems: Callable[..., list[Any]], probe: str, message):
    problems = spec_problems(
        f"""
        version: 1
        name: bad
        phases:
          - id: p
            checks:
              - id: row
                probe: {probe}
        """
    )

    assert any(message in str(p) for p in problems), problems
