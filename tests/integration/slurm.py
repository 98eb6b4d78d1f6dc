"""A real Slurm cluster on loopback for tests: munged, slurmctld and one `slurmd -N NAME` per
node, all on this machine (Debian's slurm-wlm and munge), each node a port of its own.

Every daemon runs in the foreground as a child of the test process, with its config, key,
state and logs in a temp dir; `SLURM_CONF` points the client commands (sinfo, srun, scontrol)
at it. The nodes come up idle in a second or two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from required import unavailable
from sshd import free_ports

DAEMONS = ("munged", "slurmctld", "slurmd")
# A row of the Slurm tests' specs (vars.marks, a group `cluster`): it fails on a node whose
# file marks/bad-NODE exists, a failure observed on that node.
HEALTHY_ROW = """\
      - id: healthy
        title: Node not marked bad
        on: cluster
        failure: The node is marked bad
        probe: {kind: file, path: "{{ vars.marks }}/bad-{{ target.host }}"}
        expect: {exists: false}
        diagnostic: "{{ target.host }} carries the bad mark"
        fix: Remove {{ vars.marks }}/bad-{{ target.host }}
"""
UP_TIMEOUT = 30.0


def require_slurm() -> None:
    """Skip with the reason on a laptop without Slurm; fail in CI, which must run these."""
    missing = [name for name in (*DAEMONS, "srun", "sinfo", "scontrol") if not _which(name)]
    if missing:
        unavailable(
            f"{', '.join(missing)} not found: the Slurm tests run a real cluster on loopback "
            "(apt-get install slurm-wlm munge)",
            "MATRIX_REQUIRE_SLURM",
        )
    if os.geteuid() != 0:
        why = "the Slurm tests need root (slurmd runs jobs as their user)"
        unavailable(why, "MATRIX_REQUIRE_SLURM")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None
    )


CONFIG = """\
ClusterName=matrixtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
NodeName={nodes} NodeHostname={host} NodeAddr=127.0.0.1 Port=[{first_port}-{last_port}] {node}
PartitionName=debug Nodes={nodes} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
PartitionName=whole Nodes={nodes} MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
"""


class SlurmCluster:
    """slurmctld and `count` slurmd nodes n1…nN in partition `debug` (jobs share nodes) and
    `whole` (a job takes whole nodes); `env` is what a client
    command needs (SLURM_CONF); `extra_config` is appended to slurm.conf (a Prolog). Each
    node has `gpus` GPUs as Slurm's generic resources: stand-in device files, enough for
    Slurm to allocate them to jobs (what a GPU would do there is mocked, as nothing else)."""

    def __init__(
        self,
        root: Path,
        count: int = 3,
        extra_config: str = "",
        gpus: int = 0,
    ) -> None:
        require_slurm()
        self.root = root
        self.names = [f"n{i}" for i in range(1, count + 1)]
        self.nodes = f"n[1-{count}]"
        self.partition = "debug"
        for folder in ("munge", "state", "log", *(f"spool/{n}" for n in self.names)):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "munge").chmod(0o711)  # munged wants its socket's folder searchable by all
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        controller_port, first_port = _ports(count)
        self.conf = root / "slurm.conf"
        self.conf.write_text(
            CONFIG.format(
                host=socket.gethostname(),
                root=root,
                controller_port=controller_port,
                nodes=self.nodes,
                first_port=first_port,
                last_port=first_port + count - 1,
                node="CPUs=2 RealMemory=2000 Feature=cpu State=UNKNOWN"
                + (f" Gres=gpu:{gpus}" if gpus else ""),
            )
            + ("GresTypes=gpu\n" if gpus else "")
            + extra_config
        )
        if gpus:
            for i in range(gpus):
                (root / f"gpu{i}").touch()
            files = f"{root}/gpu[0-{gpus - 1}]" if gpus > 1 else f"{root}/gpu0"
            (root / "gres.conf").write_text(f"NodeName={self.nodes} Name=gpu File={files}\n")
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        try:
            self._start(root)
            self.wait_idle(self.names)
        except BaseException:
            self.stop()
            raise

    def _start(self, root: Path) -> None:
        munge = root / "munge"
        self._daemon(
            ["munged", "-F", "-f", f"--socket={munge}/socket", f"--key-file={munge}/munge.key",
             f"--log-file={root}/log/munged.log", f"--pid-file={munge}/pid",
             f"--seed-file={munge}/seed"],
            "munged",
        )  # fmt: skip
        deadline = time.monotonic() + UP_TIMEOUT
        while not (munge / "socket").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start: {self._log('munged')}")
            time.sleep(0.05)
        self.start("slurmctld")
        for name in self.names:
            self.start(f"slurmd-{name}")

    def start(self, name: str) -> None:
        """Start (or start again) `slurmctld` or `slurmd-NODE`, state kept from before."""
        if name == "slurmctld":
            argv = ["slurmctld", "-D", "-i"]
        else:
            argv = ["slurmd", "-D", "-N", name.removeprefix("slurmd-")]
        self._daemon(argv, name)

    def kill(self, name: str) -> None:
        """SIGKILL a daemon (`slurmctld`, `slurmd-n2`), as a crash would end it."""
        daemon = self.daemons.pop(name)
        os.killpg(daemon.pid, 9)
        daemon.wait()

    def _daemon(self, argv: list[str], name: str) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        with log:
            self.daemons[name] = subprocess.Popen(
                [_which(argv[0]) or argv[0], *argv[1:]],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "log" / f"{name}.out").read_text()[-2000:]
        return ""

    def sinfo(self) -> dict[str, tuple[str, str]]:
        """{node: (state, reason)} as Slurm reports them now."""
        done = self.run("sinfo", "-h", "-N", "-o", "%N|%T|%E")
        found = {}
        for line in done.stdout.splitlines():
            node, state, reason = line.split("|", 2)
            found[node] = (state, reason)
        return found

    def wait_idle(self, names: list[str]) -> None:
        """Until every named node is idle and responding (a node just resumed shows `idle*`
        until slurmd next answers: a reconfigure makes every slurmd answer now)."""
        deadline = time.monotonic() + UP_TIMEOUT
        states: dict[str, tuple[str, str]] = {}
        asked = False
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.CalledProcessError):
                states = self.sinfo()
                if all(states.get(name, ("",))[0] == "idle" for name in names):
                    return
                if not asked and any(state.endswith("*") for state, _ in states.values()):
                    self.run("scontrol", "reconfigure")
                    asked = True
            time.sleep(0.2)
        raise RuntimeError(f"Slurm nodes not idle: {states}; {self._log('slurmctld')}")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_which(argv[0]) or argv[0], *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def job(self, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """`srun -w NODE ARGV` (`true` by default): a job on the node, its prolog run first
        and its epilog after; not checked."""
        return subprocess.run(
            [_which("srun") or "srun", f"--nodelist={node}", "--immediate=30", *(argv or ["true"])],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def drain(self, node: str, reason: str) -> None:
        self.run("scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}")

    def resume(self, node: str) -> None:
        self.run("scontrol", "update", f"NodeName={node}", "State=RESUME")

    def jobs(self) -> list[str]:
        """`JOBID NAME STATE` of every job Slurm lists."""
        listed = self.run("squeue", "--noheader", "--format=%i %j %T").stdout
        return [line.strip() for line in listed.splitlines() if line.strip()]

    def wait_no_jobs(self, within: float = 15.0) -> list[str]:
        """Until Slurm lists no job (a job being released is COMPLETING for a moment), or
        `within` seconds; the jobs left."""
        deadline = time.monotonic() + within
        left = self.jobs()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.jobs()
        return left

    def stop(self) -> None:
        daemons = list(self.daemons.values())
        for daemon in reversed(daemons):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, 15)
        for daemon in daemons:
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, 9)
                daemon.wait()


def wait_for(what: Callable[[], bool], within: float = 30.0) -> bool:
    """Whether `what()` came true within `within` seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + within
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _ports(count: int) -> tuple[int, int]:
    """A free port for slurmctld and the first of `count` consecutive free ports for the
    nodes (slurm.conf gives the nodes a range)."""
    controller = free_ports(1)[0]
    for _ in range(100):
        first = free_ports(1)[0]
        if first + count < 65536 and all(_free(first + i) for i in range(count)):
            return controller, first
    raise RuntimeError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
