"""`via: slurm` through a real Slurm cluster on loopback: slurmctld and three `slurmd -N`
nodes (tests/integration/slurm.py). Checks run on the nodes through srun; a drained node is
reported as such; `--drain` and `--resume` change nodes' states in Slurm itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from slurm import HEALTHY_ROW, SlurmCluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), 3, gpus=2)
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def fresh(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with every node idle and leaves no job behind: matrix's steps end
    with its run."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    yield
    left = cluster.run("squeue", "--noheader", "--format=%i %j %T").stdout.split("\n")
    deadline = time.monotonic() + 10  # a finished step is COMPLETING for a moment
    while [line for line in left if line.strip()] and time.monotonic() < deadline:
        time.sleep(0.2)
        left = cluster.run("squeue", "--noheader", "--format=%i %j %T").stdout.split("\n")
    for name in cluster.names:
        if not cluster.sinfo()[name][0].startswith("idle"):
            cluster.resume(name)
    cluster.wait_idle(cluster.names)
    assert [line for line in left if line.strip()] == [], "matrix left jobs in Slurm"


SPEC = """\
version: 1
name: slurm
vars:
  marks: {marks}
targets:
  cluster: {{via: slurm, partition: {partition}{extra}}}
phases:
  - id: nodes
    checks:
      - id: where
        on: cluster
        probe: {{kind: command, shell: 'echo "$SLURMD_NODENAME $SLURM_JOB_ID"'}}
{healthy}"""


def spec(tmp_path: Path, extra: str = "", partition: str = "debug") -> Path:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(marks=marks, extra=extra, partition=partition, healthy=HEALTHY_ROW))
    return path


def results(tmp_path: Path) -> dict[tuple[str, str], dict]:
    report = json.loads((tmp_path / "out.json").read_text())
    return {(r["check_id"], r["host"]): r for r in report["results"]}


def test_checks_fan_out_to_every_node_through_srun(cli, tmp_path, cluster) -> None:
    spec(tmp_path)

    done = cli("run", "spec.yaml", "--json", "out.json")

    assert done.returncode == 0, done.stdout + done.stderr
    found = results(tmp_path)
    job = found[("slurm-connect", "n1")]["facts"]["job"]
    assert job.isdigit()
    for node in cluster.names:
        gate = found[("slurm-connect", node)]
        assert gate["status"] == "pass"
        assert 0 < gate["facts"].pop("step_wait") < 10  # no prolog: the step starts at once
        # the job's limit covers two 60 s checks and the gate run out, in whole minutes
        assert gate["facts"] | {"host": node} == {
            "host": node, "via": "slurm", "node": node, "partition": "debug", "job": job,
            "time_limit": "14", "state": "idle", "agent": True, "agent_problem": None,
        }  # fmt: skip
        said = found[("where", node)]["facts"]["stdout"].split()
        assert said == [node, job]  # run by slurmd on that node, in the run's one job
        assert found[("healthy", node)]["status"] == "pass"


def test_the_groups_gres_go_to_its_job_and_every_step_sees_them(cli, tmp_path, cluster) -> None:
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nname: gres\ntargets:\n"
        "  bare: {via: slurm, partition: debug, nodes: n1}\n"
        "  gpus: {via: slurm, partition: debug, nodes: 'n[2-3]', gres: 'gpu:2'}\n"
        "phases:\n  - id: p\n    checks:\n"
        + "".join(
            f"      - {{id: seen-{group}, on: {group}, probe: {{kind: command,\n"
            "         shell: 'echo \"${SLURM_GPUS_ON_NODE:-0}\"'}}\n"
            for group in ("bare", "gpus")
        )
    )

    done = cli("run", "spec.yaml", "--json", "out.json")

    assert done.returncode == 0, done.stdout + done.stderr
    seen = {
        host: row["facts"]["stdout"].strip()
        for (check, host), row in results(tmp_path).items()
        if check.startswith("seen")
    }
    assert seen == {"n1": "0", "n2": "2", "n3": "2"}


def test_a_node_other_jobs_hold_is_named_and_the_job_holds_the_free_ones(
    cli, tmp_path, cluster
) -> None:
    other = hold(cluster, "n3")
    other_job = other.job
    try:
        spec(tmp_path, ", connect_timeout: 2", partition="whole")
        cli("run", "spec.yaml", "--json", "out.json")
    finally:
        release(other)

    found = results(tmp_path)
    assert [found[("slurm-connect", node)]["status"] for node in cluster.names] == [
        "pass", "pass", "error",
    ]  # fmt: skip
    assert found[("slurm-connect", "n3")]["reason"].startswith(
        f"node n3 is allocated to job {other_job} and Slurm gave no job on n1, n2, n3 within "
        "2s: Unable to allocate resources"
    )
    assert found[("healthy", "n1")]["status"] == "pass"


class Held(NamedTuple):
    """Another user's job holding a node: its salloc and its job id."""

    salloc: subprocess.Popen[bytes]
    job: str


def hold(cluster: SlurmCluster, node: str) -> Held:
    """Another job holding `node` whole (partition `whole`) until its input ends."""
    other = subprocess.Popen(
        ["salloc", "--partition=whole", f"--nodelist={node}", "--immediate=10", "cat"],
        env=cluster.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert other.stderr is not None
    granted = other.stderr.readline()
    assert b"Granted job allocation" in granted, granted
    return Held(other, granted.split()[-1].decode())


def release(other: Held) -> None:
    assert other.salloc.stdin is not None
    other.salloc.stdin.close()
    other.salloc.wait()


def test_ctrl_c_while_slurm_has_not_given_the_job_yet_leaves_no_job(cli, tmp_path, cluster) -> None:
    other = hold(cluster, "n3")
    try:
        spec(tmp_path, ", nodes: n3, connect_timeout: 60", partition="whole")
        run = cli.popen("run", "spec.yaml", "--json", "out.json")
        deadline = time.monotonic() + 20
        while "matrix" not in cluster.run("squeue", "--noheader", "--format=%j").stdout:
            assert time.monotonic() < deadline and run.poll() is None, "matrix asked for no job"
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=30)
        left = cluster.run("squeue", "--noheader", "--format=%j %T").stdout.split()
    finally:
        release(other)

    assert run.returncode == 130, run.returncode
    assert "matrix" not in left  # salloc cancelled its pending job as matrix stopped
    assert results(tmp_path)[("healthy", "n3")]["status"] == "skip"


def test_a_drained_node_is_named_with_slurms_reason_and_its_checks_blocked(
    cli, tmp_path, cluster
) -> None:
    spec(tmp_path)
    cluster.drain("n2", "bad GPU 3 (ticket 812)")

    done = cli("run", "spec.yaml", "--json", "out.json", "--drain")

    assert done.returncode == 1
    found = results(tmp_path)
    assert found[("slurm-connect", "n2")]["reason"] == (
        "node n2 is drained in Slurm (reason: bad GPU 3 (ticket 812)) — it takes no job; once "
        "it is fixed, return it with `scontrol update NodeName=n2 State=RESUME`"
    )
    assert found[("healthy", "n2")]["status"] == "skip"
    assert found[("healthy", "n1")]["status"] == "pass"
    assert cluster.sinfo()["n2"] == ("drained", "bad GPU 3 (ticket 812)")  # not matrix's


def test_drain_takes_out_a_failing_node_and_only_a_whole_run_on_it_resumes_it(
    cli, tmp_path, cluster
) -> None:
    path = spec(tmp_path)
    (tmp_path / "marks" / "bad-n3").touch()

    done = cli("run", path.name, "--json", "out.json", "--drain")

    assert done.returncode == 1
    reason = "matrix[slurm] healthy: n3 carries the bad mark"
    assert cluster.sinfo()["n3"] == ("drained", reason)
    assert {n: s for n, (s, _) in cluster.sinfo().items()} == {
        "n1": "idle", "n2": "idle", "n3": "drained",
    }  # fmt: skip
    assert f"Slurm: drained n3: {reason}" in done.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert f"Slurm: drained n3: {reason}" in report["warnings"]

    # A drained node takes no job: the spec runs on the node itself (a prolog, a health check
    # program), where `local` stands for it. Still bad: it stays drained.
    node_local = tmp_path / "node.yaml"
    node_local.write_text(
        path.read_text()
        .replace("on: cluster", "on: local")
        .replace("{{ target.host }}", "{{ env.SLURMD_NODENAME }}")
        .replace("- id: where", "- id: where\n        when: 'false'")
    )
    on_n3 = {"SLURMD_NODENAME": "n3"}
    done = cli("run", node_local.name, "--resume", env=on_n3)
    assert done.returncode == 1 and cluster.sinfo()["n3"] == ("drained", reason)

    (tmp_path / "marks" / "bad-n3").unlink()
    done = cli("run", node_local.name, "--resume", "--check", "healthy", env=on_n3)
    assert done.returncode == 0
    assert "Slurm: n3 stays drained: a run of part of the spec cannot clear it" in done.stdout
    assert cluster.sinfo()["n3"][0] == "drained"

    done = cli("run", node_local.name, "--resume", env=on_n3)
    assert done.returncode == 0, done.stdout
    assert f"Slurm: resumed n3: it passes every critical check now (was: {reason})" in done.stdout
    assert cluster.sinfo()["n3"][0].startswith("idle")  # "idle*" until slurmd next answers


def test_a_timeout_kills_the_check_on_the_node(cli, tmp_path, cluster) -> None:
    marker = f"matrix-slurm-sleep-{os.getpid()}"
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nname: t\ntargets:\n  cluster: {via: slurm, nodes: 'n[1-2]'}\n"
        "phases:\n  - id: p\n    checks:\n"
        f"      - {{id: slow, on: cluster, timeout: 2s, probe: {{kind: command, "
        f"argv: [bash, -c, 'exec -a {marker} sleep 60']}}}}\n"
    )

    started = time.monotonic()
    done = cli("run", "spec.yaml", "--json", "out.json")

    assert done.returncode == 1 and time.monotonic() - started < 30
    found = results(tmp_path)
    for node in ("n1", "n2"):
        assert found[("slow", node)]["status"] == "error"
        assert found[("slow", node)]["duration"] >= 2  # it ran on the node until the timeout
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline_has(p, marker)]


def _cmdline_has(proc: Path, marker: str) -> bool:
    try:
        return marker.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "{via: slurm, partition: nope}",
            "spec.yaml:4:36: targets.cluster.partition: Slurm lists no node in partition "
            "'nope': check the name (`sinfo --summarize` lists the partitions) or name the "
            "nodes with `nodes:`",
        ),
        (
            "{via: slurm, partition: debug, constraint: gpu}",
            "spec.yaml:4:36: targets.cluster.partition: Slurm lists no node in partition "
            "'debug' with features 'gpu': check the name (`sinfo --summarize` lists the "
            "partitions) or name the nodes with `nodes:`",
        ),
        (
            "{via: slurm, nodes: 'n[1-3]', user: root}",
            "spec.yaml:4:42: targets.cluster.user: `user` is an SSH option; a `via: slurm` "
            "group reaches its nodes through srun",
        ),
    ],
)
def test_a_group_slurm_cannot_list_is_a_spec_error_at_its_key(
    cli, tmp_path, cluster, target, message
) -> None:
    (tmp_path / "spec.yaml").write_text(
        f"version: 1\nname: t\ntargets:\n  cluster: {target}\n"
        "phases:\n  - id: p\n    checks:\n"
        "      - {id: c, on: cluster, probe: {kind: command, argv: ['true']}}\n"
    )

    done = cli("validate", "spec.yaml")

    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == message


def test_a_constraint_picks_the_nodes_with_those_features(cli, tmp_path, cluster) -> None:
    spec(tmp_path, extra=", constraint: cpu")

    done = cli("list", "spec.yaml")

    assert done.returncode == 0, done.stderr
    assert "n1,n2,n3" in done.stdout


REPO = Path(__file__).resolve().parents[2]
WRAPPERS = ("matrix-node.sh", "prolog.sh", "epilog.sh", "healthcheck.sh")


def install_wrappers(tmp_path: Path, *settings: str) -> Path:
    """examples/slurm's wrappers, unmodified, in a folder of their own, with a
    matrix-prolog.conf that runs this checkout's matrix on the shipped node.yaml; each node's
    scratch is tmp_path/scratch-NODE (the test makes or removes it)."""
    wrappers = tmp_path / "etc"
    wrappers.mkdir()
    for name in WRAPPERS:
        (wrappers / name).write_bytes((REPO / "examples" / "slurm" / name).read_bytes())
        (wrappers / name).chmod(0o755)
    (wrappers / "matrix-prolog.conf").write_text(
        f'MATRIX="{sys.executable} -m matrix"\n'
        f"SPEC={REPO}/examples/slurm/node.yaml\n"
        f"REPORTS={tmp_path}/reports\n"
        f'ARGS="--var gpus=false --var scratch={tmp_path}/scratch-$SLURMD_NODENAME"\n'
        f"export PYTHONPATH={REPO}\n" + "".join(f"{line}\n" for line in settings)
    )
    return wrappers


def test_the_prolog_drains_a_failing_node_before_a_job_and_the_epilog_one_a_job_broke(
    tmp_path, cluster
) -> None:
    """prolog.sh and epilog.sh, unmodified, as slurmd runs them around each job, with the
    shipped node.yaml; its scratch var points at a folder n2 lacks."""
    wrappers = install_wrappers(tmp_path)
    (tmp_path / "scratch-n1").mkdir()
    slurm = SlurmCluster(
        tmp_path / "slurm", 2, f"Prolog={wrappers}/prolog.sh\nEpilog={wrappers}/epilog.sh\n"
    )
    try:
        first = slurm.job("n1")
        second = slurm.job("n2")
        after_prolog = slurm.sinfo()
        broke = slurm.job("n1", "rmdir", f"{tmp_path}/scratch-n1")  # the job breaks its node
        drained = wait_for(lambda: slurm.sinfo()["n1"][0].startswith("drain"))
        after_epilog = slurm.sinfo()
    finally:
        slurm.stop()

    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "reports" / "n1.prolog.json").read_text())["verdict"] == "READY"
    assert second.returncode != 0 and "Job prolog failed" in second.stderr
    state, reason = after_prolog["n2"]
    assert state.startswith("drain") and reason.startswith(
        "matrix[slurm-node] scratch-space: No such "
    )
    assert "drain" not in after_prolog["n1"][0] and after_prolog["n1"][1] == "none"
    assert broke.returncode == 0 and drained, after_epilog
    assert after_epilog["n1"][1].startswith("matrix[slurm-node] scratch-space: No such directory")
    log = (tmp_path / "reports" / "n1.log").read_text()
    assert "epilog (job " in log and "BLOCKED: n1 is drained" in log


@pytest.mark.timeout(120)
def test_the_health_check_says_it_cannot_act_without_slurm_conf_and_resumes_only_its_own(
    tmp_path, cluster
) -> None:
    """healthcheck.sh as slurmd runs it (HealthCheckProgram: no SLURM_CONF, no PATH): told
    where slurm.conf is, it drains a failing node and resumes it once fixed; a drain of
    another spec stays."""
    wrappers = install_wrappers(tmp_path)
    scratch = tmp_path / "scratch-n1"
    scratch.mkdir()
    slurm = SlurmCluster(
        tmp_path / "slurm", 1,
        f"HealthCheckProgram={wrappers}/healthcheck.sh\nHealthCheckInterval=2\n",
    )  # fmt: skip
    log = tmp_path / "reports" / "n1.log"
    report = tmp_path / "reports" / "n1.healthcheck.json"
    try:
        scratch.rmdir()
        unacted = wait_for(lambda: log.exists() and "could not drain n1" in log.read_text())
        state_unacted = slurm.sinfo()["n1"]
        with (wrappers / "matrix-prolog.conf").open("a") as conf:
            conf.write(f"SLURM_CONF={slurm.conf}\n")
        drained = wait_for(lambda: slurm.sinfo()["n1"][0] == "drained")
        reason = slurm.sinfo()["n1"][1]
        scratch.mkdir()
        resumed = wait_for(lambda: slurm.sinfo()["n1"][0].startswith("idle"))
        slurm.drain("n1", "matrix[fleet] ib-bandwidth: n1 at 12 GB/s, need 180")
        runs = report.stat().st_mtime_ns
        wait_for(lambda: report.stat().st_mtime_ns != runs)  # two more health checks
        runs = report.stat().st_mtime_ns
        wait_for(lambda: report.stat().st_mtime_ns != runs)
        kept = slurm.sinfo()["n1"]
    finally:
        slurm.stop()

    assert unacted and state_unacted[0] == "idle", log.read_text()
    said = log.read_text()  # matrix's own stderr, and the wrapper's line
    assert "matrix: Slurm: could not drain n1: cannot read the state of n1: sinfo: " in said
    assert "healthcheck: a drain or resume of n1 failed (above): check SLURM_CONF" in said
    assert drained and reason.startswith("matrix[slurm-node] scratch-space: No such directory")
    assert resumed
    assert kept == ("drained", "matrix[fleet] ib-bandwidth: n1 at 12 GB/s, need 180")
    assert "n1 stays drained: matrix[fleet] drained it" in " ".join(
        json.loads(report.read_text())["warnings"]
    )


def test_a_fact_that_differs_on_one_node_fails_the_consistency_row_naming_it(
    cli, tmp_path, cluster
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for node, version in (("n1", "2.5.1"), ("n2", "2.5.1"), ("n3", "2.4.0")):
        (versions / node).write_text(version)
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nname: same\ntargets:\n  cluster: {via: slurm, partition: debug}\n"
        "phases:\n  - id: p\n    checks:\n"
        "      - id: torch\n        on: cluster\n"
        f"        probe: {{kind: command, shell: 'cat {versions}/$SLURMD_NODENAME'}}\n"
        "        consistent: [stdout, exit_code]\n"
        "        drain: named\n"
    )

    done = cli("run", "spec.yaml", "--json", "out.json", "--drain")

    assert done.returncode == 1
    row = results(tmp_path)[("torch", "cluster")]
    assert row["status"] == "fail"
    assert row["reason"] == 'stdout "2.4.0" on n3; "2.5.1" on the other 2 hosts'
    assert row["facts"]["outliers"] == {"stdout": ["n3"], "exit_code": []}
    assert row["facts"]["values"]["stdout"] == {'"2.5.1"': ["n1", "n2"], '"2.4.0"': ["n3"]}
    assert row["facts"]["faulty_hosts"] == ["n3"]  # `drain: named` drains the outlier
    states = cluster.sinfo()
    assert states["n3"] == ("drained", f"matrix[same] torch: {row['reason']}")
    assert states["n1"][0] == states["n2"][0] == "idle"

    (versions / "n3").write_text("2.5.1")
    cluster.resume("n3")
    cluster.wait_idle(["n3"])
    cluster.drain("n2", "maintenance")
    done = cli("run", "spec.yaml", "--json", "out.json")

    row = results(tmp_path)[("torch", "cluster")]
    assert row["status"] == "pass", row
    assert (row["facts"]["hosts"], row["facts"]["not_observed"]) == (2, ["n2"])


DISTRIBUTED = """\
version: 1
name: ddp
targets:
  cluster: {{via: slurm, partition: debug}}
phases:
  - id: p
    checks:
      - id: ddp
        across: cluster
        timeout: 100s
        probe: {{kind: torch.distributed, world_size: {per_node}, master_addr: 127.0.0.1,
                 timeout: 80, sizes: [1024, 65536], straggler_ratio: {ratio}}}
"""


NAMED = DISTRIBUTED.replace("timeout: 100s", "timeout: 100s\n        drain: named")


def straggle_rank(cli, tmp_path: Path, rank: int, code: str) -> dict[str, str]:
    """The environment for a run whose rank `rank` runs `code` as it starts (an audit hook
    sees it set RANK); the nodes' helpers get the sitecustomize through srun, which exports
    matrix's environment."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import os, sys, time\n\n\ndef hook(event, args):\n"
        f"    if event == 'os.putenv' and tuple(args) in ((b'RANK', b'{rank}'),):\n"
        f"        {code}\n\n\nsys.addaudithook(hook)\n"
    )
    return {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{cli.env()['PYTHONPATH']}"}


@pytest.mark.timeout(240)
def test_torch_distributed_spans_the_nodes_as_one_srun_step(cli, tmp_path, cluster) -> None:
    pytest.importorskip("torch")
    (tmp_path / "spec.yaml").write_text(DISTRIBUTED.format(ratio=100, per_node=2))

    done = cli("run", "spec.yaml", "--json", "out.json", timeout=200)

    row = results(tmp_path)[("ddp", "cluster")]
    assert row["status"] == "pass", (row["reason"], done.stdout[-2000:])
    facts = row["facts"]
    assert (facts["hosts"], facts["world_size"], facts["backend"], facts["launch"]) == (
        ["n1", "n2", "n3"],
        6,
        "gloo",
        "srun",
    )
    assert facts["all_reduce_ok"] and facts["broadcast_ok"] and facts["ddp_ok"]
    assert set(facts["compute_ms"]) == {"n1", "n2", "n3"} and facts["ranks"] == {}
    assert set(facts["per_host"]) == {"n1", "n2", "n3"}
    assert set(facts["per_rank"]) == {str(rank) for rank in range(6)}
    assert all(row["init_ms"] > 0 for row in facts["per_rank"].values())
    assert [row["bytes"] for row in facts["bandwidth"]] == [4096, 262144]
    for measured in facts["bandwidth"]:  # nccl-tests: busbw = algbw × 2(n−1)/n
        assert measured["busbw_gbps"] == pytest.approx(measured["algbw_gbps"] * 10 / 6, abs=2e-3)
    assert facts["busbw_gbps"] == facts["bandwidth"][-1]["busbw_gbps"]


@pytest.mark.timeout(240)
def test_limit_narrows_the_spanning_check_and_the_job_to_the_nodes_it_selects(
    cli, tmp_path, cluster
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "spec.yaml").write_text(DISTRIBUTED.format(ratio=100, per_node=1))
    cluster.drain("n3", "not selected: must not be asked for")

    done = cli("run", "spec.yaml", "--json", "out.json", "--limit", "n[12]", timeout=200)

    row = results(tmp_path)[("ddp", "cluster")]
    assert row["status"] == "pass", (row["reason"], done.stdout[-2000:])
    assert (row["facts"]["hosts"], row["facts"]["world_size"]) == (["n1", "n2"], 2)
    assert ("slurm-connect", "n3") not in results(tmp_path) or (
        results(tmp_path)[("slurm-connect", "n3")]["status"] == "skip"
    )


@pytest.mark.timeout(240)
def test_a_slow_node_is_named_as_the_straggler(cli, tmp_path, cluster) -> None:
    pytest.importorskip("torch")
    env = straggle_rank(
        cli, tmp_path, 2,
        "import torch; tanh = torch.tanh; "
        "torch.tanh = lambda x: (time.sleep(0.1), tanh(x))[1]",
    )  # fmt: skip
    (tmp_path / "spec.yaml").write_text(NAMED.format(ratio=3, per_node=1))

    cli("run", "spec.yaml", "--json", "out.json", "--drain", env=env, timeout=200)

    row = results(tmp_path)[("ddp", "cluster")]
    assert row["status"] == "fail"
    assert row["facts"]["slowest_host"] == "n3" and row["facts"]["straggler"] is True
    assert row["facts"]["problem"].startswith("n3 is a straggler: its compute step took ")
    states = cluster.sinfo()  # `drain: named`: the straggler, by what was measured on it
    assert states["n3"][0] == "drained"
    assert states["n3"][1].startswith("matrix[ddp] ddp: n3 is a straggler: its compute step")
    assert states["n1"][0] == states["n2"][0] == "idle"


@pytest.mark.timeout(240)
def test_a_rank_that_dies_names_its_node(cli, tmp_path, cluster) -> None:
    pytest.importorskip("torch")
    crash = "sys.stderr.write('Xid 79: GPU fell off\\n'); os._exit(3)"
    env = straggle_rank(cli, tmp_path, 1, crash)
    (tmp_path / "spec.yaml").write_text(NAMED.format(ratio=100, per_node=1))

    cli("run", "spec.yaml", "--json", "out.json", "--drain", env=env, timeout=200)

    row = results(tmp_path)[("ddp", "cluster")]
    assert row["status"] == "fail"
    assert row["facts"]["ranks"]["1"] == "exited 3: Xid 79: GPU fell off"
    assert row["facts"]["problem"] == (  # the node that failed first, then the rest stopped
        "n2: torch.distributed (auto, 1 rank) failed: rank 1: exited 3: Xid 79: GPU fell off; "
        "n1, n3: stopped after n2 failed"
    )
    assert row["facts"]["faulty_hosts"] == ["n2"]  # not the nodes stopped because of it
    drained = {node for node, (state, _) in cluster.sinfo().items() if state == "drained"}
    assert drained == {"n2"}


def test_a_drained_node_blocks_the_spanning_check_by_name(cli, tmp_path, cluster) -> None:
    (tmp_path / "spec.yaml").write_text(DISTRIBUTED.format(ratio=100, per_node=1))
    cluster.drain("n3", "bad IB port")

    cli("run", "spec.yaml", "--json", "out.json")

    row = results(tmp_path)[("ddp", "cluster")]
    assert row["status"] == "skip" and row["skip"]["detail"] == "slurm-connect@n3"


LEAKY = """\
version: 1
name: leaky
secrets: [PLANTED]
targets:
  cluster: {{via: slurm, partition: debug}}
phases:
  - id: nodes
    checks:
      - id: leaky
        on: cluster
        probe:
          kind: command
          argv: [python3, "{printer}", "{{{{ target.host }}}}"]
          env: {{PLANTED: "{{{{ secret.PLANTED }}}}"}}
        expect: {{exit_code: 0}}
        diagnostic: "{{{{ secret.PLANTED | urlencode }}}} {{{{ facts.stdout }}}}"
"""

# What each node's check prints: a form of the secret on the documented list.
PRINTER = """\
import os, sys
s = os.environ["PLANTED"]
print({
    "n1": "\\n".join(s[i : i + 6] for i in range(0, len(s), 6)),  # folded at 6 columns
    "n2": "".join(f"\\\\u{ord(c):04x}" for c in s),  # JSON \\\\u escapes
    "n3": ":".join(f"{b:02x}" for b in s.encode()) + " " + s[::-1],  # hex, reversed
}[sys.argv[1]])
sys.exit(1)
"""


def test_a_secret_in_any_documented_form_never_reaches_a_drain_reason(
    cli, tmp_path, cluster
) -> None:
    """The reason Slurm keeps is readable by every cluster user (`sinfo -R`)."""
    secret = "Zq9-Sekr3t+/Val_ue"
    printer = tmp_path / "printer.py"
    printer.write_text(PRINTER)
    (tmp_path / "spec.yaml").write_text(LEAKY.format(printer=printer))

    done = cli("run", "spec.yaml", "--drain", env={"PLANTED": secret})

    assert done.returncode == 1, done.stdout + done.stderr
    reasons = {node: why for node, (state, why) in cluster.sinfo().items() if state == "drained"}
    assert sorted(reasons) == ["n1", "n2", "n3"], cluster.sinfo()
    leaked = ["Sekr3", "Zq9", "%2B/Val", "\\u0053", "53:65:6b", "eu_laV"]
    for node, why in reasons.items():
        assert why.startswith("matrix[leaky] leaky: ***"), why
        assert not [piece for piece in leaked if piece in why], (node, why)
