"""Start-up of two checkouts of matrix, interleaved run by run so both see the same machine.

    git worktree add /tmp/before <rev>
    python bench/startup_ab.py /tmp/before . --repeat 15

Prints a Markdown table of medians (ms) and the after/before ratio for `python -c pass`,
`matrix --help`, `validate` and `list` on specs/pipeline.yaml.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "python -c pass": ["-c", "pass"],
    "matrix --help": ["-m", "matrix", "--help"],
    "matrix validate specs/pipeline.yaml": ["-m", "matrix", "validate", "specs/pipeline.yaml"],
    "matrix list specs/pipeline.yaml": ["-m", "matrix", "list", "specs/pipeline.yaml"],
}


def timed(argv: list[str], tree: Path) -> float:
    """One run in `tree`, which imports its own matrix (cwd and PYTHONPATH both point there)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=tree, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    trees = (args.before.resolve(), args.after.resolve())
    times: dict[tuple[str, Path], list[float]] = {(c, t): [] for c in CASES for t in trees}
    for _ in range(args.repeat):
        for case, argv in CASES.items():
            for tree in trees:
                times[(case, tree)].append(timed(argv, tree))
    print("| command | before (ms) | after (ms) | after / before |\n|---|---:|---:|---:|")
    for case in CASES:
        before, after = (statistics.median(times[(case, tree)]) * 1000 for tree in trees)
        print(f"| `{case}` | {before:.0f} | {after:.0f} | {after / before:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
