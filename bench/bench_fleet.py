"""`matrix` on a fleet of SSH hosts, against an asyncssh floor, pytest-testinfra and ansible-core.

    python bench/bench_fleet.py                   # N = 10, 50, 100; writes its part of RESULTS.md
    python bench/bench_fleet.py --hosts 10 --repeat 1 --no-write    # a quick check, print only
    python bench/bench_fleet.py --peer-repeat 1   # one run each of testinfra and ansible

Every "host" is a port of a real OpenSSH sshd on 127.0.0.1 (tests/integration/sshd.py), and
every tool does the same 20 checks on each of the N hosts: 10 commands, 5 files that must
exist and 5 paths with more than 10 MiB free. RUN below is a fresh temp dir per run, so no run
reuses another's ssh ControlMaster; the masters a run leaves behind are ended after it.

    matrix     matrix run RUN/fleet.yaml --quiet --json RUN/out.json
    floor      python bench/bench_fleet.py --floor-worker RUN/hosts.json
    testinfra  python -m pytest -q -p no:cacheprovider RUN/test_fleet.py
                 --hosts=ssh://root@127.0.0.1:PORT,... --ssh-config=RUN/ssh_config -n W
    ansible    ansible-playbook RUN/fleet.yml     (ANSIBLE_CONFIG=RUN/ansible.cfg, forks = N)

The floor is one connection setup plus 20 channel round trips per host (`conn.run("true")`
with asyncssh), all hosts at once: what a tool with a session per check pays at least.
testinfra's xdist width W is the fastest of {2, 4, 8, N} at N = 10 (unless `--workers`).
Peak memory is the summed RSS of the tool's processes (its tree, plus the ssh masters, which
leave it), sampled every 25 ms; sshd, the server side, is not counted. The `--sessions` sweep
runs matrix with the target's `max_sessions` at each value (and `agent: false`, where matrix
has that option).

`--login plain` (the default) starts sshd with `SetEnv SHLVL=1`, so bash skips ~/.bashrc for
ssh commands: every "host" here shares one ~/.bashrc, and a `pyenv init` in it takes a lock
on every login that serializes the whole fleet (at N = 50, matrix's tasks hit their timeout).
`--login as-is` keeps the machine's login.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from common import ROOT, PeakRss, end_marked, machine, matrix_argv, run_quietly, write_section

if TYPE_CHECKING:
    from sshd import SshServer

COMMANDS = (
    ["true"],
    ["uname", "-r"],
    ["id", "-u"],
    ["hostname"],
    ["nproc"],
    ["test", "-d", "/tmp"],
    ["test", "-r", "/etc/passwd"],
    ["ls", "/"],
    ["cat", "/etc/os-release"],
    ["date", "+%s"],
)
FILES = ("/etc/hostname", "/etc/passwd", "/etc/os-release", "/bin/sh", "/etc/hosts")
DISKS = ("/", "/tmp", "/var", "/usr", "/etc")
MIN_FREE_KB = 10 * 1024
CHECKS = len(COMMANDS) + len(FILES) + len(DISKS)
MAX_SESSIONS = 128  # sshd's MaxSessions: above any tool's channels per host, so no tool waits
ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook")
LOGINS = {
    "plain": "each ssh session skips the login user's ~/.bashrc (sshd `SetEnv SHLVL=1`: bash "
    "reads it for an ssh command only at shell level 1), so it pays a bare `bash -c`",
    "as-is": "each ssh session runs the login user's ~/.bashrc as this machine has it (all the "
    '"hosts" share it, and any lock it takes)',
}


class Tool:
    """A tool under test: what one run executes, and whether it did all the work."""

    name: str
    exit_codes: ClassVar[tuple[int, ...]] = (0,)

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        """Write what the run needs into `run`; return its argv and environment."""
        raise NotImplementedError

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        """Exit unless the run did all the work and passed; `out` is its stdout."""
        raise NotImplementedError


@dataclass
class Runs:
    times: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def peak_mb(self) -> float:
        return statistics.median(self.peaks_mb)


def ports(hosts: list[str]) -> list[int]:
    return [int(host.rsplit(":", 1)[1]) for host in hosts]


def measure(tool: Tool, hosts: list[str], repeat: int, workdir: Path, timeout: float) -> Runs:
    """`repeat` cold runs of `tool` on `hosts`, each in its own RUN dir, ended and removed."""
    runs = Runs()
    for _ in range(repeat):
        run = Path(tempfile.mkdtemp(prefix="r", dir=workdir))
        marker = f"{run}/"
        argv, env = tool.command(hosts, run)
        try:
            with PeakRss(marker) as rss:
                started = time.perf_counter()
                out = run_quietly(
                    argv,
                    tool.exit_codes,
                    timeout=timeout,
                    env=env,
                    capture=True,
                    started=rss.follow,
                )
                runs.times.append(time.perf_counter() - started)
            runs.peaks_mb.append(rss.peak_mb)
            tool.verify(out, hosts, run)
        finally:
            leftovers = end_marked(marker)
            shutil.rmtree(run)
        print(
            f"  {tool.name}, N={len(hosts)}: {runs.times[-1]:.2f} s, {runs.peaks_mb[-1]:.0f} MB, "
            f"{leftovers} leftover processes ended",
            file=sys.stderr,
        )
    return runs


@dataclass
class Matrix(Tool):
    server: SshServer
    options: dict[str, object] = field(default_factory=dict)
    exit_codes: ClassVar[tuple[int, ...]] = (0, 1)  # 1: not READY, and verify says why

    @property
    def name(self) -> str:
        return " ".join(["matrix", *(f"{k}: {json.dumps(v)}" for k, v in self.options.items())])

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        spec = run / "fleet.yaml"
        spec.write_text(matrix_spec(self.server.target("fleet", hosts, **self.options)))
        return [*matrix_argv(), "run", str(spec), "--quiet", "--json", str(run / "out.json")], None

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        report = json.loads((run / "out.json").read_text())
        expected = {"pass": (CHECKS + 1) * len(hosts), "fail": 0, "error": 0, "skip": 0}
        if report["verdict"] != "READY" or report["counts"] != expected:
            failed = [r for r in report["results"] if r["status"] != "pass"][:3]
            raise SystemExit(f"{self.name}: {report['verdict']} {report['counts']}: {failed}")


def matrix_spec(target: str) -> str:
    checks = [
        {"id": f"command-{i}", "probe": {"kind": "command", "argv": argv}}
        for i, argv in enumerate(COMMANDS, 1)
    ]
    checks += [
        {"id": f"file-{i}", "probe": {"kind": "file", "path": path}}
        for i, path in enumerate(FILES, 1)
    ]
    checks += [
        {
            "id": f"disk-{i}",
            "probe": {"kind": "disk", "path": path},
            "expect": {"free_gb": {"gt": MIN_FREE_KB / 2**20}},
        }
        for i, path in enumerate(DISKS, 1)
    ]
    lines = ["version: 1", "name: bench-fleet", "targets:", f"  {target}", "phases:"]
    lines += ["  - id: fleet", "    checks:"]
    lines += [f"      - {json.dumps({**check, 'on': 'fleet'})}" for check in checks]
    return "\n".join(lines) + "\n"


@dataclass
class Floor(Tool):
    server: SshServer
    name: str = "floor (asyncssh)"

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        spec = run / "hosts.json"
        spec.write_text(
            json.dumps(
                {
                    "ports": ports(hosts),
                    "key": str(self.server.client_key),
                    "known_hosts": str(self.server.known_hosts),
                }
            )
        )
        return [sys.executable, str(Path(__file__).resolve()), "--floor-worker", str(spec)], None

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        if out.strip() != str(CHECKS * len(hosts)):
            raise SystemExit(f"floor: {out.strip()!r} round trips, not {CHECKS * len(hosts)}")


async def floor_worker(spec_file: Path) -> int:
    """All hosts at once; on each, one connection, then CHECKS sequential `true` channels."""
    import asyncssh

    spec = json.loads(spec_file.read_text())

    async def host(port: int) -> int:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="root",
            client_keys=[spec["key"]],
            known_hosts=spec["known_hosts"],
        ) as conn:
            for _ in range(CHECKS):
                await conn.run("true", check=True)
        return CHECKS

    print(sum(await asyncio.gather(*(host(port) for port in spec["ports"]))))
    return 0


def ssh_config(server: SshServer, run: Path) -> Path:
    """A client config for the fleet: its key and known_hosts, host keys checked, and any
    ControlMaster socket under RUN."""
    (run / "cp").mkdir()
    path = run / "ssh_config"
    path.write_text(
        f"""Host *
  User root
  IdentityFile {server.client_key}
  IdentitiesOnly yes
  UserKnownHostsFile {server.known_hosts}
  StrictHostKeyChecking yes
  BatchMode yes
  ControlPath {run}/cp/%C
  LogLevel ERROR
"""
    )
    return path


TESTINFRA_TESTS = '''"""The fleet checks, for pytest-testinfra (from bench/bench_fleet.py)."""

import shlex

import pytest

COMMANDS = {commands!r}
FILES = {files!r}
DISKS = {disks!r}
MIN_FREE_KB = {min_free_kb}


@pytest.mark.parametrize("argv", COMMANDS)
def test_command(host, argv):
    assert host.run(shlex.join(argv)).rc == 0


@pytest.mark.parametrize("path", FILES)
def test_file(host, path):
    assert host.file(path).exists


@pytest.mark.parametrize("path", DISKS)
def test_disk(host, path):
    free_kb = int(host.check_output("df -Pk %s", path).splitlines()[1].split()[3])
    assert free_kb > MIN_FREE_KB
'''


@dataclass
class Testinfra(Tool):
    server: SshServer
    workers: int

    @property
    def name(self) -> str:
        return f"pytest-testinfra (-n {self.workers})"

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        (run / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
        tests = run / "test_fleet.py"
        tests.write_text(
            TESTINFRA_TESTS.format(
                commands=COMMANDS, files=FILES, disks=DISKS, min_free_kb=MIN_FREE_KB
            )
        )
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)]
        argv += [
            "--hosts=" + ",".join(f"ssh://root@{host}" for host in hosts),
            f"--ssh-config={ssh_config(self.server, run)}",
            "-n",
            str(self.workers),
        ]
        return argv, None

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        summary = out.strip().rpartition("\n")[2]
        if not re.fullmatch(rf"{CHECKS * len(hosts)} passed in .*", summary):
            raise SystemExit(f"{self.name}: {summary!r}, not {CHECKS * len(hosts)} passed")


@dataclass
class Ansible(Tool):
    server: SshServer
    python: str
    name: str = "ansible-core (forks = N)"

    def command(self, hosts: list[str], run: Path) -> tuple[list[str], dict[str, str] | None]:
        assert ANSIBLE_PLAYBOOK
        (run / "cp").mkdir()
        (run / "inventory.ini").write_text(
            "[fleet]\n"
            + "".join(f"h{port} ansible_port={port}\n" for port in ports(hosts))
            + f"""[fleet:vars]
ansible_host=127.0.0.1
ansible_user=root
ansible_ssh_private_key_file={self.server.client_key}
ansible_python_interpreter={self.python}
"""
        )
        (run / "ansible.cfg").write_text(
            f"""[defaults]
inventory = {run}/inventory.ini
forks = {len(hosts)}
host_key_checking = True

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes \
-o UserKnownHostsFile={self.server.known_hosts} -o StrictHostKeyChecking=yes
"""
        )
        (run / "fleet.yml").write_text(json.dumps(ansible_playbook(), indent=1))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(run / "ansible.cfg"),
            "ANSIBLE_HOME": str(run / "home"),
            "ANSIBLE_LOCAL_TEMP": str(run / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(run / "cp"),
        }
        return [ANSIBLE_PLAYBOOK, str(run / "fleet.yml")], env

    def verify(self, out: str, hosts: list[str], run: Path) -> None:
        recap = re.findall(
            r"^h\d+\s+: ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M
        )
        if recap != [(str(CHECKS), "0", "0")] * len(hosts):
            raise SystemExit(f"{self.name}: the recap is not all ok: {out[-2000:]}")


def ansible_playbook() -> list[dict[str, object]]:
    """The fleet checks as one play (JSON is YAML)."""
    tasks: list[dict[str, object]] = [
        {"name": shlex.join(argv), "ansible.builtin.command": {"argv": argv}} for argv in COMMANDS
    ]
    tasks += [
        {
            "name": f"exists {path}",
            "ansible.builtin.stat": {"path": path},
            "register": "found",
            "failed_when": "not found.stat.exists",
        }
        for path in FILES
    ]
    tasks += [
        {
            "name": f"free {path}",
            "ansible.builtin.shell": (
                f"test \"$(df -Pk {path} | awk 'NR == 2 {{print $4}}')\" -gt {MIN_FREE_KB}"
            ),
        }
        for path in DISKS
    ]
    return [{"hosts": "fleet", "gather_facts": False, "tasks": tasks}]


def remote_python3(server: SshServer, workdir: Path) -> str:
    """The python3 an ssh login on the fleet resolves, for ansible_python_interpreter."""
    run = Path(tempfile.mkdtemp(prefix="r", dir=workdir))
    try:
        argv = ["ssh", "-F", str(ssh_config(server, run)), "-p", str(server.ports[0])]
        found = run_quietly([*argv, "127.0.0.1", "command -v python3"], timeout=30, capture=True)
    finally:
        shutil.rmtree(run)
    return found.strip()


def agent_option_exists(server: SshServer, workdir: Path) -> bool:
    """Whether this matrix accepts the ssh target option `agent: false`."""
    spec = workdir / "agent.yaml"
    spec.write_text(matrix_spec(server.target("fleet", server.hosts[:1], agent=False)))
    done = subprocess.run(
        [*matrix_argv(), "validate", str(spec)], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def versions() -> str:
    dists = ("preflight-matrix", "asyncssh", "pytest-testinfra", "pytest-xdist", "ansible-core")
    found = [f"{dist} {importlib.metadata.version(dist)}" for dist in dists]
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10, check=False)
    return ", ".join([*found, ssh.stderr.strip()])


def start_fleet(workdir: Path, count: int, login: str) -> SshServer:
    """sshd on `count` loopback ports, from the integration tests' helper (imported here, so
    the floor worker does not pay for pytest). The plain login adds `SetEnv SHLVL=1`."""
    sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]
    import pytest
    import sshd

    extra = "SetEnv SHLVL=1" if login == "plain" else ""
    try:
        return sshd.SshServer(workdir / "sshd", count, MAX_SESSIONS, extra_config=extra)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        raise SystemExit(f"bench_fleet needs a local OpenSSH sshd: {exc.msg}") from None


def tool_table(results: dict[str, Runs]) -> str:
    base = results["matrix"].median
    rows = [
        "| tool | runs | median wall (s) | min–max (s) | × matrix | peak MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        rows.append(
            f"| {name} | {len(runs.times)} | {runs.median:.2f} "
            f"| {min(runs.times):.2f}–{max(runs.times):.2f} | {runs.median / base:.2f}× "
            f"| {runs.peak_mb:.0f} |"
        )
    return "\n".join(rows)


def summary_table(by_size: dict[int, dict[str, Runs]], floor: str, peers: list[str]) -> str:
    rows = [
        "| N | matrix (s) | floor (s) | matrix / floor | faster peer | faster peer / matrix |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for size, results in by_size.items():
        mx, low = results["matrix"].median, results[floor].median
        peer = min(peers, key=lambda name: results[name].median)
        rows.append(
            f"| {size} | {mx:.2f} | {low:.2f} | {mx / low:.2f}× | {peer} "
            f"| {results[peer].median / mx:.2f}× |"
        )
    return "\n".join(rows)


def workers_table(sweep: dict[int, Runs], size: int) -> str:
    rows = [f"| -n W | wall (s), N = {size} | peak MB |", "|---:|---:|---:|"]
    rows += [
        f"| {workers} | {runs.median:.2f} | {runs.peak_mb:.0f} |" for workers, runs in sweep.items()
    ]
    return "\n".join(rows)


def sessions_table(sweep: dict[str, dict[int, Runs]]) -> str:
    sizes = list(next(iter(sweep.values())))
    rows = [
        "| target options | " + " | ".join(f"N = {n}: wall (s), peak MB" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, by_size in sweep.items():
        cells = [f"{runs.median:.2f}, {runs.peak_mb:.0f}" for runs in by_size.values()]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int_list, default=[10, 50, 100], help="fleet sizes N")
    parser.add_argument("--repeat", type=int, default=3, help="runs of matrix and the floor")
    parser.add_argument(
        "--peer-repeat", type=int, help="runs of testinfra and ansible (default: --repeat)"
    )
    parser.add_argument(
        "--workers", type=int, help="testinfra's -n (default: the fastest of 2, 4, 8, N at N=10)"
    )
    parser.add_argument(
        "--sessions",
        type=int_list,
        default=[1, 2, 4, 8],
        help="matrix max_sessions values to sweep ('' for none)",
    )
    parser.add_argument(
        "--login", choices=LOGINS, default="plain", help="what an ssh session runs first"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per tool run")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--floor-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_worker:
        return asyncio.run(floor_worker(args.floor_worker))
    if not ANSIBLE_PLAYBOOK:
        raise SystemExit("ansible-playbook not found: pip install -e '.[bench]'")
    peer_repeat = args.peer_repeat or args.repeat
    sizes = sorted(args.hosts)

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mxf-"))
    try:
        server = start_fleet(workdir, sizes[-1], args.login)
        try:
            text = bench(server, workdir, args, sizes, peer_repeat)
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir)
    text += f"\n(benchmark took {time.perf_counter() - started:.0f} s)\n"
    print(text)
    if not args.no_write:
        write_section("fleet", text)
    return 0


def bench(
    server: SshServer, workdir: Path, args: argparse.Namespace, sizes: list[int], peer_repeat: int
) -> str:
    def run(tool: Tool, size: int, repeat: int) -> Runs:
        return measure(tool, server.hosts[:size], repeat, workdir, args.timeout)

    python = remote_python3(server, workdir)
    sweep_size = min(10, sizes[-1])
    workers_sweep = {}
    workers = args.workers
    if workers is None:
        for width in sorted({2, 4, 8, sweep_size}):
            workers_sweep[width] = run(Testinfra(server, width), sweep_size, 1)
        workers = min(workers_sweep, key=lambda width: workers_sweep[width].median)

    floor, testinfra, ansible = Floor(server), Testinfra(server, workers), Ansible(server, python)
    by_size: dict[int, dict[str, Runs]] = {}
    for size in sizes:
        by_size[size] = {
            "matrix": run(Matrix(server), size, args.repeat),
            floor.name: run(floor, size, args.repeat),
            testinfra.name: run(testinfra, size, peer_repeat),
            ansible.name: run(ansible, size, peer_repeat),
        }

    variants = [Matrix(server, {"max_sessions": sessions}) for sessions in args.sessions]
    if args.sessions and agent_option_exists(server, workdir):
        variants.append(Matrix(server, {"agent": False}))
    sessions_sweep = {
        variant.name: {size: run(variant, size, args.repeat) for size in sizes}
        for variant in variants
    }

    invocation = shlex.join(["python", "bench/bench_fleet.py", *sys.argv[1:]])
    parts = [
        "# matrix on an SSH fleet",
        "",
        f"Command: `{invocation}`",
        f"Date: {dt.date.today().isoformat()}",
        f"Machine: {machine()}",
        f"Versions: {versions()}",
        "",
        f"Hosts: N ports of OpenSSH sshd on 127.0.0.1 (one daemon per 16 ports, MaxSessions "
        f"{MAX_SESSIONS}), user root, an ed25519 key, host keys checked against a known_hosts "
        f"file. Work on every host, {CHECKS} checks: {len(COMMANDS)} commands "
        f"({', '.join(f'`{shlex.join(argv)}`' for argv in COMMANDS)}), {len(FILES)} files "
        f"that must exist ({', '.join(FILES)}), {len(DISKS)} paths with more than "
        f"{MIN_FREE_KB // 1024} MiB free ({', '.join(DISKS)}). Login ({args.login}): "
        f"{LOGINS[args.login]}. RUN is a fresh temp dir per run: "
        "every run starts without ssh masters, and those it leaves are ended after it.",
        "",
        "- **matrix**: `matrix run RUN/fleet.yaml --quiet --json RUN/out.json`; a target group "
        "`fleet` (`via: ssh`, default `max_sessions`), the checks `on: fleet` with probes "
        f"`command`, `file` and `disk`; passes at verdict READY with {CHECKS + 1}×N passes "
        "(the checks and one ssh-connect task per host).",
        "- **floor (asyncssh)**: `python bench/bench_fleet.py --floor-worker RUN/hosts.json`; "
        f'all hosts at once, on each one connection then {CHECKS} sequential `conn.run("true")`: '
        f"one connection setup plus {CHECKS} channel round trips per host.",
        "- **pytest-testinfra**: `python -m pytest -q -p no:cacheprovider RUN/test_fleet.py "
        "--hosts=ssh://root@127.0.0.1:PORT,... --ssh-config=RUN/ssh_config "
        f"-n {workers}` (ssh backend, its default ControlMaster=auto, ControlPersist=60s; "
        "ControlPath in RUN); `host.run(cmd).rc == 0`, `host.file(p).exists`, `df -Pk p`; "
        f"passes at {CHECKS}×N passed.",
        "- **ansible-core**: `ansible-playbook RUN/fleet.yml` with ANSIBLE_CONFIG=RUN/ansible.cfg "
        f"(forks = N, pipelining, `gather_facts: false`, ansible_python_interpreter={python} as "
        "an ssh login resolves python3, ssh_args = ControlMaster=auto, ControlPersist=60s and "
        "the known_hosts; ANSIBLE_HOME, ANSIBLE_LOCAL_TEMP and the ControlPath dir in RUN); "
        "`command`, `stat` with `failed_when: not found.stat.exists`, `shell` df tests; passes "
        f"when the recap has ok={CHECKS} and no failure on every host.",
        "",
        "Wall: the median of `runs` runs, timed from this process. Peak MB: the median over the "
        "runs of the largest summed RSS (sampled every 25 ms) of the tool's processes, its "
        "process tree plus the ssh masters that leave it, sshd excepted. Summing RSS counts "
        "shared pages once per process, so forked workers (ansible's forks, a fork before exec) "
        "count their parent's pages again.",
    ]
    for size, results in by_size.items():
        parts += ["", f"## N = {size}", "", tool_table(results)]
    parts += [
        "",
        "## Summary",
        "",
        summary_table(by_size, floor.name, [testinfra.name, ansible.name]),
    ]
    if workers_sweep:
        parts += [
            "",
            f"## testinfra width (one run each; the fastest, -n {workers}, is used above)",
            "",
            workers_table(workers_sweep, sweep_size),
        ]
    if sessions_sweep:
        parts += [
            "",
            f"## matrix `max_sessions` sweep (median of {args.repeat})",
            "",
            sessions_table(sessions_sweep),
        ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
