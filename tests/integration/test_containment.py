"""Nothing a probe starts outlives it: background children, daemons that double-fork and leave
the session, children that ignore SIGTERM or hold stdout open — after a normal end, a timeout
and SIGTERM to matrix, on the local target and over SSH with and without the agent.

Every process a test starts carries a fresh marker in its command line (`sleep 311.<digits>`);
the SSH "hosts" are sshd on loopback, so /proc shows their processes too.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from sshd import SshServer

from matrix.spec.models import TargetSpec
from matrix.transport import TargetPool
from matrix.transport.base import LOCAL, TargetRef

PYTHON_DAEMON = (
    "import os, sys\n"
    "if os.fork(): sys.exit()\n"
    "os.setsid()\n"
    "if os.fork(): sys.exit()\n"
    'os.execvp("sleep", ["sleep", sys.argv[1]])\n'
)
# check id → a shell line that leaves something behind, each by another route, and prints
# "started"; {m} is the test's marker
LEFT_BEHIND = {
    "background": "sleep {m}1 >/dev/null 2>&1 & echo started",
    "holds-stdout": "sleep {m}2 & echo started",
    "setsid-daemon": "(setsid sh -c 'sleep {m}3 >/dev/null 2>&1 &' &); echo started",
    "ignores-term": "sh -c 'trap \"\" TERM HUP INT; sleep {m}4' >/dev/null 2>&1 & echo started",
}
BASH = {"nohup-disown": "nohup sleep {m}5 >/dev/null 2>&1 & disown; echo started"}
UNMARKED = {"env-cleared-daemon": "env -i setsid sleep {m}6 >/dev/null 2>&1 & echo started"}
TRANSPORTS = ["local", "ssh-agent", "ssh-no-agent"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(tmp_path_factory.mktemp("sshd"), 1)
    yield server
    server.stop()


@pytest.fixture
def marker() -> Iterator[str]:
    """`sleep 311.<digits>`: unique to the test; whatever still has it afterwards is killed."""
    prefix = f"311.{secrets.randbelow(10**6):06d}"
    yield prefix
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if prefix in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, UnicodeDecodeError):
            continue


def spec(transport: str, sshd: SshServer | None, checks: dict[str, dict[str, object]]) -> str:
    """A spec running `checks` (id → row fields) on `transport`; rows are JSON, valid YAML."""
    targets, on = "", {}
    if transport != "local":
        assert sshd is not None
        targets = "targets:\n  " + sshd.target(agent=transport == "ssh-agent") + "\n"
        on = {"on": "gpu"}
    rows = "".join(
        f"      - {json.dumps({'id': check_id, **on, **row})}\n" for check_id, row in checks.items()
    )
    return f"version: 1\nname: containment\n{targets}phases:\n  - id: p\n    checks:\n{rows}"


def shell(command: str, **row: object) -> dict[str, object]:
    return {"probe": {"kind": "command", "shell": command}, **row}


def shells(lines: dict[str, str], marker: str) -> dict[str, dict[str, object]]:
    return {key: shell(line.format(m=marker)) for key, line in lines.items()}


def bash(command: str, **row: object) -> dict[str, object]:
    return {"probe": {"kind": "command", "argv": ["bash", "-c", command]}, **row}


def task(results: dict[str, dict[str, object]], check_id: str) -> dict[str, object]:
    """A check's result whatever host it ran on (SSH task ids end in @host)."""
    (found,) = [r for key, r in results.items() if key.split("@")[0] == check_id]
    return found


def live(needle: str) -> list[str]:
    """Command lines of live (non-zombie) processes containing `needle`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, UnicodeDecodeError):
            continue
        if needle in cmdline and state != "Z":
            found.append(cmdline)
    return found


def sleeping(marker: str) -> list[str]:
    return [line for line in live(f"sleep {marker}") if line.startswith("sleep ")]


def leftovers(marker: str, within: float = 5.0) -> list[str]:
    """The marker's processes still alive after `within` seconds (none, when all is well)."""
    deadline = time.monotonic() + within
    while (left := live(f"sleep {marker}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def assert_clean_exit(stderr: str) -> None:
    for text in ("Event loop is closed", "Exception ignored", "Traceback"):
        assert text not in stderr, stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_probe_that_leaves_processes_passes_and_leaves_none(
    transport, sshd, marker, cli, write_spec, report, tmp_path
):
    checks = shells(LEFT_BEHIND, marker)
    checks |= {key: bash(line.format(m=marker)) for key, line in BASH.items()}
    checks["python-daemon"] = {
        "probe": {"kind": "command", "argv": ["python3", "-c", PYTHON_DAEMON, f"{marker}7"]}
    }
    write_spec(spec(transport, sshd, checks))
    done = cli("run", "spec.yaml", "--json", "out.json", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    results = report(tmp_path / "out.json")["by_id"]
    for key in LEFT_BEHIND.keys() | BASH.keys():
        assert task(results, key)["facts"]["stdout"] == "started", task(results, key)
    for key in checks:  # none waited for a child holding its stdout (2 s of grace)
        assert task(results, key)["duration"] < 2, task(results, key)
    assert leftovers(marker) == []
    assert_clean_exit(done.stderr)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_timeout_kills_the_probe_and_what_left_its_session(
    transport, sshd, marker, cli, write_spec, report, tmp_path
):
    daemon = f"(setsid sh -c 'trap \"\" TERM; sleep {marker}1' >/dev/null 2>&1 &); "
    checks = {"hangs": shell(f"{daemon}sleep {marker}2 & sleep {marker}3", timeout="1s")}
    write_spec(spec(transport, sshd, checks))
    done = cli("run", "spec.yaml", "--json", "out.json", timeout=60)
    hangs = task(report(tmp_path / "out.json")["by_id"], "hangs")
    assert hangs["status"] == "error"
    assert "timed out after 1.0s" in hangs["diagnostic"]
    assert leftovers(marker) == []
    assert_clean_exit(done.stderr)


@pytest.mark.parametrize("transport", ["local", "ssh-agent"])
def test_a_daemon_that_clears_its_environment_ends_with_the_run(
    transport, sshd, marker, cli, write_spec
):
    """Leaving the session and clearing the environment leaves no sign of the task; the
    process is still a child of the run's subreaper (matrix, the agent), killed at its end."""
    checks = shells(UNMARKED, marker)
    write_spec(spec(transport, sshd, checks))
    done = cli("run", "spec.yaml", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(marker) == []
    assert_clean_exit(done.stderr)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_to_matrix_mid_run_leaves_nothing(transport, sshd, marker, cli, write_spec):
    checks = {
        "hangs": shell(
            f"(setsid sh -c 'trap \"\" TERM; sleep {marker}1' >/dev/null 2>&1 &); "
            f"sleep {marker}2 & sleep {marker}3"
        ),
    }
    write_spec(spec(transport, sshd, checks))
    proc = cli.popen("run", "spec.yaml")
    try:
        deadline = time.monotonic() + 30
        while len(sleeping(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sleeping(marker)) == 3, "the probe never started"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    assert leftovers(marker) == []
    assert_clean_exit(stderr)


def agents() -> dict[str, list[int]]:
    """Pids of the host agents and of their keepers running now (sshd is on this machine)."""
    found: dict[str, list[int]] = {"agent": [], "keeper": []}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(b"matrix-agent-") for arg in cmdline):
            found["agent"].append(int(entry.name))
        elif b"matrix-keeper" in cmdline:
            found["keeper"].append(int(entry.name))
    return found


@pytest.mark.parametrize("how", ["its pid", "its process group", "every matrix-agent"])
def test_killing_the_hosts_agent_mid_run_leaves_nothing_of_its_tasks(
    how, sshd, marker, cli, write_spec, report, tmp_path
):
    """The tasks error (their host's agent is gone); their processes, the ones that left
    their session or ignore SIGTERM included, end with it: its keeper sweeps them."""
    checks = {
        "children": shell(f"sleep {marker}1 & sleep {marker}2"),
        "daemon": shell(
            f"(setsid sh -c 'trap \"\" TERM; sleep {marker}3' >/dev/null 2>&1 &); sleep {marker}4"
        ),
        "ignores-term": shell(f"trap '' TERM HUP; sleep {marker}5"),
    }
    write_spec(spec("ssh-agent", sshd, checks))
    before = agents()
    proc = cli.popen("run", "spec.yaml", "--json", "out.json")
    try:
        deadline = time.monotonic() + 30
        while len(sleeping(marker)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sleeping(marker)) == 5, "the probes never started"
        [agent] = set(agents()["agent"]) - set(before["agent"])
        [keeper] = set(agents()["keeper"]) - set(before["keeper"])
        if how == "its process group":
            os.killpg(os.getpgid(agent), signal.SIGKILL)
        elif how == "its pid":
            os.kill(agent, signal.SIGKILL)
        else:  # as `pkill -KILL -f matrix-agent-` does: the keeper's command line differs
            for pid in set(agents()["agent"]) - set(before["agent"]):
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert leftovers(marker) == []
    assert not Path(f"/proc/{keeper}").exists()  # the keeper swept, then went too
    results = report(tmp_path / "out.json")["by_id"]
    for check_id in checks:
        result = task(results, check_id)
        assert result["status"] == "error", result
        assert "lost the SSH connection" in result["reason"], result
    assert proc.returncode == 1, stdout + stderr
    assert_clean_exit(stderr)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_what_a_task_left_is_gone_when_the_task_returns(transport, sshd, marker):
    """Per task, not only at the end of the run: each run() returns with its strays dead."""

    async def go() -> dict[str, list[str]]:
        left = {}
        async with TargetPool() as pool:  # which makes this process a subreaper meanwhile
            target = pool.get(ref(transport, sshd))
            for key, line in LEFT_BEHIND.items():
                done = await target.run(["sh", "-c", line.format(m=marker)])
                assert done.stdout == b"started\n", done
                await anyio.sleep(0.2)  # a stray that survived would have started by now
                left[key] = sleeping(marker)
        return left

    assert anyio.run(go) == {key: [] for key in LEFT_BEHIND}


def ref(transport: str, sshd: SshServer) -> TargetRef:
    """Where `transport` runs: this machine, or the sshd host with or without the agent."""
    if transport == "local":
        return LOCAL
    options = TargetSpec(
        hosts=sshd.hosts,
        user="root",
        key=str(sshd.client_key),
        known_hosts=str(sshd.known_hosts),
        agent=transport == "ssh-agent",
    )
    return TargetRef("gpu", sshd.hosts[0], "gpu", "ssh", options)


def test_an_embedding_process_keeps_no_zombie_and_no_orphan(run_spec, marker):
    """In-process (the engine inside another program): orphans were adopted by this process
    for the run; each is killed and reaped, and the setting is given back."""
    checks = shells({**LEFT_BEHIND, **UNMARKED}, marker)
    before = zombies()
    run = run_spec(spec("local", None, checks))
    assert {r.status.value for r in run.results} == {"pass"}
    assert leftovers(marker) == []
    assert zombies() <= before
    assert not subreaper_set()


def zombies() -> set[int]:
    """This process's zombie children."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def subreaper_set() -> bool:
    import ctypes

    value = ctypes.c_int()
    ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return bool(value.value)


def test_no_agent_env_never_shows_on_the_hosts_command_line(tmp_path):
    """Without the agent the task's environment travels on stdin: the command line the host
    runs (which its process list shows) has none of it. The host logs each command it gets."""
    log = tmp_path / "commands.log"
    server = SshServer(
        tmp_path / "sshd",
        1,
        extra_config=f'ForceCommand printf "%s\\n" "$SSH_ORIGINAL_COMMAND" >> {log}; '
        'eval "$SSH_ORIGINAL_COMMAND"',
    )
    secret = f"s3cret-{secrets.token_hex(6)}"
    env = {"TOKEN": secret, "QUOTED": "it's a\nnew $line"}

    async def go() -> bytes:
        async with TargetPool() as pool:
            target = pool.get(ref("ssh-no-agent", server))
            script = 'printf "%s|" "$TOKEN" "$QUOTED"; cat'
            return (await target.run(["sh", "-c", script], input=b"input", env=env)).stdout

    try:
        stdout = anyio.run(go)
    finally:
        server.stop()
    assert stdout == f"{secret}|it's a\nnew $line|input".encode()
    assert "matrix-pgid" in log.read_text()
    assert secret not in log.read_text()
