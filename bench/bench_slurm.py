"""The same per-node checks through `via: slurm` and `via: ssh`, on the same loopback nodes.

    python bench/bench_slurm.py --nodes 8 --repeat 5          # prints; --write records it

One machine plays both clusters: a real Slurm cluster (tests/integration/slurm.py: munged,
slurmctld and one `slurmd -N` per node) and one OpenSSH sshd port per node
(tests/integration/sshd.py). Each run is `matrix run` of bench_fleet's 20 checks per node
(10 commands, 5 files, 5 disks), interleaved run by run; medians, and slurm / ssh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_fleet import CHECKS, matrix_spec
from common import ROOT, machine, matrix_argv, publish

sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]


def run(spec: Path, env: dict[str, str], nodes: int) -> float:
    report = spec.with_suffix(".json")
    started = time.perf_counter()
    subprocess.run(
        [*matrix_argv(), "run", str(spec), "--quiet", "--json", str(report)],
        env=env, capture_output=True, timeout=600, check=False,
    )  # fmt: skip
    took = time.perf_counter() - started
    done = json.loads(report.read_text())
    expected = {"pass": (CHECKS + 1) * nodes, "fail": 0, "error": 0, "skip": 0}
    if done["verdict"] != "READY" or done["counts"] != expected:
        failed = [r for r in done["results"] if r["status"] != "pass"][:3]
        raise SystemExit(f"{spec.name}: {done['verdict']} {done['counts']}: {failed}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = parser.parse_args()

    from slurm import SlurmCluster
    from sshd import SshServer

    with tempfile.TemporaryDirectory(prefix="matrix-bench-slurm-") as tmp:
        work = Path(tmp)
        cluster = SlurmCluster(work / "slurm", args.nodes)
        server = SshServer(work / "sshd", args.nodes, max_sessions=64)
        try:
            specs = {
                "via: slurm": work / "slurm.yaml",
                "via: ssh": work / "ssh.yaml",
            }
            specs["via: slurm"].write_text(
                matrix_spec(f"fleet: {{via: slurm, nodes: '{cluster.nodes}'}}")
            )
            specs["via: ssh"].write_text(matrix_spec(server.target("fleet")))
            times: dict[str, list[float]] = {name: [] for name in specs}
            for _ in range(args.repeat):
                for name, spec in specs.items():
                    times[name].append(run(spec, cluster.env, args.nodes))
        finally:
            server.stop()
            cluster.stop()
    medians = {name: statistics.median(seen) for name, seen in times.items()}
    rows = ["| transport | median s | min–max s | per node ms | × ssh |"]
    rows.append("|---|---:|---:|---:|---:|")
    for name, seen in times.items():
        rows.append(
            f"| {name} | {medians[name]:.2f} | {min(seen):.2f}–{max(seen):.2f} | "
            f"{medians[name] / args.nodes * 1000:.0f} | {medians[name] / medians['via: ssh']:.2f} |"
        )
    how = (
        f"`python bench/bench_slurm.py --nodes {args.nodes} --repeat {args.repeat}` — "
        f"{machine()}; {args.nodes} loopback nodes × {CHECKS} checks each, medians of "
        f"{args.repeat} interleaved runs, every run READY."
    )
    title = "The same node checks through Slurm and through SSH (issue 17)"
    publish("slurm", title, how, rows, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
