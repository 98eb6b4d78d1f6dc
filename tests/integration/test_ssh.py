"""Probes on SSH hosts, against a real OpenSSH sshd on loopback (one port per "host")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import asyncssh
import pytest
from sshd import SshServer, free_ports

from matrix.results import Status


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd"), 4)
    yield server
    server.stop()


def spec(targets: str, checks: str) -> str:
    return (
        "version: 1\nname: ssh\ntargets:\n"
        + textwrap.indent(targets, "  ")
        + "\nphases:\n  - id: p\n    checks:\n"
        + textwrap.indent(textwrap.dedent(checks), "      ")
    )


def remote(sshd: SshServer, command: str, port: int | None = None) -> str:
    """Run a command over SSH directly (not through matrix), e.g. ps for leftovers."""

    async def go() -> str:
        async with asyncssh.connect(
            "127.0.0.1",
            port or sshd.ports[0],
            username="root",
            client_keys=[str(sshd.client_key)],
            known_hosts=str(sshd.known_hosts),
        ) as conn:
            return (await conn.run(command, check=False)).stdout

    return asyncio.run(go())


def test_probes_run_unchanged_on_remote_hosts(sshd, run_spec, by_id, monkeypatch):
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:2]),
            """
            - id: echo
              on: gpu
              probe: {kind: command, argv: [sh, -c, 'echo "$0 on $(hostname)"', hi]}
              expect: {stdout: {match: "^hi on "}}
            - id: stdin
              on: gpu
              probe: {kind: command, argv: [cat], stdin: "piped\\n"}
              expect: {stdout: piped}
            - id: shell-quoted
              on: gpu
              probe: {kind: command, shell: "printf %s {{ vars.word }}"}
              expect: {stdout: "a b; echo pwned"}
            - id: exit-3
              on: gpu
              probe: {kind: command, shell: "exit 3"}
            - id: missing
              on: gpu
              probe: {kind: command, argv: [no-such-program-here]}
            - id: hosts-file
              on: gpu
              probe: {kind: file, path: /etc/hosts}
            - id: disk
              on: gpu
              probe: {kind: disk, path: /}
              expect: {free_gb: {gt: 0}}
            - id: python
              on: gpu
              probe: {kind: python, packages: [pydantic]}
              expect: {version: {version: ">=3.8"}}
            """,
        ).replace("name: ssh\n", "name: ssh\nvars: {word: 'a b; echo pwned'}\n")
    )
    results = by_id(run)
    for host in sshd.hosts[:2]:
        assert results[f"ssh-connect@{host}"].status is Status.passed
        assert results[f"ssh-connect@{host}"].facts["host_key"].startswith("SHA256:")
        assert results[f"ssh-connect@{host}"].facts["agent"] is True
        for ok in ("echo", "stdin", "shell-quoted", "hosts-file", "disk", "python"):
            assert results[f"{ok}@{host}"].status is Status.passed, results[f"{ok}@{host}"]
        assert results[f"exit-3@{host}"].status is Status.failed
        assert results[f"exit-3@{host}"].facts["exit_code"] == 3
        missing = results[f"missing@{host}"]
        assert missing.status is Status.error  # as on the local target: nothing ran
        assert f"cannot start no-such-program-here on root@{host}" in missing.reason
    assert run.warnings == []


def test_auth_failure_is_one_connect_error_and_blocks_the_hosts_tasks(sshd, run_spec, by_id):
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], key=str(sshd.other_key)),
            """
            - {id: a, on: gpu, probe: {kind: command, argv: ["true"]}}
            - {id: b, on: gpu, probe: {kind: command, argv: ["true"]}}
            """,
        )
    )
    results = by_id(run)
    host = sshd.hosts[0]
    connect = results[f"ssh-connect@{host}"]
    assert connect.status is Status.error
    assert connect.diagnostic.startswith(
        f"SSH failed: auth rejected for root@127.0.0.1:{sshd.ports[0]} ("
    )
    assert "key (chmod 600)" in connect.fix
    for check in ("a", "b"):
        assert results[f"{check}@{host}"].status is Status.skipped
        assert results[f"{check}@{host}"].why == f"blocked by ssh-connect@{host}"


def test_changed_host_key_is_an_error_naming_the_host(sshd, run_spec, by_id, tmp_path):
    wrong = tmp_path / "known_hosts"
    other = (sshd.root / "other_key.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.ports[0]} {other[0]} {other[1]}\n")
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], known_hosts=str(wrong)),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    connect = by_id(run)[f"ssh-connect@{sshd.hosts[0]}"]
    assert connect.status is Status.error
    assert f"host key of root@127.0.0.1:{sshd.ports[0]} is not trusted" in connect.diagnostic


def test_insecure_skips_verification_and_warns_in_the_run(sshd, run_spec, by_id, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], known_hosts=str(empty), insecure=True),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    assert by_id(run)[f"a@{sshd.hosts[0]}"].status is Status.passed
    assert run.warnings and "NOT verified for target group 'gpu'" in run.warnings[0]


def test_insecure_warning_reaches_the_console_and_json(sshd, cli, write_spec, report, tmp_path):
    write_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], insecure=True),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    reports = ["--json", "out.json", "--junit", "out.xml", "--markdown", "out.md"]
    done = cli("run", "spec.yaml", *reports, "--otel", "trace.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "⚠️  host keys are NOT verified for target group 'gpu'" in done.stdout
    assert "NOT verified" in report(tmp_path / "out.json")["warnings"][0]
    assert "NOT verified" in (tmp_path / "out.md").read_text()
    suite = ET.parse(tmp_path / "out.xml").getroot().find("testsuite")
    warning = suite.find("properties/property[@name='matrix.warning.1']")
    assert "NOT verified" in warning.get("value")
    assert "NOT verified" in suite.find("system-err").text
    trace = json.loads((tmp_path / "trace.json").read_text())
    spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
    root = next(s for s in spans if "parentSpanId" not in s or not s["parentSpanId"])
    warnings = next(a for a in root["attributes"] if a["key"] == "matrix.warnings")
    assert "NOT verified" in warnings["value"]["arrayValue"]["values"][0]["stringValue"]


def test_connection_refused_names_the_host(run_spec, by_id, sshd):
    port = free_ports(1)[0]  # nothing listens there
    closed = f"127.0.0.1:{port}"
    run = run_spec(
        spec(
            sshd.target(hosts=[closed], connect_timeout=3),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    connect = by_id(run)[f"ssh-connect@{closed}"]
    assert connect.status is Status.error
    assert f"connection refused by root@127.0.0.1:{port}" in connect.diagnostic


def test_jump_host_hop(sshd, run_spec, by_id):
    jump = f"root@127.0.0.1:{sshd.ports[1]}"
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[2:3], jump=[jump]),
            "- {id: a, on: gpu, probe: {kind: command, argv: [echo, hop]}, expect: {stdout: hop}}",
        )
    )
    assert by_id(run)[f"a@{sshd.hosts[2]}"].status is Status.passed, by_id(run)


def test_more_tasks_than_sessions_queue_instead_of_failing(tmp_path, run_spec, by_id):
    server = SshServer(tmp_path / "tight", 1, max_sessions=2)
    try:
        checks = "".join(
            f"- {{id: c{i}, on: gpu, probe: {{kind: command, argv: [sleep, '0.05']}}}}\n"
            for i in range(30)
        )
        # a session per task (no agent): the channels themselves must queue
        run = run_spec(spec(server.target(max_sessions=2, agent=False), checks))
        statuses = {r.task_id: r.status for r in run.results}
        assert all(status is Status.passed for status in statuses.values()), statuses
        assert len(statuses) == 31  # 30 checks + the connection
    finally:
        server.stop()


@pytest.mark.parametrize("agent", [True, False])
def test_remote_timeout_leaves_no_process_behind(sshd, run_spec, by_id, agent):
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], agent=agent),
            """
            - id: hangs
              on: gpu
              timeout: 0.5s
              probe: {kind: command, shell: "sleep 317.1 & sleep 317.2"}
            """,
        )
    )
    assert by_id(run)[f"hangs@{sshd.hosts[0]}"].status is Status.error
    deadline = time.monotonic() + 5
    while (left := remote(sshd, "pgrep -af 'sleep 317' | grep -v pgrep || true").strip()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert left == ""


def test_host_killed_mid_run_errors_its_task_and_others_go_on(tmp_path, run_spec, by_id, sshd):
    doomed = SshServer(tmp_path / "doomed", 1)
    threading.Timer(1.0, doomed.kill).start()
    try:
        run = run_spec(
            spec(
                doomed.target("doomed") + "\n" + sshd.target(hosts=sshd.hosts[:1]),
                """
                - {id: slow, on: doomed, timeout: 20s, probe: {kind: command, argv: [sleep, "318"]}}
                - {id: fine, on: gpu, probe: {kind: command, argv: [sh, -c, "sleep 1.5; echo ok"]}}
                """,
            )
        )
    finally:
        doomed.stop()
        remote(sshd, "pkill -x -f 'sleep 318' || true")
    results = by_id(run)
    slow = results[f"slow@{doomed.hosts[0]}"]
    assert slow.status is Status.error
    assert "lost the SSH connection" in slow.reason
    assert slow.duration < 10
    assert results[f"fine@{sshd.hosts[0]}"].status is Status.passed


def test_ssh_config_aliases_supply_host_port_user_and_key(
    sshd, run_spec, by_id, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host trainer\n  HostName 127.0.0.1\n  Port {sshd.ports[3]}\n  User root\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    (home / ".ssh" / "known_hosts").write_text(
        sshd.known_hosts.read_text().replace(
            f"[127.0.0.1]:{sshd.ports[3]}", f"[trainer]:{sshd.ports[3]}"
        )
        + sshd.known_hosts.read_text()
    )
    monkeypatch.setenv("HOME", str(home))
    run = run_spec(
        spec(
            "gpu: {hosts: [trainer]}",
            "- {id: a, on: gpu, probe: {kind: command, argv: [echo, hi]}, expect: {stdout: hi}}",
        )
    )
    assert by_id(run)["a@trainer"].status is Status.passed, by_id(run)["ssh-connect@trainer"].reason


def test_target_flag_points_a_spec_at_real_hosts(sshd, cli, write_spec, report, tmp_path):
    write_spec(
        spec(
            sshd.target(hosts=["placeholder"]),
            "- {id: a, on: gpu, probe: {kind: command, argv: [echo, hi]}, expect: {stdout: hi}}",
        )
    )
    hosts = ",".join(sshd.hosts[:2])
    done = cli(
        "run",
        "spec.yaml",
        "--target",
        f"gpu={hosts}",
        "--limit",
        f"*:{sshd.ports[1]}",
        "--json",
        "out.json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["task_id"]: r for r in report(tmp_path / "out.json")["results"]}
    assert results[f"a@{sshd.hosts[1]}"]["status"] == "pass"
    assert results[f"a@{sshd.hosts[0]}"]["reason"] == "filtered out by --limit"


def connect_diagnostic(sshd, run_spec, by_id, **options) -> str:
    """The ssh-connect row's diagnostic for the first host, with these target options."""
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], **options),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    return by_id(run)[f"ssh-connect@{sshd.hosts[0]}"].diagnostic


def test_missing_key_file_is_named(sshd, run_spec, by_id, tmp_path):
    missing = tmp_path / "nope.pem"
    diagnostic = connect_diagnostic(sshd, run_spec, by_id, key=str(missing))
    assert f"cannot read {missing} for root@127.0.0.1:{sshd.ports[0]}: no such file" in diagnostic


def test_missing_known_hosts_file_is_named_with_what_to_do(sshd, run_spec, by_id, tmp_path):
    missing = tmp_path / "known_hosts"
    diagnostic = connect_diagnostic(sshd, run_spec, by_id, known_hosts=str(missing))
    assert f"known_hosts file {missing} for root@127.0.0.1:{sshd.ports[0]} does not exist" in (
        diagnostic
    )
    assert f"ssh-keyscan -p {sshd.ports[0]} 127.0.0.1 >> {missing}" in diagnostic
    assert "`known_hosts:`" in diagnostic
    assert "key:" not in diagnostic


def test_missing_default_known_hosts_is_named(sshd, run_spec, by_id, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh at all
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1]).replace(f', known_hosts: "{sshd.known_hosts}"', ""),
            "- {id: a, on: gpu, probe: {kind: command, argv: ['true']}}",
        )
    )
    diagnostic = by_id(run)[f"ssh-connect@{sshd.hosts[0]}"].diagnostic
    assert f"known_hosts file {tmp_path}/.ssh/known_hosts for root@127.0.0.1" in diagnostic


@pytest.mark.parametrize("agent", [True, False])
def test_exit_codes_and_signals_come_back_as_on_the_local_target(sshd, run_spec, by_id, agent):
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], agent=agent),
            """
            - {id: exit-3, on: gpu, probe: {kind: command, shell: "exit 3"}}
            - {id: killed, on: gpu, probe: {kind: command, shell: "kill -TERM $$"}}
            """,
        )
    )
    results = by_id(run)
    assert results[f"exit-3@{sshd.hosts[0]}"].facts["exit_code"] == 3
    assert results[f"killed@{sshd.hosts[0]}"].facts["exit_code"] == -15


def test_host_without_the_agents_python_falls_back_to_a_session_per_task(sshd, run_spec, by_id):
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], python="/no/such/python3"),
            "- {id: echo, on: gpu, probe: {kind: command, argv: [echo, hi]}, expect: {stdout: hi}}",
        )
    )
    results = by_id(run)
    connect = results[f"ssh-connect@{sshd.hosts[0]}"]
    assert connect.facts["agent"] is False
    assert "/no/such/python3" in connect.facts["agent_problem"]
    assert "its own SSH session" in connect.facts["agent_problem"]
    assert results[f"echo@{sshd.hosts[0]}"].status is Status.passed


def test_a_hung_python_probe_is_killed_and_the_agent_leaves_nothing(sshd, run_spec, by_id):
    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    try:
        run = run_spec(
            spec(
                sshd.target(hosts=sshd.hosts[:1]),
                f"- {{id: hangs, on: gpu, timeout: 1s, probe: {{kind: http, url: '{url}'}}}}",
            )
        )
    finally:
        silent.close()
    hung = by_id(run)[f"hangs@{sshd.hosts[0]}"]
    assert hung.status is Status.error
    assert "timed out after 1.0s" in hung.reason
    agent = "exec(sys.stdin.buffer.read"  # the agent's and its forks' command line
    deadline = time.monotonic() + 5
    while agent in (left := pgrep(agent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agent not in left


def pgrep(text: str) -> str:
    """Command lines of this machine's processes holding `text` (the sshd "hosts" are here)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in line:
                found.append(line)
    return "\n".join(found)


def test_torch_probes_run_unchanged_on_a_remote_host(sshd, run_spec, by_id, tmp_path):
    pytest.importorskip("torch")
    volume = tmp_path / "volume"
    volume.mkdir()
    tiny = "d_model: 16, layers: 1, heads: 2, seq_len: 8, vocab: 32, batch_size: 4"
    run = run_spec(
        spec(
            sshd.target(hosts=sshd.hosts[:1], python=sys.executable),
            f"""
            - {{id: env, on: gpu, probe: {{kind: torch.env}}, expect: {{cuda: false}}}}
            - id: train
              on: gpu
              probe: {{kind: torch.train, device: cpu, {tiny}}}
            - id: resume
              on: gpu
              probe: {{kind: torch.checkpoint, device: cpu, dir: "{volume}", {tiny}}}
            """,
        )
    )
    results = by_id(run)
    host = sshd.hosts[0]
    for check_id in ("env", "train", "resume"):
        assert results[f"{check_id}@{host}"].status is Status.passed, results[f"{check_id}@{host}"]
    assert results[f"train@{host}"].facts["loss_decreased"] is True
    assert results[f"resume@{host}"].facts["resumed_exactly"] is True
    assert list(volume.iterdir()) == []  # the checkpoint was removed from the host
