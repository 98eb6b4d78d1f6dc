"""What a second check that asks the same question costs (issue 28's shared observations).

    python bench/bench_shared.py        # prints the table; paste it into RESULTS.md

Interleaved, run by run, `matrix run specs/training-readiness.yaml` with:

- one row: `--check memory-stability` (a 300-step soak) — the floor;
- two rows asking the same soak: `--check memory-stability --check planned-run-memory`;
- and likewise `--check torch` against `--check torch --check bf16` (one `torch.env`).

The peer is the same two rows in a copy of the spec whose second row's timeout differs by a
second: a different question, so each row runs its own probe, as every row did before.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, matrix_argv, run_quietly

SPEC = ROOT / "specs" / "training-readiness.yaml"
PAIRS = {
    "soak": (["memory-stability"], ["memory-stability", "planned-run-memory"]),
    "torch.env": (["torch"], ["torch", "bf16"]),
}
RUNS = 5


def unshared(folder: Path) -> Path:
    """The spec with planned-run-memory's and bf16's timeouts a second longer."""
    text = SPEC.read_text()
    for row, old, new in (("planned-run-memory", "5m", "301s"), ("bf16", "60s", "61s")):
        block = re.search(rf"      - id: {row}\n.*?        timeout: {old}\n", text, re.S)
        assert block, row
        text = text.replace(block[0], block[0].replace(f"timeout: {old}", f"timeout: {new}"))
    path = folder / "training-readiness.yaml"
    path.write_text(text)
    return path


def seconds(checks: list[str], spec: Path = SPEC) -> float:
    argv = [*matrix_argv(), "run", str(spec), "--quiet", "--var", "device=cpu"]
    for check in checks:
        argv += ["--check", check]
    started = time.perf_counter()
    run_quietly(argv, expect_codes=(0, 1))
    return time.perf_counter() - started


def main() -> None:
    print(f"Machine: {machine()}; median of {RUNS}, interleaved\n")
    header = "one row (s) | two rows, shared (s) | two rows, each its own (s) | shared / own"
    print(f"| probe | {header} |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        peer = unshared(Path(folder))
        for name, (one, two) in PAIRS.items():
            alone, shared, own = [], [], []
            for _ in range(RUNS):
                alone.append(seconds(one))
                shared.append(seconds(two))
                own.append(seconds(two, peer))
            a, s, o = (statistics.median(times) for times in (alone, shared, own))
            print(f"| {name} | {a:.2f} | {s:.2f} | {o:.2f} | {s / o:.2f}× |")


if __name__ == "__main__":
    main()
