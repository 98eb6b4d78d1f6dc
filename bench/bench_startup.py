"""matrix's start-up against two floors, interleaved run by run so all see the same machine.

    python bench/bench_startup.py --repeat 15          # prints; --write records it

- import floor: `python -c "import pydantic, yaml, jinja2"`, the libraries alone.
- stack floor: bench/stack_floor.py, the same libraries doing the work validate does on
  specs/pipeline.yaml (parse it, build and use 41 pydantic models, compile 72 templates),
  with none of matrix.

Each command runs with its bytecode cached (compiled once first), as an installed package is.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, machine, publish

PYTHON = sys.executable
CASES = {
    "`python -c pass`": [PYTHON, "-c", "pass"],
    'import floor: `python -c "import pydantic, yaml, jinja2"`': [
        PYTHON, "-c", "import pydantic, yaml, jinja2",
    ],
    "stack floor: `python bench/stack_floor.py specs/pipeline.yaml`": [
        PYTHON, "bench/stack_floor.py", "specs/pipeline.yaml",
    ],
    "`matrix --help`": [PYTHON, "-m", "matrix", "--help"],
    "`matrix validate specs/pipeline.yaml`": [
        PYTHON, "-m", "matrix", "validate", "specs/pipeline.yaml",
    ],
    "`matrix list specs/pipeline.yaml`": [PYTHON, "-m", "matrix", "list", "specs/pipeline.yaml"],
}  # fmt: skip
IMPORT_FLOOR, STACK_FLOOR = list(CASES)[1:3]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = parser.parse_args()
    for folder in ("matrix", "probes", "reporters", "bench"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)
    times: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(args.repeat):
        for case, argv in CASES.items():
            times[case].append(timed(argv, env))
    medians = {case: statistics.median(seen) * 1000 for case, seen in times.items()}
    rows = ["| command | median ms | × import floor | × stack floor |", "|---|---:|---:|---:|"]
    for case, median in medians.items():
        ratios = (median / medians[IMPORT_FLOOR], median / medians[STACK_FLOOR])
        rows.append(f"| {case} | {median:.0f} | {ratios[0]:.2f}× | {ratios[1]:.2f}× |")
    how = (
        f"`python bench/bench_startup.py --repeat {args.repeat}` — {machine()}; medians of "
        f"{args.repeat} interleaved runs, bytecode cached."
    )
    publish("startup", "Start-up against the libraries' floors", how, rows, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
