"""What the one redaction point costs on a fleet-sized report, against serialising it.

    python bench/bench_redact.py [--hosts 1000] [--checks 30] [--repeat 7]

Builds the JSON of a run of hosts × checks results (the size `--json` writes for a fleet),
with two remembered secrets, none of which occur in it (the usual case), then one that does.
Prints the medians (ms) of `json.dumps` of the results (the floor: what writing the report
costs anyway) and of masking the text, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import timed

from matrix.redact import redact, remember


def report(hosts: int, checks: int, planted: str = "") -> tuple[list[dict], str]:
    results = [
        {
            "task_id": f"check-{c}@gpu-{h:04d}",
            "title": "Disk space on /mnt/training",
            "facts": {"free_gb": 12.5, "stdout": f"filesystem ok {planted} " * 4},
            "diagnostic": None,
        }
        for h in range(hosts)
        for c in range(checks)
    ]
    return results, json.dumps(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    remember("hf_planted0secret0value")
    remember("p@ss/w0rd+with=symbols")
    print("| text | MB | json.dumps (ms) | redact (ms) | redact / dumps |")
    print("|---|---:|---:|---:|---:|")
    for label, planted in (
        ("no secret in it", ""),
        ("a secret in every result", "hf_planted0secret0value"),
    ):
        results, text = report(args.hosts, args.checks, planted)
        dumps = statistics.median(timed(lambda r=results: json.dumps(r), args.repeat))
        masking = statistics.median(timed(lambda t=text: redact.text(t), args.repeat))
        print(
            f"| {label} | {len(text) / 1e6:.1f} | {dumps * 1000:.0f} | {masking * 1000:.0f} "
            f"| {masking / dumps:.2f}× |"
        )


if __name__ == "__main__":
    main()
