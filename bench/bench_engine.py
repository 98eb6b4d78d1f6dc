"""Engine overhead and start-up time of `matrix`, against plain-Python peers.

    python bench/bench_engine.py            # prints markdown, writes its part of bench/RESULTS.md
    python bench/bench_engine.py --no-write # print only

Throughput: a spec of N trivial `command` checks (`argv: ["true"]`) in one phase, run as
`matrix run <spec> --quiet --json out.json`, against the same N `subprocess.run(["true"])`
in a plain sequential loop and in a thread pool as wide as matrix's default concurrency.
Start-up: `matrix --help`, `validate` and `list` on specs/pipeline.yaml against `python -c pass`.
Every figure is the median wall time of several repetitions, measured from this process.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, machine, matrix_argv, run_quietly, timed, write_section

PIPELINE = ROOT / "specs" / "pipeline.yaml"
COMMAND = "python bench/bench_engine.py"


def default_concurrency() -> int:
    """Same rule as matrix.engine.default_concurrency, restated so the peer is independent."""
    return max(4, (os.cpu_count() or 2) * 4)


def write_spec(path: Path, checks: int) -> None:
    lines = [
        "version: 1",
        "name: bench-engine",
        "phases:",
        "  - id: bench",
        "    weight: 100",
        "    checks:",
    ]
    for i in range(checks):
        lines += [
            f"      - id: check-{i:05d}",
            '        probe: {kind: command, argv: ["true"]}',
        ]
    path.write_text("\n".join(lines) + "\n")


def bench_throughput(checks: int, repeat: int, workdir: Path) -> dict[str, list[float]]:
    spec, report = workdir / "bench.yaml", workdir / "out.json"
    write_spec(spec, checks)
    argv = [*matrix_argv(), "run", str(spec), "--quiet", "--json", str(report)]

    def matrix_run() -> None:
        run_quietly(argv)

    def plain_loop() -> None:
        for _ in range(checks):
            subprocess.run(["true"], check=True)

    width = default_concurrency()

    def thread_pool() -> None:
        with ThreadPoolExecutor(max_workers=width) as pool:
            for done in pool.map(lambda _: subprocess.run(["true"], check=False), range(checks)):
                if done.returncode:
                    raise SystemExit("`true` failed in the thread pool")

    def matrix_plan_only() -> None:
        run_quietly([*matrix_argv(), "run", str(spec), "--dry-run"])

    results = {"matrix run": timed(matrix_run, repeat)}
    results["matrix run --dry-run (load + plan only)"] = timed(matrix_plan_only, repeat)
    data = json.loads(report.read_text())
    if data["verdict"] != "READY" or data["counts"]["pass"] != checks:
        raise SystemExit(f"matrix did not pass all {checks} checks: {data['counts']}")
    results["plain loop"] = timed(plain_loop, repeat)
    results[f"thread pool ({width})"] = timed(thread_pool, repeat)
    return results


def bench_startup(repeat: int) -> dict[str, list[float]]:
    matrix = matrix_argv()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "matrix --help": [*matrix, "--help"],
        "matrix validate specs/pipeline.yaml": [*matrix, "validate", str(PIPELINE)],
        "matrix list specs/pipeline.yaml": [*matrix, "list", str(PIPELINE)],
    }
    return {
        name: timed(lambda argv=argv: run_quietly(argv), repeat) for name, argv in cases.items()
    }


def throughput_table(results: dict[str, list[float]], checks: int) -> tuple[str, str]:
    medians = {name: statistics.median(times) for name, times in results.items()}
    loop = medians["plain loop"]
    mx = medians["matrix run"]
    rows = [
        "| runner | median wall (s) | min–max (s) | tasks/s | vs plain loop |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, times in results.items():
        med = medians[name]
        rows.append(
            f"| {name} | {med:.3f} | {min(times):.3f}–{max(times):.3f} "
            f"| {checks / med:,.0f} | {med / loop:.2f}× |"
        )
    pool_name = next(n for n in medians if n.startswith("thread pool"))
    pool = medians[pool_name]
    plan = medians["matrix run --dry-run (load + plan only)"]
    overhead_ms = (mx - loop) / checks * 1000
    summary = (
        f"Per-task overhead of matrix over the plain loop: ((matrix − loop) / {checks}) = "
        f"**{overhead_ms:+.3f} ms**; matrix / plain loop = **{mx / loop:.2f}×**, "
        f"matrix / {pool_name} = **{mx / pool:.2f}×**. Of matrix's {mx:.2f} s, "
        f"{plan:.2f} s is start-up, loading and planning the {checks} checks (the dry run); "
        f"executing them takes the other {mx - plan:.2f} s "
        f"({(mx - plan) / checks * 1000:.2f} ms per task, against "
        f"{loop / checks * 1000:.2f} ms in the plain loop)."
    )
    return "\n".join(rows), summary


def startup_table(results: dict[str, list[float]]) -> str:
    base = statistics.median(results["python -c pass"])
    rows = [
        "| command | median wall (ms) | min–max (ms) | over `python -c pass` (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, times in results.items():
        med = statistics.median(times)
        rows.append(
            f"| `{name}` | {med * 1000:.0f} | {min(times) * 1000:.0f}–{max(times) * 1000:.0f} "
            f"| {(med - base) * 1000:+.0f} |"
        )
    return "\n".join(rows)


def interpretation(
    throughput: dict[str, list[float]], startup: dict[str, list[float]], checks: int
) -> str:
    medians = {name: statistics.median(times) for name, times in throughput.items()}
    mx, loop = medians["matrix run"], medians["plain loop"]
    plan = medians["matrix run --dry-run (load + plan only)"]
    pool_name = next(n for n in medians if n.startswith("thread pool"))
    pool = medians[pool_name]
    python_ms = statistics.median(startup["python -c pass"]) * 1000
    speed = "faster" if mx < loop else "slower"
    return (
        f"On this machine matrix ran {checks} trivial checks in {mx:.2f} s: "
        f"{max(mx, loop) / min(mx, loop):.1f}× {speed} than a sequential loop of bare "
        f"`subprocess.run` calls and {mx / pool:.1f}× the time of a bare {pool_name}. "
        f"Loading and planning account for {plan:.2f} s of it; the rest, "
        f"{(mx - plan - pool) / checks * 1000:.2f} ms per task over the thread pool, is what "
        f"matrix does around each process (async scheduling, its own process group, output "
        f"capture, timeouts, matchers, redaction, the JSON report). That is small next to a "
        f"real probe: the file, disk, memory, env, port, http and python probes each start "
        f"an interpreter, and `python -c pass` alone takes {python_ms:.0f} ms here."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000, help="checks in the spec")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per runner")
    parser.add_argument("--startup-repeat", type=int, default=10, help="runs per start-up case")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="matrix-bench-") as tmp:
        throughput = bench_throughput(args.checks, args.repeat, Path(tmp))
    startup = bench_startup(args.startup_repeat)
    table, summary = throughput_table(throughput, args.checks)
    text = "\n".join(
        [
            "# matrix engine benchmark",
            "",
            f"Command: `{COMMAND}`",
            f"Date: {dt.date.today().isoformat()}",
            f"Machine: {machine()}",
            f"matrix default concurrency here: {default_concurrency()} (max(4, cpu×4))",
            "",
            f'## Throughput: {args.checks} `command` checks (`argv: ["true"]`), '
            f"median of {args.repeat}",
            "",
            table,
            "",
            summary,
            "",
            f"## Start-up, median of {args.startup_repeat}",
            "",
            startup_table(startup),
            "",
            "## Reading",
            "",
            interpretation(throughput, startup, args.checks),
            "",
            f"(benchmark took {time.perf_counter() - started:.0f} s)",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("engine", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
