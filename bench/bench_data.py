"""Throughput and memory of `data.jsonl` on big local JSONL files, against plain-Python peers.

    python bench/bench_data.py              # 0.25, 1 and 2 GiB (+ a .gz, + short records)
    python bench/bench_data.py --sizes 0.25 --repeat 1 --no-write

Each file is generated once in a temp dir (a ~1 MiB block of records written repeatedly), so
every run reads it from the page cache: the figures are CPU cost, not disk speed. Each run:

- **matrix**: `matrix run RUN/spec.yaml --quiet --json RUN/out.json`, one `data.jsonl` check on
  the file; the probe's own facts give the scan time (`seconds`), records and the peak RSS of
  the scanning process (VmHWM of the target's python). Wall is the whole `matrix run`.
- **naive loop**: a fresh python doing `for line in open(path, "rb"): json.loads(line)` (gzip.open
  for .gz), skipping blank lines and checking nothing: the floor for parsing in Python.
- **wc -l** (`gzip -dc | wc -l` for .gz): counting lines, no parsing at all.

Figures are medians over `--repeat` runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

from common import machine, matrix_argv, run_quietly, write_section

GiB = 1 << 30
MiB = 1 << 20

NAIVE = r"""
import gzip, json, sys, time
path = sys.argv[1]
started = time.perf_counter()
records = 0
with (gzip.open if path.endswith(".gz") else open)(path, "rb") as lines:
    for line in lines:
        if line.strip():
            json.loads(line)
            records += 1
seconds = time.perf_counter() - started
peak = 0
for row in open("/proc/self/status"):
    if row.startswith("VmHWM:"):
        peak = int(row.split()[1]) / 1024
print(json.dumps({"records": records, "seconds": seconds, "peak_rss_mb": peak}))
"""


class Case(NamedTuple):
    name: str
    path: Path
    bytes: int  # of JSONL, uncompressed
    records: int


class Timing(NamedTuple):
    wall: float
    seconds: float  # the scan alone, where the tool says
    peak_mb: float | None


def block(record_words: int, count: int) -> tuple[bytes, int]:
    """About 1 MiB of JSONL records of `record_words` words of text each."""
    words = [f"w{i:03d}x" for i in range(1000)]
    rows = []
    size = i = 0
    while size < MiB:
        text = " ".join(words[(i * 7 + j) % 1000] for j in range(record_words))
        row = json.dumps({"id": i, "text": text, "meta": {"lang": "en", "source": "bench"}})
        rows.append(row.encode() + b"\n")
        size += len(rows[-1])
        i += 1
        if count and i >= count:
            break
    return b"".join(rows), len(rows)


def generate(workdir: Path, sizes: list[float], gz_size: float, short_size: float) -> list[Case]:
    cases = []
    long_block, long_count = block(700, 0)  # ~4.3 KB records
    short_block, short_count = block(40, 0)  # ~310 B records
    plan = [(f"{s:g} GiB", s, long_block, long_count, False) for s in sizes]
    if short_size:
        plan.append(
            (f"{short_size:g} GiB, short records", short_size, short_block, short_count, False)
        )
    if gz_size:
        plan.append((f"{gz_size:g} GiB .gz", gz_size, long_block, long_count, True))
    for name, size, data, count, zipped in plan:
        repeats = max(1, round(size * GiB / len(data)))
        path = workdir / (
            name.replace(" ", "_").replace(",", "") + (".jsonl.gz" if zipped else ".jsonl")
        )
        with gzip.open(path, "wb", compresslevel=1) if zipped else open(path, "wb") as out:
            for _ in range(repeats):
                out.write(data)
        cases.append(Case(name, path, repeats * len(data), repeats * count))
    return cases


def run_matrix(case: Case, workdir: Path) -> Timing:
    spec, report = workdir / "spec.yaml", workdir / "out.json"
    check = {
        "id": "scan",
        "timeout": "20m",
        "probe": {"kind": "data.jsonl", "paths": str(case.path)},
    }
    doc = {"version": 1, "name": "bench-data", "phases": [{"id": "data", "checks": [check]}]}
    spec.write_text(json.dumps(doc))
    started = time.perf_counter()
    run_quietly([*matrix_argv(), "run", str(spec), "--quiet", "--json", str(report)], timeout=1800)
    wall = time.perf_counter() - started
    result = json.loads(report.read_text())["results"][0]
    facts = result["facts"]
    if (
        result["status"] != "pass"
        or facts["records"] != case.records
        or facts["bytes"] != case.bytes
    ):
        raise SystemExit(f"matrix scan of {case.path} is wrong: {result['status']} {facts}")
    return Timing(wall, facts["seconds"], facts["peak_rss_mb"])


def run_naive(case: Case) -> Timing:
    started = time.perf_counter()
    out = run_quietly([sys.executable, "-c", NAIVE, str(case.path)], capture=True, timeout=1800)
    wall = time.perf_counter() - started
    found = json.loads(out)
    if found["records"] != case.records:
        raise SystemExit(f"naive loop counted {found['records']}, expected {case.records}")
    return Timing(wall, found["seconds"], found["peak_rss_mb"])


def run_wc(case: Case) -> Timing:
    if case.path.suffix == ".gz":
        argv = ["sh", "-c", 'gzip -dc "$0" | wc -l', str(case.path)]
    else:
        argv = ["wc", "-l", str(case.path)]
    started = time.perf_counter()
    out = run_quietly(argv, capture=True, timeout=1800)
    wall = time.perf_counter() - started
    if int(out.split()[0]) != case.records:
        raise SystemExit(f"wc -l counted {out.split()[0]}, expected {case.records}")
    return Timing(wall, wall, None)


def median(timings: list[Timing]) -> Timing:
    peaks = [t.peak_mb for t in timings if t.peak_mb is not None]
    return Timing(
        statistics.median(t.wall for t in timings),
        statistics.median(t.seconds for t in timings),
        statistics.median(peaks) if peaks else None,
    )


def table(case: Case, results: dict[str, Timing]) -> list[str]:
    rows = []
    ours = results["matrix"].seconds
    for tool, timing in results.items():
        mib_s = case.bytes / MiB / timing.seconds
        rec_s = case.records / timing.seconds
        peak = f"{timing.peak_mb:.1f}" if timing.peak_mb is not None else "–"
        rows.append(
            f"| {case.name} | {tool} | {timing.wall:.2f} | {timing.seconds:.2f} | {mib_s:,.0f} "
            f"| {rec_s:,.0f} | {peak} | {ours / timing.seconds:.2f}× |"
        )
    return rows


def spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def reading(measured: list[tuple[Case, dict[str, Timing]]]) -> str:
    """The results in words: memory against file size, and matrix against the floor."""
    peaks = [r["matrix"].peak_mb for _, r in measured if r["matrix"].peak_mb is not None]
    sizes = [case.bytes for case, _ in measured]
    lines = [
        f"Memory is flat: the scanning process peaked at {spread(peaks)} MiB "
        f"for files of {min(sizes) / GiB:.2f}–{max(sizes) / GiB:.2f} GiB (a bare python "
        "running the naive loop: "
        f"{min(r['naive loop'].peak_mb or 0 for _, r in measured):.1f} MiB)."
    ]
    for case, results in measured:
        ours, naive = results["matrix"].seconds, results["naive loop"].seconds
        lines.append(
            f"{case.name}: matrix scans at {case.bytes / MiB / ours:,.0f} MiB/s, "
            f"{ours / naive:.2f}× the naive loop's time and {ours / results['wc -l'].seconds:.1f}× "
            f"wc -l's; the whole `matrix run` took {results['matrix'].wall:.2f} s."
        )
    return " ".join(lines)


def tool_versions() -> str:
    wc = subprocess.run(["wc", "--version"], capture_output=True, text=True, check=False)
    first = wc.stdout.splitlines()[0] if wc.stdout else "wc (unknown version)"
    return f"preflight-matrix {version('preflight-matrix')}, {first}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.25,1,2", help="GiB of plain JSONL, comma-separated")
    parser.add_argument(
        "--gz", type=float, default=1.0, help="GiB (uncompressed) of a .gz; 0: none"
    )
    parser.add_argument("--short", type=float, default=1.0, help="GiB of ~310 B records; 0: none")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and file")
    parser.add_argument("--dir", help="where to write the files (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()

    started = time.perf_counter()
    sizes = [float(s) for s in args.sizes.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="matrix-bench-data-", dir=args.dir))
    rows: list[str] = []
    measured: list[tuple[Case, dict[str, Timing]]] = []
    try:
        made = time.perf_counter()
        cases = generate(workdir, sizes, args.gz, args.short)
        made = time.perf_counter() - made
        for case in cases:
            results = {
                "matrix": median([run_matrix(case, workdir) for _ in range(args.repeat)]),
                "naive loop": median([run_naive(case) for _ in range(args.repeat)]),
                "wc -l": median([run_wc(case) for _ in range(args.repeat)]),
            }
            rows += table(case, results)
            measured.append((case, results))
            print(rows[-3], rows[-2], rows[-1], sep="\n", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    command = "python bench/bench_data.py" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--sizes", args.sizes, "0.25,1,2"),
            ("--gz", f"{args.gz:g}", "1"),
            ("--short", f"{args.short:g}", "1"),
            ("--repeat", str(args.repeat), "3"),
        )
        if value != default
    )
    text = "\n".join(
        [
            "# data.jsonl on big JSONL files",
            "",
            f"Command: `{command}`",
            f"Date: {dt.date.today().isoformat()}",
            f"Machine: {machine()}",
            f"Versions: {tool_versions()}",
            "",
            "Files: generated JSONL (`{id, text, meta: {lang, source}}`), ~4.3 KB records unless "
            "marked short (~310 B); the .gz is gzip level 1 of the same records. Read from the "
            "page cache (warm): CPU cost, not disk speed. MiB/s and records/s are over the "
            "JSONL bytes (uncompressed). Scan (s): the probe's own `seconds` fact for matrix and "
            "the loop's own timer for the naive loop; for wc, its wall. Peak MiB: VmHWM of the "
            "process that read the file (the target's python for matrix). matrix / tool: "
            "matrix's scan time over the tool's (2.00× = matrix takes twice as long). Median of "
            f"{args.repeat}.",
            "",
            "| file | tool | wall (s) | scan (s) | MiB/s | records/s | peak MiB | matrix / tool |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "- matrix: `data.jsonl` through `matrix run` (checks every record for `required` "
            "fields and blank text; counts bytes; bounded line length). Wall includes matrix's "
            "own start-up, planning and the JSON report.",
            "- naive loop: `for line in open(path, 'rb'): json.loads(line)` in a fresh python: "
            "parse only, whole lines held whatever their length.",
            "- wc -l: counts newlines, parses nothing.",
            "",
            reading(measured),
            "",
            f"(files generated in {made:.0f} s; "
            f"benchmark took {time.perf_counter() - started:.0f} s)",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("data", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
