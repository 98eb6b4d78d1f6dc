"""`torch.distributed` through the real engine: real ranks, real gloo on this CPU, a real socket
holding a port. After each test no rank process of its own may be left alive."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix.results import Result, Run

RANK_MARKER = b"matrix-rank-"  # what each rank calls itself (/proc/PID/comm, as `ps` shows)
TAG = "MX_DISTRIBUTED_TEST"  # set per test and inherited by its processes, to tell them apart


@pytest.fixture(autouse=True)
def ours(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes], list[int]]]:
    """ours(marker) → pids of this test's live processes whose name starts with `marker`
    (a test run beside this one has its own). No rank may outlive the test."""
    tag = f"{TAG}={uuid.uuid4().hex}".encode()
    monkeypatch.setenv(TAG, tag.decode().split("=", 1)[1])

    def find(marker: bytes) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                name = (entry / "comm").read_bytes()
                environ = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if name.startswith(marker) and tag in environ and state != "Z":
                found.append(int(entry.name))
        return found

    yield find
    assert find(RANK_MARKER) == []


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def distributed_run(run_spec: Callable[..., Run], by_id: Callable[[Run], dict[str, Result]]):
    """distributed_run({check_id: row}) → results by check id; a row is probe params plus
    an optional `check` dict of check keys (timeout, expect)."""

    def run(rows: dict[str, dict[str, Any]]) -> dict[str, Result]:
        checks = []
        for check_id, params in rows.items():
            extra = params.pop("check", {})
            checks.append(
                {"id": check_id, "probe": {"kind": "torch.distributed", **params}, **extra}
            )
        spec = {"version": 1, "name": "ddp", "phases": [{"id": "d", "checks": checks}]}
        return by_id(run_spec(json.dumps(spec)))

    return run


def test_gloo_all_reduce_and_broadcast_on_cpu(distributed_run) -> None:
    # generous bounds: a loaded CI machine may take many seconds to import torch
    check = {"timeout": "2m", "expect": {"init_ms": {"lt": 60_000}}}
    results = distributed_run({"gloo": {"timeout": 90, "check": check}})

    result = results["gloo"]
    assert result.status.value == "pass", result.reason
    facts = result.facts
    assert (facts["backend"], facts["world_size"], facts["ranks"]) == ("gloo", 2, {})
    assert facts["all_reduce_ok"] and facts["broadcast_ok"] and facts["problem"] is None
    assert facts["all_reduce_ms"] > 0 and facts["broadcast_ms"] > 0 and facts["init_ms"] > 0
    assert facts["torch"].startswith("2.") and 0 < facts["port"] < 65536


def test_port_in_use_is_a_clear_error(distributed_run) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        results = distributed_run({"taken": {"backend": "gloo", "port": port}})

    assert results["taken"].status.value == "error"
    assert results["taken"].reason == (
        f"port {port} is in use on {socket.gethostname()} — pick another `port` or stop the "
        "process holding it"
    )


def test_nccl_without_cuda_is_a_clear_error(distributed_run) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: NCCL can run")

    results = distributed_run(
        {"nccl": {"backend": "nccl", "timeout": 90, "check": {"timeout": "2m"}}}
    )

    assert results["nccl"].status.value == "error"
    reason = results["nccl"].reason
    assert reason.startswith("backend nccl needs CUDA, but ")
    assert "use `backend: gloo`" in reason


@pytest.fixture
def rank_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """rank_one(code): rank 1 runs `code` as it starts: a sitecustomize on PYTHONPATH (the
    target's processes inherit it) adds an audit hook that sees the rank set RANK=1 in its
    environment; the probe's own script and rank 0 are untouched."""

    def inject(code: str) -> None:
        (tmp_path / "sitecustomize.py").write_text(
            "import os, sys, time\n\n\n"
            "def rank_one(event, args):\n"
            "    if event == 'os.putenv' and tuple(args) in ((b'RANK', b'1'), ('RANK', '1')):\n"
            f"        {code}\n\n\n"
            "sys.addaudithook(rank_one)\n"
        )
        inherited = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), inherited])))

    return inject


def test_a_rank_that_crashes_is_named_and_the_others_stopped(distributed_run, rank_one) -> None:
    rank_one("sys.stderr.write('CUDA error: an illegal memory access\\n'); os._exit(3)")

    results = distributed_run({"crash": {"backend": "gloo"}})

    result = results["crash"]
    assert result.status.value == "fail"
    ranks = result.facts["ranks"]
    assert ranks["1"] == "exited 3: CUDA error: an illegal memory access"
    assert ranks["0"].startswith("killed after rank 1 failed while ")
    assert result.reason.startswith(
        "torch.distributed (gloo, 2 ranks) failed: rank 0: killed after rank 1 failed while "
    )
    assert (result.facts["all_reduce_ok"], result.facts["all_reduce_ms"]) == (False, None)


def test_every_rank_resumes_from_rank_0s_checkpoint_in_the_shared_folder(
    distributed_run, tmp_path
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    check = {"timeout": "2m"}
    results = distributed_run(
        {
            "shared": {"backend": "gloo", "timeout": 90, "checkpoint_dir": str(folder),
                       "check": check},
            "missing": {"backend": "gloo", "timeout": 90,
                        "checkpoint_dir": str(tmp_path / "absent"), "check": check},
        }
    )  # fmt: skip

    shared = results["shared"]
    assert shared.status.value == "pass", shared.reason
    assert shared.facts["resume_ok"] and shared.facts["ddp_ok"]
    assert list(folder.iterdir()) == []  # the checkpoint is removed once every rank read it
    missing = results["missing"]
    assert missing.status.value == "fail"
    assert missing.facts["ranks"]["0"] == (
        f"RuntimeError: cannot write the checkpoint to {tmp_path}/absent/matrix-checkpoint-"
        f"{missing.facts['port']}.pt: No such file or directory — `checkpoint_dir` must be a "
        "folder the first host can write"
    )


def test_a_resume_that_loses_the_optimizer_state_fails(distributed_run, rank_one) -> None:
    rank_one("import torch; torch.optim.SGD.load_state_dict = lambda self, state: None")

    results = distributed_run(
        {"lost": {"backend": "gloo", "timeout": 90, "check": {"timeout": "2m"}}}
    )

    lost = results["lost"]
    assert lost.status.value == "fail"
    assert (lost.facts["ddp_ok"], lost.facts["resume_ok"], lost.facts["ranks"]) == (True, False, {})
    assert "resume_ok" in lost.reason


def test_a_rank_that_never_joins_times_out_the_rendezvous(distributed_run, rank_one) -> None:
    rank_one("time.sleep(60)")

    results = distributed_run({"hang": {"backend": "gloo", "timeout": 5}})

    result = results["hang"]
    assert result.status.value == "fail"
    ranks = result.facts["ranks"]
    assert ranks["1"] == "killed at the deadline while starting"
    assert "0" in ranks  # torch's own timeout, or killed too, as the load here allows
    assert result.facts["problem"].endswith(
        " — not done within 5s: a rank that never joins the rendezvous crashed or cannot reach "
        "MASTER_ADDR; raise `timeout` if importing torch is slow on this host"
    )


def test_ranks_die_with_the_probes_script(distributed_run, ours) -> None:
    killed: list[int] = []
    done = threading.Event()

    def kill_script_once_ranks_run() -> None:  # as a timeout or a lost SSH session would
        while not done.is_set() and not killed:
            ranks = ours(RANK_MARKER)
            if len(ranks) == 2:  # the probe's script is the ranks' parent
                for pid in {parent(rank) for rank in ranks}:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_script_once_ranks_run)
    killer.start()
    try:
        results = distributed_run({"cut": {"timeout": 60, "check": {"timeout": "90s"}}})
    finally:
        done.set()
        killer.join()

    assert killed, "the ranks never ran"
    assert results["cut"].status.value == "error"
    assert "exited -9 without a result" in results["cut"].reason
    deadline = time.monotonic() + 10  # the kernel sends each rank its parent-death signal
    while ours(RANK_MARKER) and time.monotonic() < deadline:
        time.sleep(0.1)
