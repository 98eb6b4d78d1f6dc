"""matrix on an SSH fleet at a network's round-trip time, against the floors of the same work.

    python bench/bench_latency.py                          # N = 20, RTT 0 and 50 ms
    python bench/bench_latency.py --hosts 20 --rtt 0 50 --repeat 5 --write

The fleet and the 20 checks per host are bench_fleet.py's (real OpenSSH sshd ports on
127.0.0.1); bench/latency.py adds the RTT with a delaying proxy per port. Rows, all hosts at
once:

- handshake: an asyncssh connection per host, nothing run (what any SSH tool pays).
- one exec: one connection, then ONE command per host doing all 20 checks (a shell script):
  the floor for a tool that batches a host's work.
- 20 execs: one connection, then 20 sequential `true` channels per host (bench_fleet's floor).
- matrix: `matrix run fleet.yaml --quiet --json out.json`, READY with every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench_fleet import (
    CHECKS,
    COMMANDS,
    DISKS,
    FILES,
    MIN_FREE_KB,
    Floor,
    Matrix,
    Runs,
    Tool,
    measure,
    ports,
    start_fleet,
)
from common import machine, publish
from latency import delayed


def one_exec_script() -> str:
    """The 20 checks as one shell script that fails on the first that does not hold."""
    steps = [shlex.join(argv) + " >/dev/null" for argv in COMMANDS]
    steps += [f"test -e {shlex.quote(path)}" for path in FILES]
    steps += [
        f"test $(df -Pk {shlex.quote(path)} | awk 'NR==2 {{print $4}}') -gt {MIN_FREE_KB}"
        for path in DISKS
    ]
    return " && ".join(steps) + " && echo ok"


@dataclass
class Worker(Tool):
    """A floor run by this script itself (`--worker MODE hosts.json`), all hosts at once."""

    server: object
    mode: str
    names: ClassVar[dict[str, str]] = {
        "handshake": "handshake only",
        "one-exec": "floor: one exec per host doing all 20 checks",
    }

    @property
    def name(self) -> str:
        return self.names[self.mode]

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        spec = run / "hosts.json"
        server = self.server
        keys = {"key": str(server.client_key), "known_hosts": str(server.known_hosts)}
        spec.write_text(json.dumps({"ports": ports(hosts), **keys}))
        return [sys.executable, __file__, "--worker", self.mode, str(spec)], None

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        if out.strip() != str(len(hosts)):
            raise SystemExit(f"{self.name}: {out.strip()!r} hosts done, not {len(hosts)}")


async def worker(mode: str, spec_file: Path) -> int:
    import asyncssh

    spec = json.loads(spec_file.read_text())
    script = one_exec_script()

    async def host(port: int) -> int:
        async with asyncssh.connect(
            "127.0.0.1", port, username="root", client_keys=[spec["key"]],
            known_hosts=spec["known_hosts"],
        ) as conn:  # fmt: skip
            if mode == "one-exec":
                done = await conn.run(script, check=True)
                assert done.stdout.strip() == "ok", done.stdout
        return 1

    print(sum(await asyncio.gather(*(host(port) for port in spec["ports"]))))
    return 0


def trust_proxies(server: object, mapping: dict[int, int]) -> None:
    """known_hosts lines for the proxy ports: the same host keys, reached at other ports."""
    known = Path(server.known_hosts)
    lines = known.read_text().splitlines()
    by_port = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    extra = [
        f"[127.0.0.1]:{proxy} {by_port[f'[127.0.0.1]:{port}']}" for port, proxy in mapping.items()
    ]
    known.write_text("\n".join(lines + extra) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--rtt", type=float, nargs="+", default=[0, 50], help="ms added")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "HOSTS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return asyncio.run(worker(args.worker[0], Path(args.worker[1])))

    workdir = Path(tempfile.mkdtemp(prefix="mxl-"))
    server = start_fleet(workdir, args.hosts, "plain")
    tools = [Worker(server, "handshake"), Worker(server, "one-exec"), Floor(server), Matrix(server)]
    table: dict[str, dict[float, Runs]] = {}
    try:
        for rtt in args.rtt:
            with delayed(server.ports, rtt) as mapping:
                trust_proxies(server, mapping)
                hosts = [f"127.0.0.1:{mapping[port]}" for port in server.ports]
                for _ in range(args.repeat):  # interleaved: every tool sees the same machine
                    for tool in tools:
                        runs = measure(tool, hosts, 1, workdir, args.timeout)
                        merged = table.setdefault(tool.name, {}).setdefault(rtt, Runs())
                        merged.times += runs.times
                        merged.peaks_mb += runs.peaks_mb
    finally:
        server.stop()
    one_exec = Worker.names["one-exec"]
    head = " | ".join(f"{rtt:g} ms RTT: s (× one exec)" for rtt in args.rtt)
    rows = [f"| tool | {head} |", "|---" * (len(args.rtt) + 1) + "|"]
    for name, by_rtt in table.items():
        cells = []
        for rtt in args.rtt:
            median = statistics.median(by_rtt[rtt].times)
            floor = statistics.median(table[one_exec][rtt].times)
            cells.append(f"{median:.2f} ({median / floor:.2f}×)")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    command = shlex.join(["python", "bench/bench_latency.py", *sys.argv[1:]])
    how = (
        f"`{command}` — {machine()}; N = {args.hosts} hosts × {CHECKS} checks, medians of "
        f"{args.repeat} interleaved runs; RTT added by bench/latency.py."
    )
    publish("latency", "A fleet at a network's round-trip time (issue 16)", how, rows, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
