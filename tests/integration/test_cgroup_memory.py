"""The memory a job really gets: inside a cgroup (a container, a Slurm job) the `memory` probe,
torch.memory and torch.batch_size hold work to the cgroup's limit, not the host's RAM.

The v1 tests run matrix inside a real memory cgroup the test makes (this machine and CI mount the
v1 memory controller at /sys/fs/cgroup/memory; root can make a child there). Its unified v2
hierarchy has no memory controller, so the v2 layouts are trees built in tmp_path with the
files a v2 host has, read by the same code through its `proc` and `root` seams."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from required import unavailable

REPO = Path(__file__).resolve().parents[2]
V1_MEMORY = Path("/sys/fs/cgroup/memory")
GIB = 1024**3
SMALL = 1288490188  # 1.2 GiB: the facts say 1.2
ROOMY = 3 * GIB  # torch's own libraries (page cache charged to the cgroup) take over 1 GiB
TINY = {"d_model": 32, "layers": 2, "heads": 4, "vocab": 1024, "seq_len": 64, "device": "cpu"}


def _unavailable(reason: str) -> None:
    unavailable(
        f"{reason}: run as root on Linux with the cgroup v1 memory controller mounted at "
        "/sys/fs/cgroup/memory (CI sets MATRIX_REQUIRE_CGROUP=1 to require this)",
        "MATRIX_REQUIRE_CGROUP",
    )


@pytest.fixture
def cgroups() -> Iterator[Callable[[int], Path]]:
    """Make fresh v1 memory cgroups with a limit in bytes; removed afterwards."""
    if not (V1_MEMORY / "memory.limit_in_bytes").exists():
        _unavailable("no cgroup v1 memory controller at /sys/fs/cgroup/memory")
    made: list[Path] = []

    def make(limit: int) -> Path:
        path = V1_MEMORY / f"matrix-test-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            made.append(path)
            (path / "memory.limit_in_bytes").write_text(str(limit))
        except OSError as exc:
            _unavailable(f"cannot make a memory cgroup there ({exc})")
        return path

    yield make
    for path in made:
        for pid in (path / "cgroup.procs").read_text().split():  # strays go back to the root
            (V1_MEMORY / "cgroup.procs").write_text(pid)
        for _ in range(50):  # a process moved out may still be exiting: EBUSY for a moment
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def spec(tmp_path: Path, checks: list[dict]) -> Path:
    path = tmp_path / "spec.yaml"
    document = {"version": 1, "name": "t", "phases": [{"id": "p", "checks": checks}]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(tmp_path: Path, spec_path: Path, inside: Path | None) -> dict[str, dict]:
    """`matrix run` as a user runs it, moved into `inside` (a cgroup) first when given."""
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}.json"
    argv = [sys.executable, "-m", "matrix", "run", str(spec_path), "--json", str(out), "--quiet"]
    if inside is not None:
        argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(inside), *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(argv, cwd=tmp_path, env=env, timeout=100, check=False)  # < pytest's 120 s
    return {r["task_id"]: r for r in json.loads(out.read_text())["results"]}


def test_memory_reports_the_cgroup_limit_and_fails_a_job_that_would_be_killed(
    cgroups: Callable[[int], Path], tmp_path: Path
) -> None:
    """In a 1.2 GiB cgroup on a host with ~23 GB, a row asking for 2 GB must fail."""
    path = spec(tmp_path, [{"id": "job", "probe": {"kind": "memory"},
                            "expect": {"available_gb": {"ge": 2}}}])  # fmt: skip
    cgroup = cgroups(SMALL)
    inside, outside = run(tmp_path, path, cgroup)["job"], run(tmp_path, path, None)["job"]

    assert inside["status"] == "fail" and outside["status"] == "pass"
    facts = inside["facts"]
    assert facts["total_gb"] == 1.2 and facts["available_gb"] < 1.2
    assert facts["limit_source"] == f"cgroup v1 {cgroup}/memory.limit_in_bytes"
    assert facts["physical_gb"] == outside["facts"]["physical_gb"] > 2
    assert outside["facts"]["limit_source"] == "physical"


def test_torch_rows_are_held_to_the_cgroup_limit(
    cgroups: Callable[[int], Path], tmp_path: Path
) -> None:
    """torch.memory compares with the cgroup's limit; torch.batch_size measures against what
    the cgroup has left, and a batch past it does not fit (its trial child is OOM-killed or
    over the limit), while the same row passes outside."""
    path = spec(
        tmp_path,
        [
            {"id": "estimate", "probe": {"kind": "torch.memory", "params": "1B", "device": "cpu"}},
            {"id": "batch", "probe": {"kind": "torch.batch_size", **TINY, "batch_size": 2048,
                                      "max_batch_size": 2048, "multiple_of": 64}},
        ],
    )  # fmt: skip
    cgroup = cgroups(ROOMY)
    inside, outside = run(tmp_path, path, cgroup), run(tmp_path, path, None)

    assert {k: r["status"] for k, r in inside.items()} == {"estimate": "fail", "batch": "fail"}
    assert {k: r["status"] for k, r in outside.items()} == {"estimate": "pass", "batch": "pass"}
    estimate = inside["estimate"]["facts"]
    source = f"cgroup v1 {cgroup}/memory.limit_in_bytes"
    assert (estimate["have_gb"], estimate["limit_source"]) == (3.0, source)
    assert estimate["problem"] == f"Need 14.9GB RAM, have 3GB (the limit of {source})"
    batch = inside["batch"]["facts"]
    assert batch["limit_source"] == source and batch["memory_limit_gb"] < 3, batch
    assert batch["configured_fits"] is False and 0 < batch["max_batch_size"] < 2048
    assert batch["max_batch_size"] % 64 == 0 and batch["problem"].startswith("Batch size 2048 ")
    assert outside["batch"]["facts"]["limit_source"] == "physical"


def test_http_load_measures_a_server_as_every_process_of_its_cgroup_or_unit(
    cgroups: Callable[[int], Path], tmp_path: Path
) -> None:
    """A pre-fork server started inside a real cgroup, its workers leaking: `process:
    cgroup:/<path>` and `unit:<name>` (how systemd names a service's cgroup) both watch the
    master and its workers."""
    from http_server import PREFORK

    cgroup = cgroups(ROOMY)
    run_file = tmp_path / "server.port"
    argv = [sys.executable, str(PREFORK), "--workers", "2", "--leak", str(1 << 20), str(run_file)]
    server = subprocess.Popen(
        ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]
    )
    try:
        deadline = time.monotonic() + 20
        while not (run_file.exists() and run_file.read_text()):
            assert server.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{run_file.read_text()}/v1/predict"
        load = {"kind": "http.load", "url": url, "requests": 30, "concurrency": 2}
        path = spec(tmp_path, [
            {"id": "cgroup", "probe": {**load, "process": f"cgroup:/{cgroup.name}"}},
            {"id": "unit", "probe": {**load, "process": f"unit:{cgroup.name}"}},
        ])  # fmt: skip
        found = run(tmp_path, path, None)
    finally:
        server.terminate()
        server.wait(timeout=10)

    for row in ("cgroup", "unit"):
        facts = found[row]["facts"]
        assert facts["cgroup"] == str(cgroup), found[row]["reason"]
        assert facts["process_count"] == 3 and facts["leak"] is True
        assert found[row]["status"] == "fail"
        assert re.match(r"memory grew \d+(\.\d)?% in pid \d+ \(python", found[row]["reason"])


def test_effective_memory_inside_a_real_cgroup_is_its_limit(
    cgroups: Callable[[int], Path], tmp_path: Path
) -> None:
    """probes/remote/_memory.py alone, in a python moved into the cgroup first."""
    cgroup = cgroups(SMALL)
    code = (
        f"import json, sys; sys.path.insert(0, {str(REPO / 'probes' / 'remote')!r}); "
        "from _memory import effective_memory; print(json.dumps(effective_memory()))"
    )
    enter = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    argv = ["sh", "-c", enter, str(cgroup), sys.executable, "-c", code]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)

    limit = int((cgroup / "memory.limit_in_bytes").read_text())  # SMALL rounded to a page
    assert SMALL - 4096 < limit <= SMALL
    assert found["total"] == limit and found["physical"] > limit
    assert found["source"] == f"cgroup v1 {cgroup}/memory.limit_in_bytes"
    assert limit - 200 * 1024**2 < found["available"] < limit  # a bare python uses a few MB


# ── cgroup layouts this machine does not have, built in tmp_path ──────────────────────────


def _memory_module():
    spec_ = importlib.util.spec_from_file_location("_memory", REPO / "probes/remote/_memory.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def host(
    tmp_path: Path,
    cgroup: str,
    mountinfo: list[str],
    files: dict[str, str],
    meminfo: str = f"MemTotal: {16 * GIB // 1024} kB\nMemAvailable: {12 * GIB // 1024} kB\n",
) -> dict:
    """A /proc and a /sys/fs/cgroup tree with these contents; effective_memory() read there."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(meminfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    for name, text in files.items():
        file = tmp_path / name.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return _memory_module().effective_memory(str(proc), str(tmp_path))


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw"


def test_v2_the_smallest_memory_max_up_the_tree_counts(tmp_path: Path) -> None:
    """A Slurm job cgroup under a user cgroup: the parent's 4 GiB binds, the job's own 6 GiB
    does not, `max` is no limit; page cache is not counted as used."""
    job = "/sys/fs/cgroup/slurm/uid_0/job_12"
    found = host(
        tmp_path,
        "0::/slurm/uid_0/job_12\n",
        [V2_MOUNT],
        {
            f"{job}/memory.max": f"{6 * GIB}\n",
            f"{job}/memory.current": f"{2 * GIB}\n",
            f"{job}/memory.stat": f"anon 1\ninactive_file {GIB}\n",
            "/sys/fs/cgroup/slurm/uid_0/memory.max": f"{4 * GIB}\n",
            "/sys/fs/cgroup/slurm/uid_0/memory.current": f"{3 * GIB}\n",
            "/sys/fs/cgroup/slurm/memory.max": "max\n",
        },
    )
    assert found["total"] == 4 * GIB and found["physical"] == 16 * GIB
    assert found["source"] == f"cgroup v2 {tmp_path}/sys/fs/cgroup/slurm/uid_0/memory.max"
    assert found["available"] == GIB  # the parent's 4 GiB less its 3 GiB in use


def test_v2_inside_a_container_namespace(tmp_path: Path) -> None:
    """A container sees its cgroup as / and the mount's root is its own subtree."""
    found = host(
        tmp_path,
        "0::/\n",
        ["30 23 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw"],
        {"/sys/fs/cgroup/memory.max": f"{2 * GIB}\n", "/sys/fs/cgroup/memory.current": "0\n"},
    )
    assert (found["total"], found["available"]) == (2 * GIB, 2 * GIB)


def test_a_hybrid_host_uses_the_v1_memory_controller(tmp_path: Path) -> None:
    """v1 controllers beside an empty v2 hierarchy (this machine's layout): v1 counts."""
    found = host(
        tmp_path,
        "4:memory:/process_api/x\n0::/\n",
        [
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
        ],
        {
            "/sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": f"{3 * GIB}\n",
            "/sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes": f"{GIB}\n",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "/sys/fs/cgroup/unified/cgroup.controllers": "\n",
        },
    )
    assert (found["total"], found["available"]) == (3 * GIB, 2 * GIB)
    assert found["source"].startswith("cgroup v1 ")


def test_no_cgroup_limit_is_physical_memory(tmp_path: Path) -> None:
    found = host(tmp_path, "0::/\n", [V2_MOUNT], {"/sys/fs/cgroup/memory.max": "max\n"})
    assert found == {"total": 16 * GIB, "available": 12 * GIB, "physical": 16 * GIB,
                     "source": "physical"}  # fmt: skip


def test_v2_a_limit_is_capped_by_what_the_host_has_available(tmp_path: Path) -> None:
    """A job's own `max` is no limit, its parent's 8 GiB is; with 2 GiB available on the host,
    that is all the job can still allocate."""
    found = host(
        tmp_path,
        "0::/jobs/job_7/step_0\n",
        [V2_MOUNT],
        {
            "/sys/fs/cgroup/jobs/job_7/step_0/memory.max": "max\n",
            "/sys/fs/cgroup/jobs/job_7/memory.max": f"{8 * GIB}\n",
            "/sys/fs/cgroup/jobs/job_7/memory.current": "0\n",
        },
        meminfo=f"MemTotal: {16 * GIB // 1024} kB\nMemAvailable: {2 * GIB // 1024} kB\n",
    )
    assert (found["total"], found["available"]) == (8 * GIB, 2 * GIB)
    assert found["source"] == f"cgroup v2 {tmp_path}/sys/fs/cgroup/jobs/job_7/memory.max"


def test_v2_a_namespace_relative_path_goes_under_the_mount_point(tmp_path: Path) -> None:
    """In a cgroup namespace the process's path (/job) is relative to the namespace, not under
    the mount's root (/kubepods/pod1/ctr): it is joined onto the mount point, and the
    container's own limit at the mount point still counts."""
    found = host(
        tmp_path,
        "0::/job\n",
        ["30 23 0:26 /kubepods/pod1/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw"],
        {
            "/sys/fs/cgroup/job/memory.max": f"{4 * GIB}\n",
            "/sys/fs/cgroup/memory.max": f"{2 * GIB}\n",
            "/sys/fs/cgroup/memory.current": f"{GIB // 2}\n",
        },
    )
    assert (found["total"], found["available"]) == (2 * GIB, 3 * GIB // 2)
    assert found["source"] == f"cgroup v2 {tmp_path}/sys/fs/cgroup/memory.max"


def test_v1_limits_a_container_cannot_see_and_the_tree_without_memory_stat(
    tmp_path: Path,
) -> None:
    """A container whose v1 mount's root is its own cgroup (/docker/abc, a prefix of its path):
    a limit set above it shows only in hierarchical_memory_limit. Without memory.stat, the
    smallest memory.limit_in_bytes up the tree counts; controllers may be comma-joined."""
    container = host(
        tmp_path / "container",
        "4:memory:/docker/abc\n",
        ["35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory"],
        {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{2 * GIB}\n",
            "/sys/fs/cgroup/memory/memory.stat": f"hierarchical_memory_limit {3 * GIB}\n"
            f"total_inactive_file {GIB}\n",
        },
    )
    stat = f"{tmp_path}/container/sys/fs/cgroup/memory/memory.stat"
    assert (container["total"], container["available"]) == (3 * GIB, 2 * GIB)
    assert container["source"] == f"cgroup v1 {stat} hierarchical_memory_limit"

    tree = host(
        tmp_path / "tree",
        "4:memory,hugetlb:/batch/x\n0::/\n",
        ["35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,hugetlb"],
        {
            "/sys/fs/cgroup/memory/batch/memory.limit_in_bytes": f"{5 * GIB}\n",
            "/sys/fs/cgroup/memory/batch/x/memory.limit_in_bytes": f"{9 * GIB}\n",
        },
    )
    limit = f"{tmp_path}/tree/sys/fs/cgroup/memory/batch/memory.limit_in_bytes"
    assert (tree["total"], tree["source"]) == (5 * GIB, f"cgroup v1 {limit}")


def test_missing_or_broken_files_fall_back_to_physical_and_never_raise(tmp_path: Path) -> None:
    nothing = host(tmp_path / "nothing", "", [], {})
    assert (nothing["total"], nothing["source"]) == (16 * GIB, "physical")

    broken = host(
        tmp_path / "broken",
        "junk\n4:memory\n0::/job\n",
        ["- -", "1 2 3", "30 23 0:26 / /sys/fs/cgroup rw - cgroup2", V2_MOUNT],
        {"/sys/fs/cgroup/job/memory.max": "lots\n", "/sys/fs/cgroup/job/memory.stat": "\0\0"},
    )
    assert broken == {"total": 16 * GIB, "available": 12 * GIB, "physical": 16 * GIB,
                      "source": "physical"}  # fmt: skip

    off_linux = _memory_module().effective_memory(str(tmp_path / "no-proc"))  # sysconf's figures
    assert off_linux["source"] == "physical" and off_linux["total"] == off_linux["physical"] > 0
