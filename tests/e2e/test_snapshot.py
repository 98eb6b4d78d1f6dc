"""`matrix snapshot`: a known-good machine, observed for real (locally and over a real sshd on
loopback), becomes a baseline spec that passes on that machine and names what differs."""

from __future__ import annotations

import math
import platform
import shutil
import sys
from pathlib import Path

import yaml


def checks_of(path: Path) -> dict[str, dict]:
    return {c["id"]: c for c in yaml.safe_load(path.read_text())["phases"][0]["checks"]}


def test_local_baseline_pins_versions_and_bounds_sizes(cli, tmp_path: Path) -> None:
    done = cli(
        "snapshot",
        "--probes",
        "python,disk,memory",
        "--packages",
        "pyyaml,not-a-package",
        "--path",
        str(tmp_path),
        "-o",
        "baseline.yaml",
    )
    assert done.returncode == 0, done.stderr
    checks = checks_of(tmp_path / "baseline.yaml")
    python = checks["python"]
    major, minor, micro = platform.python_version_tuple()
    assert python["expect"]["version"] == {"version": f"~={major}.{minor}.{micro}"}
    assert python["probe"]["packages"] == ["pyyaml"]  # the missing one is not pinned
    assert python["expect"]["packages.pyyaml"]["version"].startswith(f"~={yaml.__version__}")
    usage = shutil.disk_usage(tmp_path)
    disk = checks[next(c for c in checks if c.startswith("disk-"))]
    assert disk["probe"]["path"] == str(tmp_path)
    assert disk["expect"]["total_gb"] == {"ge": math.floor(usage.total / 1024**3)}
    assert abs(disk["expect"]["free_gb"]["ge"] - usage.free / 1024**3 / 2) <= 1
    assert checks["memory"]["expect"]["total_gb"]["ge"] >= 1
    ran = cli("run", "baseline.yaml")
    assert ran.returncode == 0, ran.stdout
    assert "✅ READY: 3 passed" in ran.stdout


def test_a_node_that_differs_fails_with_what_differs(cli, tmp_path: Path) -> None:
    assert cli("snapshot", "--probes", "python", "-o", "baseline.yaml").returncode == 0
    path = tmp_path / "baseline.yaml"
    text = path.read_text()
    current = f"~={platform.python_version()}"
    path.write_text(text.replace(current, "~=3.0.0"))
    ran = cli("run", "baseline.yaml")
    assert ran.returncode == 1
    said = f'localhost differs from {platform.node()}: version is "{platform.python_version()}"'
    assert said in ran.stdout


def test_unknown_kind_is_refused(cli) -> None:
    done = cli("snapshot", "--probes", "python,dsk")
    assert done.returncode == 2
    assert "cannot snapshot dsk: snapshot knows python, disk, memory" in done.stderr


def test_remote_baseline_over_ssh_checks_the_fleet(cli, tmp_path: Path) -> None:
    from integration.sshd import SshServer

    server = SshServer(tmp_path / "sshd", 1, extra_config="SetEnv SHLVL=1")
    try:
        host = f"root@{server.hosts[0]}"
        done = cli(
            "snapshot",
            "--target",
            host,
            "--key",
            server.client_key,
            "--known-hosts",
            server.known_hosts,
            "--python",
            sys.executable,
            "--probes",
            "python,memory",
            "-o",
            "baseline.yaml",
        )
        assert done.returncode == 0, done.stderr
        spec = yaml.safe_load((tmp_path / "baseline.yaml").read_text())
        assert spec["targets"]["fleet"]["hosts"] == [server.hosts[0]]
        assert spec["targets"]["fleet"]["user"] == "root"
        assert spec["vars"]["target"] == "fleet"
        ran = cli("run", "baseline.yaml", "--target", f"fleet={server.hosts[0]}")
        assert ran.returncode == 0, ran.stdout
        assert "READY" in ran.stdout
    finally:
        server.stop()


def test_an_unreachable_host_is_said_and_nothing_is_pinned(cli) -> None:
    done = cli("snapshot", "--target", "root@127.0.0.1:1", "--probes", "memory")
    assert done.returncode == 1
    assert "memory: not observed" in done.stderr
