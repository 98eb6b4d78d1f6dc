"""Where a fleet run's CPU goes: the controller (the tool and its children) or the hosts.

    python bench/fleet_cpu.py --hosts 50

On loopback the "hosts" share this machine's cores with the tool, so bench_fleet.py's wall
times charge host-side work to the controller. This splits it: controller CPU from the tool's
reaped children (rusage), host CPU from the sshd daemons' own and reaped children's times
(sessions, agents and the probes they ran), read after the run's ssh masters are ended.
Prints a markdown table; the masters' own client-side CPU (they daemonize) is not counted.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench_fleet import Floor, Matrix, Testinfra, Tool, start_fleet
from common import end_marked, run_quietly

TICK = os.sysconf("SC_CLK_TCK")
SETTLE = 1.0  # seconds for the last sessions to end and be reaped by their daemon


def host_seconds(daemons: list[int]) -> float:
    """CPU of the sshd daemons and every session they reaped."""
    total = 0
    for pid in daemons:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def controller_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tool: Tool, hosts: list[str], daemons: list[int], workdir: Path) -> str:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run = Path(tmp)
        argv, env = tool.command(hosts, run)
        host, controller, started = host_seconds(daemons), controller_seconds(), time.perf_counter()
        out = run_quietly(argv, tool.exit_codes, env=env, timeout=900, capture=True)
        wall = time.perf_counter() - started
        tool.verify(out, hosts, run)
        end_marked(str(run))  # ssh masters hold their sessions open until they end
        time.sleep(SETTLE)
        host = host_seconds(daemons) - host
        controller = controller_seconds() - controller
    return f"| {tool.name} | {wall:.2f} | {controller:.2f} | {host:.2f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50, help="fleet size N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="matrix-fleet-cpu-") as tmp:
        workdir = Path(tmp)
        server = start_fleet(workdir, args.hosts, "plain")
        try:
            daemons = [daemon.pid for daemon in server.daemons]
            tools: list[Tool] = [Matrix(server), Floor(server), Testinfra(server, 2)]
            rows = [measure(tool, server.hosts, daemons, workdir) for tool in tools]
        finally:
            server.stop()
    print(f"N = {args.hosts}: `python bench/fleet_cpu.py --hosts {args.hosts}`\n")
    print("| tool | wall (s) | controller CPU-s | host CPU-s |\n|---|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
