"""`matrix snapshot`: observe a known-good machine and write a spec that expects what it saw.

A team turns a healthy node into the golden reference for its fleet: versions become PEP 440
compatible-release pins (`~=2.13.0` accepts 2.13.x, not 2.14), capacities become lower
bounds (at least what the golden node has, rounded down), free space a lower bound of half
what it had, and flags must match. Facts that name the machine (paths, timings) are left out.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.commands import EXIT_INVALID, split

DEFAULT_PROBES = ("python", "disk", "memory")
_RELEASE = re.compile(r"^(\d+(?:\.\d+)+)")


def compatible(value: Any) -> dict[str, str] | None:
    """2.13.0+cpu → {version: ~=2.13.0}; 12.1 → ~=12.1 (same major)."""
    found = _RELEASE.match(str(value or ""))
    return {"version": f"~={found[1]}"} if found else None


def at_least(value: Any) -> dict[str, float] | None:
    return {"ge": math.floor(value)} if isinstance(value, (int, float)) and value else None


def half(value: Any) -> dict[str, float] | None:
    return {"ge": math.floor(value / 2)} if isinstance(value, (int, float)) and value else None


def same(value: Any) -> Any:
    return value if value not in (None, "", [], {}) else None


def when_true(value: Any) -> bool | None:
    """A healthy flag (`ok`, `is_mount`) is kept; its absence proves nothing on a good node."""
    return True if value is True else None


Pin = Callable[[Any], Any]


@dataclass(frozen=True)
class Recipe:
    """How one kind is snapshot: its title and a pin per fact worth keeping."""

    title: str
    pins: dict[str, Pin]


RECIPES = {
    "python": Recipe(
        "Python",
        {"version": compatible, "implementation": same, "machine": same},
    ),
    "disk": Recipe(
        "Disk",
        {"is_mount": when_true, "fstype": same, "total_gb": at_least, "free_gb": half},
    ),
    "memory": Recipe("Memory", {"total_gb": at_least, "swap_total_gb": at_least}),
    "torch.env": Recipe(
        "PyTorch",
        {
            "torch": compatible,
            "cuda": same,
            "cuda_version": compatible,
            "device_count": at_least,
            "gpu_name": same,
            "gpu_memory_gb": at_least,
            "bf16": same,
        },
    ),
    "gpu.health": Recipe(
        "GPU health",
        {
            "ok": when_true,
            "driver_version": compatible,
            "gpus": at_least,
            "min_memory_gb": at_least,
        },
    ),
}


class SnapshotError(Exception):
    """The snapshot cannot be taken as asked (unknown kind, bad option)."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default="local", metavar="HOST", help="local, or [user@]host[:port] over SSH"
    )
    parser.add_argument("--key", metavar="FILE", help="SSH private key")
    parser.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to verify with")
    parser.add_argument("--python", metavar="PATH", help="the host's python for probes")
    parser.add_argument(
        "--probes",
        action="append",
        metavar="KINDS",
        help="kinds to observe (default: python,disk,memory; also torch.env, gpu.health)",
    )
    parser.add_argument(
        "--packages", action="append", metavar="NAMES", help="python packages to pin"
    )
    parser.add_argument(
        "--path", action="append", default=[], metavar="PATH", help="a disk to check (default /)"
    )
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    parser.add_argument("--force", action="store_true", help="overwrite the output file")


def main(args: argparse.Namespace) -> int:
    from matrix.commands.init import InitError, write

    node = Node(args.target, args.key, args.known_hosts, args.python)
    try:
        rows = checks(split(args.probes) or list(DEFAULT_PROBES), split(args.packages), args.path)
    except SnapshotError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    run = observe(node, rows)
    command = "matrix " + " ".join(sys.argv[1:]) if sys.argv[1:] else "matrix snapshot"
    text, unseen = baseline(node, rows, run, command)
    for line in unseen:
        print(f"matrix: {line}", file=sys.stderr)
    try:
        print(write(text, args.output, force=args.force), end="" if not args.output else "\n")
    except InitError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0 if len(unseen) < len(rows) else 1


@dataclass
class Node:
    """The machine to observe: `local`, or an SSH host with how to reach it."""

    host: str = "local"
    key: str | None = None
    known_hosts: str | None = None
    python: str | None = None

    @property
    def remote(self) -> bool:
        return self.host not in ("local", "localhost", "controller")

    @property
    def label(self) -> str:
        """How the baseline names the golden node: the host, or this machine's name."""
        return self.host if self.remote else socket.gethostname()

    def target(self) -> dict[str, Any]:
        user, _, address = self.host.rpartition("@")
        options = {
            "user": user,
            "key": self.key,
            "known_hosts": self.known_hosts,
            "python": self.python,
        }
        return {"via": "ssh", "hosts": [address], **{k: v for k, v in options.items() if v}}


def checks(kinds: Sequence[str], packages: Sequence[str], paths: Sequence[str]) -> list[dict]:
    """One check per kind (per path for `disk`), params from the command line."""
    unknown = [k for k in kinds if k not in RECIPES]
    if unknown:
        raise SnapshotError(
            f"cannot snapshot {', '.join(unknown)}: snapshot knows {', '.join(RECIPES)}"
        )
    rows = []
    for kind in kinds:
        params = {"packages": list(packages)} if kind == "python" and packages else {}
        for path in (paths or ["/"]) if kind == "disk" else [None]:
            check_id = kind.replace(".", "-") + (f"-{_slug(path)}" if path else "")
            probe = {"kind": kind, **params, **({"path": path} if path else {})}
            rows.append({"id": check_id, "probe": probe})
    return rows


def observe(node: Node, rows: list[dict]) -> Any:
    """Run the rows on the node through the real engine; the Run has every fact."""
    import anyio
    import yaml

    from matrix.engine import Options, execute
    from matrix.plan import build_plan
    from matrix.spec.load import load

    spec: dict[str, Any] = {"version": 1, "name": "snapshot", "phases": []}
    on = "node" if node.remote else "local"
    if node.remote:
        spec["targets"] = {"node": node.target()}
    spec["phases"] = [
        {"id": "snapshot", "checks": [{**row, "on": on, "expect": {}} for row in rows]}
    ]
    plan = build_plan(load("snapshot.yaml", text=yaml.safe_dump(spec, sort_keys=False)))
    return anyio.run(execute, plan, Options(handle_signals=False))


def baseline(node: Node, rows: list[dict], run: Any, command: str) -> tuple[str, list[str]]:
    """The baseline spec's text, and a line per probe left out (could not observe, or saw
    nothing to pin, like gpu.health on a machine without GPUs)."""
    import yaml

    by_check = {r.check_id: r for r in run.results}
    unseen: list[str] = []
    out_checks = []
    for row in rows:
        result = by_check[row["id"]]
        kind = row["probe"]["kind"]
        if result.status.value in ("error", "skip"):
            unseen.append(f"{row['id']}: not observed: {result.why}")
            continue
        expect = {}
        for fact, pin in RECIPES[kind].pins.items():
            pinned = pin(result.facts.get(fact))
            if pinned is not None:
                expect[fact] = pinned
        if not expect:
            unseen.append(f"{row['id']}: nothing worth pinning was observed (left out)")
            continue
        probe = dict(row["probe"])
        if kind == "python" and "packages" in probe:
            found = result.facts.get("packages") or {}
            probe["packages"] = [name for name in probe["packages"] if compatible(found.get(name))]
            expect.update({f"packages.{n}": compatible(found[n]) for n in probe["packages"]})
            if not probe["packages"]:
                del probe["packages"]
        out_checks.append(
            {
                "id": row["id"],
                "title": f"{RECIPES[kind].title} as on {node.label}",
                "category": RECIPES[kind].title,
                "failure": f"Differs from the golden node {node.label}",
                "on": "{{ vars.target }}",
                "probe": probe,
                "expect": expect,
                "diagnostic": "{{ target.host }} differs from " + node.label + ": {{ reason }}",
                "fix": f"Bring {{{{ target.host }}}} in line with {node.label}",
            }
        )
    spec: dict[str, Any] = {
        "version": 1,
        "name": f"baseline-{_slug(node.label)}",
        "description": f"What {node.label} looked like when it was known good.",
        "vars": {"target": "fleet" if node.remote else "local"},
    }
    if node.remote:
        spec["targets"] = {"fleet": node.target()}
    spec["phases"] = [{"id": "baseline", "title": "Same as the golden node", "checks": out_checks}]
    taken = time.strftime("%Y-%m-%d %H:%M %Z")
    header = (
        f"# Baseline of {node.label}, taken {taken} by:\n#   {command}\n"
        "# Versions are pinned by compatible release (~=), capacities are lower bounds (at\n"
        "# least the golden node's, rounded down), free space at least half of its.\n"
        + (
            "# Check the fleet: matrix run baseline.yaml --target 'fleet=gpu-[01-16]'\n"
            if node.remote
            else "# Check another machine: copy this file there and run matrix run on it.\n"
        )
        + "".join(f"# {line}\n" for line in unseen)
    )
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100), unseen


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "root"
