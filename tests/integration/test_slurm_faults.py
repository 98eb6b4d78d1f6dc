"""The Slurm fault matrix: `matrix run --drain` on a real loopback cluster while faults are
injected — matrix's own job cancelled, a step's srun killed, a node's slurmd killed,
slurmctld killed and restarted, a node set DOWN, a failing and a slow prolog, matrix killed
outright. For each: only nodes on which a check observed a failure are drained, with the spec
in the reason; every node has a result saying what happened; nothing is left in `squeue`; no
traceback. Then two specs sharing a node: neither undoes the other's drain."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slurm import HEALTHY_ROW, SlurmCluster, wait_for

NODES = ("n1", "n2", "n3")
# The prolog of every job step's first launch on a node: what the file prolog-NODE says
# (`fail`, `sleep N`), nothing when there is none.
PROLOG = """#!/bin/sh
mode=$(cat {root}/prolog-$SLURMD_NODENAME 2>/dev/null)
case $mode in
    fail) exit 1 ;;
    sleep*) sleep "${{mode#sleep }}" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    root = tmp_path_factory.mktemp("faults")
    prolog = root / "prolog.sh"
    prolog.write_text(PROLOG.format(root=root))
    prolog.chmod(0o755)
    cluster = SlurmCluster(root / "slurm", 3, f"Prolog={prolog}\n")
    cluster.prologs = root  # type: ignore[attr-defined]  # where prolog-NODE files go
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def fresh(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with every daemon up, every node idle and no prolog fault."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    yield
    for name in ("slurmctld", *(f"slurmd-{node}" for node in NODES)):
        if name not in cluster.daemons:
            cluster.start(name)
    for node in NODES:
        (cluster.prologs / f"prolog-{node}").unlink(missing_ok=True)  # type: ignore[attr-defined]
    cluster.wait_no_jobs(30)
    for node, (state, _) in cluster.sinfo().items():
        if not state.startswith("idle"):
            with contextlib.suppress(subprocess.CalledProcessError):  # a down node comes
                cluster.resume(node)  # back by itself once its slurmd answers
    cluster.wait_idle(list(NODES))


SPEC = """\
version: 1
name: {name}
vars:
  marks: {marks}
  hold: {hold}
targets:
  cluster: {{via: slurm, partition: debug{extra}}}
phases:
  - id: nodes
    checks:
{healthy}      - id: busy
        on: cluster
        probe: {{kind: command, shell: 'sleep {{{{ vars.hold }}}}'}}
"""


def write(tmp_path: Path, *, name: str = "faults", hold: float = 0, extra: str = "") -> Path:
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        SPEC.format(name=name, marks=marks, hold=hold, extra=extra, healthy=HEALTHY_ROW)
    )
    return path


def mark_bad(tmp_path: Path, node: str) -> None:
    (tmp_path / "marks").mkdir(exist_ok=True)
    (tmp_path / "marks" / f"bad-{node}").touch()


def matrix_job(cluster: SlurmCluster, within: float = 30) -> str:
    """The id of matrix's job, once the `busy` check's sleep runs on every node in it (the
    gates passed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        jobs = [line.split()[0] for line in cluster.jobs() if " matrix-" in line]
        if jobs and all(_pids(_sleeping(jobs[0], node)) for node in NODES):
            return jobs[0]
        time.sleep(0.2)
    raise AssertionError(
        f"matrix's job did not run on every node: {cluster.jobs()}; {cluster.sinfo()}"
    )


def _sleeping(job: str, node: str) -> Callable[[str, bytes], bool]:
    """Whether a process is the `busy` check's sleep on `node`, in `job`."""
    marks = (f"SLURMD_NODENAME={node}\0".encode(), f"SLURM_JOB_ID={job}\0".encode())
    return lambda cmd, env: cmd.startswith("sleep ") and all(mark in env for mark in marks)


class Faulted:
    """What a run that met a fault left: its exit code, output, results by (check, host),
    warnings, and Slurm's node states and jobs after it."""

    def __init__(
        self, cluster: SlurmCluster, tmp_path: Path, code: int, out: str, wait: float = 15
    ) -> None:
        self.code, self.out = code, out
        report = json.loads((tmp_path / "out.json").read_text())
        self.results = {(r["check_id"], r["host"]): r for r in report["results"]}
        self.warnings = report["warnings"]
        self.left = cluster.wait_no_jobs(wait)  # Slurm ends a job once its prologs have
        self.states = cluster.sinfo()

    def drained_by_matrix(self) -> dict[str, str]:
        return {n: why for n, (s, why) in self.states.items() if why.startswith("matrix")}

    def reason(self, check: str, node: str) -> str:
        return self.results[(check, node)]["reason"] or ""


def faulted_run(
    cli,
    tmp_path: Path,
    cluster: SlurmCluster,
    spec: Path,
    fault: Callable[[str], None],
    wait: float = 15,
) -> Faulted:
    """`matrix run SPEC --drain` with `fault(job_id)` injected once its job runs on every
    node; `wait`: how long Slurm gets to end the job after the run."""
    run = cli.popen("run", spec.name, "--drain", "--json", "out.json")
    try:
        fault(matrix_job(cluster))
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = out + err
    assert "Traceback" not in text and "Exception ignored" not in text, text
    return Faulted(cluster, tmp_path, run.returncode, text, wait)


def test_scancel_of_matrixs_own_job_drains_only_the_node_with_evidence(
    cli, tmp_path, cluster
) -> None:
    mark_bad(tmp_path, "n2")
    spec = write(tmp_path, hold=30)

    def cancel(job: str) -> None:
        time.sleep(1)  # the mark's check has answered; the sleeps have not
        cluster.run("scancel", job)

    run = faulted_run(cli, tmp_path, cluster, spec, cancel)

    assert run.drained_by_matrix() == {"n2": "matrix[faults] healthy: n2 carries the bad mark"}
    for node in NODES:
        assert run.reason("busy", node).startswith(f"lost the Slurm step on {node}: the run's job ")
        assert "is CANCELLED: someone cancelled it (scancel)" in run.reason("busy", node)
    assert run.results[("busy", "n1")]["error_type"] == "transport"
    assert "Slurm: n1, n3 not drained: no critical failure was observed on them" in " ".join(
        run.warnings
    )
    assert run.code == 1 and run.left == []


def test_a_killed_srun_is_that_nodes_lost_step_and_drains_nothing(cli, tmp_path, cluster) -> None:
    spec = write(tmp_path, hold=4)

    def kill_srun(job: str) -> None:
        _kill(_pids(lambda cmd, env: f"--jobid={job}" in cmd and "--nodelist=n1" in cmd))

    run = faulted_run(cli, tmp_path, cluster, spec, kill_srun)

    assert run.drained_by_matrix() == {}
    assert run.reason("busy", "n1").startswith("lost the Slurm step on n1: its step ended ")
    assert [run.results[("busy", n)]["status"] for n in ("n2", "n3")] == ["pass", "pass"]
    assert run.left == []


def test_a_node_whose_slurmd_dies_keeps_what_its_steps_observed(cli, tmp_path, cluster) -> None:
    spec = write(tmp_path, hold=4)
    mark_bad(tmp_path, "n3")

    run = faulted_run(cli, tmp_path, cluster, spec, lambda job: cluster.kill("slurmd-n3"), 1)

    # the node's step runs on without its slurmd: what it observed there stands, the bad mark
    # drains the node and the rest of it passes; the job ends once slurmd is back
    assert [run.results[("busy", node)]["status"] for node in NODES] == ["pass"] * 3, run.out
    assert run.drained_by_matrix() == {"n3": "matrix[faults] healthy: n3 carries the bad mark"}
    assert all(line.endswith(" COMPLETING") for line in run.left), run.left


def test_slurmctld_killed_and_restarted_mid_run_leaves_no_job(cli, tmp_path, cluster) -> None:
    spec = write(tmp_path, hold=8)

    def restart(job: str) -> None:
        saved = cluster.root / "state" / "job_state"  # as a controller that ran a while has:
        changed = time.time()  # a change of the job makes slurmctld save its state soon
        cluster.run("scontrol", "update", f"JobId={job}", "AdminComment=state-saved")
        assert wait_for(lambda: saved.exists() and saved.stat().st_mtime > changed)  # else
        cluster.kill("slurmctld")  # the new one forgets the job and kills its steps
        time.sleep(3)  # the steps run on without it
        cluster.start("slurmctld")

    run = faulted_run(cli, tmp_path, cluster, spec, restart)

    assert [run.results[("busy", n)]["status"] for n in NODES] == ["pass"] * 3, run.out
    assert run.code == 0 and run.left == []
    assert run.drained_by_matrix() == {}


def test_a_node_set_down_mid_run_drains_nothing(cli, tmp_path, cluster) -> None:
    spec = write(tmp_path, hold=20)

    def down(job: str) -> None:
        cluster.run("scontrol", "update", "NodeName=n2", "State=DOWN", "Reason=cable pulled")

    run = faulted_run(cli, tmp_path, cluster, spec, down)

    assert run.drained_by_matrix() == {}
    for node in NODES:
        assert run.reason("busy", node).startswith(f"lost the Slurm step on {node}: "), run.reason(
            "busy", node
        )
    assert run.left == []


@pytest.mark.parametrize("agent", [True, False])
def test_a_failing_prolog_on_one_node_drains_no_other(cli, tmp_path, cluster, agent) -> None:
    (cluster.prologs / "prolog-n2").write_text("fail")  # type: ignore[attr-defined]
    spec = write(tmp_path, hold=1, extra=f", agent: {str(agent).lower()}")

    done = cli("run", spec.name, "--drain", "--json", "out.json")

    assert "Traceback" not in done.stdout + done.stderr
    run = Faulted(cluster, tmp_path, done.returncode, done.stdout)
    assert run.drained_by_matrix() == {}
    assert run.states["n2"][0].startswith("drain") and "matrix" not in run.states["n2"][1]
    if agent:  # the node's helper never started: its gate says why
        assert run.reason("slurm-connect", "n2").startswith("the Slurm step on n2 ended before")
    else:  # each check is a step of its own: the first says its step never ran; Slurm then
        # cancels the job, and the others lost theirs
        rows = [run.results[(check, "n2")] for check in ("healthy", "busy")]
        assert {row["error_type"] for row in rows} == {"transport"}, rows
        assert any(
            row["reason"].startswith("the Slurm step on n2 did not launch: srun: ") for row in rows
        ), rows
    assert run.left == []


@pytest.mark.timeout(120)
def test_a_slow_prolog_is_waited_for_and_named_when_it_runs_out(cli, tmp_path, cluster) -> None:
    """A 20 s prolog on every node; one group gives its steps 4 s to start, the other the
    default: both jobs at once, so the test waits for the prolog once."""
    for node in NODES:
        (cluster.prologs / f"prolog-{node}").write_text("sleep 20")  # type: ignore[attr-defined]
    (tmp_path / "slow.yaml").write_text(
        "version: 1\nname: slow\ntargets:\n"
        "  impatient: {via: slurm, partition: debug, nodes: n1, start_timeout: 4s}\n"
        "  patient: {via: slurm, partition: debug, nodes: 'n[2-3]'}\n"
        "phases:\n  - id: p\n    checks:\n"
        "      - {id: a, on: impatient, probe: {kind: command, argv: ['true']}}\n"
        "      - {id: b, on: patient, probe: {kind: command, argv: ['true']}}\n"
    )

    done = cli("run", "slow.yaml", "--drain", "--json", "out.json", timeout=90)
    run = Faulted(cluster, tmp_path, done.returncode, done.stdout)

    assert run.reason("slurm-connect", "n1").startswith(
        "the Slurm step on n1 did not start within 4s: the job's prolog on n1 is still running"
    )
    for node in ("n2", "n3"):  # held behind the 20 s prolog, and said so in the gate's facts
        assert run.results[("slurm-connect", node)]["facts"]["step_wait"] >= 19
        assert run.results[("b", node)]["status"] == "pass"
    assert run.drained_by_matrix() == {} and run.left == []


def test_a_node_other_jobs_hold_is_named_and_the_idle_ones_checked(cli, tmp_path, cluster) -> None:
    other = subprocess.Popen(
        ["salloc", "--partition=whole", "--nodelist=n3", "--immediate=10", "cat"],
        env=cluster.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert other.stderr is not None and other.stdin is not None
    job = other.stderr.readline().split()[-1].decode()
    spec = write(tmp_path, extra=", connect_timeout: 2")
    spec.write_text(spec.read_text().replace("partition: debug", "partition: whole"))
    try:
        done = cli("run", spec.name, "--drain", "--json", "out.json")
    finally:
        other.stdin.close()
        other.wait()

    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    run = Faulted(cluster, tmp_path, done.returncode, done.stdout)
    assert run.reason("slurm-connect", "n3").startswith(f"node n3 is allocated to job {job} ")
    assert [run.results[("busy", n)]["status"] for n in ("n1", "n2")] == ["pass", "pass"]
    assert run.drained_by_matrix() == {} and run.left == []


def test_matrix_killed_outright_leaves_no_job_and_a_stale_one_is_cancelled_next_run(
    cli, tmp_path, cluster
) -> None:
    spec = write(tmp_path, hold=30)
    run = cli.popen("run", spec.name, "--json", "out.json")
    job = matrix_job(cluster)
    assert cluster.run("squeue", "--noheader", "-j", job, "--format=%l").stdout.strip()[0].isdigit()
    run.kill()  # SIGKILL: salloc reads the end of its input and gives the job back
    run.wait()
    assert cluster.wait_no_jobs() == []

    run = cli.popen("run", spec.name, "--json", "out.json")
    job = matrix_job(cluster)
    holders = _pids(lambda cmd, env: cmd.startswith("salloc") and "--job-name=matrix-faults" in cmd)
    _kill([*holders, run.pid])  # salloc dies too: nothing gives the job back
    run.wait()
    assert any(line.startswith(f"{job} ") for line in cluster.jobs())  # left behind

    done = cli("run", spec.name, "--json", "out.json", "--var", "hold=0")

    assert done.returncode == 0, done.stdout
    warnings = json.loads((tmp_path / "out.json").read_text())["warnings"]
    assert any(w.startswith(f"Slurm: cancelled job {job} (matrix-faults), left by an earlier run")
               for w in warnings), warnings  # fmt: skip
    assert cluster.wait_no_jobs() == []


def test_two_specs_never_undo_each_others_drain(cli, tmp_path, cluster) -> None:
    """A fleet spec drains n2; the node's own spec (another name) runs on n2 and passes:
    n2 stays drained until the fleet spec itself passes there, or --resume-any."""
    mark_bad(tmp_path, "n2")
    fleet = write(tmp_path, name="fleet")
    done = cli("run", fleet.name, "--drain")
    assert done.returncode == 1
    drained = "matrix[fleet] healthy: n2 carries the bad mark"
    assert cluster.sinfo()["n2"] == ("drained", drained)

    node_spec = tmp_path / "node.yaml"
    node_spec.write_text(
        "version: 1\nname: node\nvars: {fail: false}\nphases:\n  - id: p\n    checks:\n"
        "      - {id: ok, probe: {kind: command, argv: ['true']}}\n"
        "      - id: fails\n        when: '{{ vars.fail }}'\n"
        "        probe: {kind: command, argv: ['false']}\n"
    )
    on_n2 = {"SLURMD_NODENAME": "n2"}
    done = cli("run", node_spec.name, "--drain", "--resume", env=on_n2)
    assert done.returncode == 0
    assert (
        f"Slurm: n2 stays drained: matrix[fleet] drained it ({drained}); only a run of that "
        "spec resumes it (or --resume-any)"
    ) in done.stdout
    done = cli("run", node_spec.name, "--drain", "--var", "fail=true", env=on_n2)
    assert "Slurm: n2 left as it is: already drained by matrix[fleet]" in done.stdout
    assert cluster.sinfo()["n2"] == ("drained", drained)

    node_fleet = tmp_path / "fleet-on-node.yaml"  # the fleet spec, run on the node itself
    node_fleet.write_text(
        fleet.read_text().replace("on: cluster", "on: local")
        .replace("{{ target.host }}", "{{ env.SLURMD_NODENAME }}")
        .replace("sleep {{ vars.hold }}", "true")
    )  # fmt: skip
    (tmp_path / "marks" / "bad-n2").unlink()
    done = cli("run", node_fleet.name, "--resume", env=on_n2)
    assert f"Slurm: resumed n2: it passes every critical check now (was: {drained})" in (
        done.stdout
    )
    cluster.wait_idle(["n2"])

    mark_bad(tmp_path, "n2")
    cli("run", fleet.name, "--drain")
    done = cli("run", node_spec.name, "--resume", "--resume-any", env=on_n2)
    assert "Slurm: resumed n2" in done.stdout, done.stdout


def _kill(pids: list[int]) -> None:
    """SIGKILL each, as a crash would end it; one already gone is no matter."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids(match: Callable[[str, bytes], bool]) -> list[int]:
    """Processes whose command line (text) and environment (bytes) `match` says yes to."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if match(cmd, env):
            found.append(int(entry.name))
    return found
