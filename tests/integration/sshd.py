"""A real OpenSSH sshd on loopback for tests: each port is a separate "host".

One daemon listens on at most 16 ports (OpenSSH's MAX_LISTEN_SOCKS), so `SshServer` starts one
daemon per 16 ports. Keys, known_hosts and config are throwaway files in a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from required import unavailable

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PORTS_PER_DAEMON = 16


def require_sshd() -> None:
    """Skip with the reason on a laptop without sshd; fail in CI, which must run these."""
    problem = None
    if not Path(SSHD).exists():
        problem = "OpenSSH sshd is not installed (apt-get install openssh-server)"
    elif os.geteuid() != 0:
        problem = "sshd tests need root (sshd's privilege separation)"
    if problem:
        unavailable(problem, "MATRIX_REQUIRE_SSHD")


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class SshServer:
    """sshd daemons on `ports`; `hosts` are "127.0.0.1:PORT" strings for specs.
    `extra_config` is appended to each daemon's sshd_config (e.g. `SetEnv SHLVL=1`)."""

    def __init__(self, root: Path, count: int, max_sessions: int = 10, extra_config: str = ""):
        require_sshd()
        Path("/run/sshd").mkdir(exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.host_key = keygen(root / "host_key")
        self.client_key = keygen(root / "client_key")
        self.other_key = keygen(root / "other_key")
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        self.ports = free_ports(count)
        self.known_hosts = root / "known_hosts"
        public = (root / "host_key.pub").read_text().split()
        self.known_hosts.write_text(
            "".join(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n" for port in self.ports)
        )
        self.daemons: list[subprocess.Popen[bytes]] = []
        for start in range(0, count, PORTS_PER_DAEMON):
            self._start(self.ports[start : start + PORTS_PER_DAEMON], max_sessions, extra_config)
        self._wait_listening()

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def _start(self, ports: list[int], max_sessions: int, extra_config: str) -> None:
        index = len(self.daemons)
        config = self.root / f"sshd_config.{index}"
        config.write_text(
            "".join(f"Port {port}\n" for port in ports)
            + f"""ListenAddress 127.0.0.1
HostKey {self.host_key}
AuthorizedKeysFile {self.root}/authorized_keys
PidFile {self.root}/sshd.{index}.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxSessions {max_sessions}
MaxStartups 200
LogLevel ERROR
{extra_config}
"""
        )
        self.daemons.append(
            subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stderr=open(self.root / f"sshd.{index}.log", "wb"),  # noqa: SIM115
                start_new_session=True,
            )
        )

    def _wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    logs = [p.read_text() for p in self.root.glob("sshd.*.log")]
                    raise RuntimeError(f"sshd did not listen on {port}: {logs}")
                time.sleep(0.05)

    def target(self, name: str = "gpu", hosts: list[str] | None = None, **options: object) -> str:
        """A `targets:` entry (YAML flow mapping) for these hosts, verified by known_hosts."""
        fields = {
            "via": "ssh",
            "hosts": hosts or self.hosts,
            "user": "root",
            "key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            **options,
        }
        body = ", ".join(f"{k}: {_flow(v)}" for k, v in fields.items())
        return f"{name}: {{{body}}}"

    def kill(self) -> None:
        """Kill every daemon and everything it started (connection handlers, sessions): the
        hosts die mid-run, and their clients see the connection drop."""
        for daemon in self.daemons:
            for pid in [daemon.pid, *descendants(daemon.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            daemon.wait()

    def stop(self) -> None:
        self.kill()


def descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (handlers re-exec and leave its group)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _flow(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)
