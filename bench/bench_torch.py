"""Wall time of specs/training-readiness.yaml, split into torch import and probe work.

    python bench/bench_torch.py                      # CPU; writes bench/RESULTS.md
    python bench/bench_torch.py --var device=cuda    # on a GPU host
    python bench/bench_torch.py --no-write

Every torch check starts a fresh python on its target that imports torch before doing any
work, so a check's duration is that import plus the probe's own work. The import is timed on
its own (`python -c "import torch"`), and each check's probe time is its duration minus that
median. Torch checks take turns on a target (they are exclusive), so the run's wall time is
close to the sum of the checks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, matrix_argv, run_quietly, timed, write_section

SPEC = ROOT / "specs" / "training-readiness.yaml"


def import_seconds(repeat: int) -> list[float]:
    argv = [sys.executable, "-c", "import torch"]
    return timed(lambda: run_quietly(argv), repeat)


def run_spec(extra: list[str], repeat: int, workdir: Path) -> tuple[list[float], dict]:
    """Wall times of `repeat` runs, and the JSON report of the last one."""
    report = workdir / "report.json"
    argv = [*matrix_argv(), "run", str(SPEC), "--quiet", "--json", str(report), *extra]
    walls = timed(lambda: run_quietly(argv, (0, 1)), repeat)
    return walls, json.loads(report.read_text())


def check_table(report: dict, torch_import: float) -> str:
    rows = [
        "| check | status | duration (s) | torch import (s) | probe (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for result in report["results"]:
        duration = result["duration"]
        if result["status"] == "skip":
            rows.append(f"| {result['check_id']} | skip | – | – | – |")
            continue
        probe = max(duration - torch_import, 0.0)
        rows.append(
            f"| {result['check_id']} | {result['status']} | {duration:.2f} "
            f"| {torch_import:.2f} | {probe:.2f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the spec")
    parser.add_argument("--import-repeat", type=int, default=5, help="timed torch imports")
    parser.add_argument("--var", action="append", default=[], help="passed to matrix run")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()

    started = time.perf_counter()
    extra = [arg for var in args.var for arg in ("--var", var)]
    torch_import = statistics.median(import_seconds(args.import_repeat))
    with tempfile.TemporaryDirectory(prefix="matrix-bench-torch-") as tmp:
        walls, report = run_spec(extra, args.repeat, Path(tmp))
    ran = [r for r in report["results"] if r["status"] != "skip"]
    total = sum(r["duration"] for r in ran)
    imports = torch_import * len(ran)
    torch_version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    command = "python bench/bench_torch.py" + "".join(f" --var {v}" for v in args.var)
    text = "\n".join(
        [
            "# training-readiness spec (torch probes)",
            "",
            f"Command: `{command}`",
            f"Date: {dt.date.today().isoformat()}",
            f"Machine: {machine()}, torch {torch_version}",
            "",
            f"`matrix run specs/training-readiness.yaml` ({len(ran)} checks ran, verdict "
            f"{report['verdict']}, score {report['score']}): median wall "
            f"**{statistics.median(walls):.2f} s** over {args.repeat} runs "
            f"({min(walls):.2f}–{max(walls):.2f} s). `import torch` alone: median "
            f"**{torch_import:.2f} s** of {args.import_repeat}. Summed check durations "
            f"{total:.2f} s, of which torch imports ≈ {imports:.2f} s "
            f"({imports / total:.0%}) and probe work ≈ {total - imports:.2f} s.",
            "",
            "Per check, last run:",
            "",
            check_table(report, torch_import),
            "",
            f"(benchmark took {time.perf_counter() - started:.0f} s)",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("torch", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
