"""Planning a fleet: `matrix validate specs/pipeline.yaml` with its GPU rows on N hosts, for
one or more checkouts, interleaved run by run so each sees the same machine.

    python bench/bench_plan.py                       # this checkout: 100, 1,000, 10,000 hosts
    git worktree add /tmp/before <rev>
    python bench/bench_plan.py /tmp/before . --hosts 100 400 1000 --repeat 3

Prints (and with --write, records in RESULTS.md) the median wall time and peak RSS per
checkout and fleet size, the time per host, and the growth from one size to the next: linear
planning keeps the time per host flat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import ROOT, PeakRss, machine, publish, run_quietly

FLOOR = ["-c", "import pydantic, yaml, jinja2"]


def validate_argv(hosts: int) -> list[str]:
    width = len(str(hosts))
    fleet = f"gpu=h-[{1:0{width}d}-{hosts}]"
    return ["-m", "matrix", "validate", "specs/pipeline.yaml", "--var", "train_target=gpu",
            "--target", fleet]  # fmt: skip


def measure(tree: Path, argv: list[str], timeout: float) -> tuple[float, float]:
    """(seconds, peak MB) of one run in `tree`, which imports its own matrix."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    os.chdir(tree)
    with PeakRss(marker=f"bench-plan-{os.getpid()}") as rss:
        started = time.perf_counter()
        run_quietly([sys.executable, *argv], timeout=timeout, env=env, started=rss.follow)
        seconds = time.perf_counter() - started
    return seconds, rss.peak_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", type=Path, nargs="*", default=[ROOT])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    cases = [("floor: " + " ".join(FLOOR), FLOOR, 0)]
    cases += [(f"{hosts:,} hosts", validate_argv(hosts), hosts) for hosts in args.hosts]
    seen: dict[tuple[Path, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for name, argv, _hosts in cases:
            for tree in trees:
                seen.setdefault((tree, name), []).append(measure(tree, argv, args.timeout))
    rows = [
        "| checkout | case | median s | per host ms | peak MB | × previous size |",
        "|---|---|---|---|---|---|",
    ]
    for tree in trees:
        previous: tuple[int, float] | None = None
        for name, _argv, hosts in cases:
            runs = seen[(tree, name)]
            seconds = statistics.median(s for s, _ in runs)
            peak = statistics.median(m for _, m in runs)
            per_host = f"{1000 * seconds / hosts:.2f}" if hosts else ""
            growth = ""
            if hosts and previous:
                growth = f"{seconds / previous[1]:.1f}× time for {hosts / previous[0]:g}× hosts"
            if hosts:
                previous = (hosts, seconds)
            rows.append(
                f"| {tree.name} | {name} | {seconds:.2f} | {per_host} | {peak:.0f} | {growth} |"
            )
    command = "python bench/bench_plan.py " + " ".join(sys.argv[1:])
    how = f"`{command}` — {machine()}; medians of {args.repeat}, interleaved."
    publish("plan-growth", "Planning a fleet (issue 16)", how, rows, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
