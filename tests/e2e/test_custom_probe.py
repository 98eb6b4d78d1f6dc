"""The example plugin package (examples/custom-probe) installed for real with pip and driven
through the CLI, the way docs/writing-a-probe.md tells a plugin author to test theirs."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import held

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "custom-probe"
SPEC = PACKAGE / "spec.yaml"


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`pip install --target` of a copy (an in-tree build writes build/ and *.egg-info next to
    the sources); returns the environment that puts the installed plugin on the path."""
    root = tmp_path_factory.mktemp("acme")
    source, site = root / "src", root / "site"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    quiet = ["--no-cache-dir", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, *quiet, "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert list(site.glob("matrix_probes_acme-*.dist-info/entry_points.txt"))
    assert (site / "acme_matrix" / "remote" / "ulimit.py").is_file()
    return {"PYTHONPATH": f"{site}:{REPO}"}


def git(repo: Path, *args: str) -> None:
    who = ["-c", "user.name=Acme CI", "-c", "user.email=ci@acme.test"]
    subprocess.run(
        ["git", *who, "-c", "init.defaultBranch=main", "-C", str(repo), *args],
        check=True,
        capture_output=True,
    )


def open_files() -> tuple[int, int]:
    """This process's nofile limits; the CLI and the probe's python inherit them."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def test_the_entry_point_is_what_makes_the_kinds_known(cli, acme):
    listed = cli("list", "--probes", env=acme)
    assert listed.returncode == 0, listed.stderr
    rows = [row.split() for row in listed.stdout.splitlines()[2:] if not row[:1].isspace()]
    runs_on = {row[0]: row[1] for row in rows}  # a wrapped description's next lines are indented
    assert runs_on["acme.ulimit"] == "target"
    assert runs_on["acme.git_clean"] == "controller"
    assert runs_on["command"] == "target"  # built-ins still there

    valid = cli("validate", SPEC, env=acme)
    assert valid.returncode == 0, valid.stderr
    assert "valid — 2 phases, 2 checks, 2 tasks" in valid.stdout

    explained = cli("explain", SPEC, "open-files", env=acme)
    assert explained.returncode == 0, explained.stderr
    assert "probe:      acme.ulimit" in explained.stdout
    assert "A resource limit (open files by default) of a new process" in explained.stdout
    assert "ok == true" in explained.stdout  # the kind's default_expect
    assert "raisable       the hard limit meets `at_least`" in explained.stdout

    without = cli("validate", SPEC)  # the repo alone: no plugin installed
    assert without.returncode == 2
    assert "acme.ulimit" in without.stderr


def test_dirty_checkout_warns_with_its_changes_until_committed(cli, acme, report, tmp_path):
    repo = tmp_path / "trainer"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-qm", "v1")
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "notes.txt").write_text("try lr 3e-4\n")

    done = cli("run", SPEC, "--var", f"repo={repo}", "--json", "dirty.json", env=acme)
    assert done.returncode == 0, done.stdout + done.stderr  # a warning only: CAUTION
    dirty = report(tmp_path / "dirty.json")
    assert dirty["verdict"] == "CAUTION"
    limits, checkout = dirty["by_id"]["open-files"], dirty["by_id"]["git-clean"]

    soft, hard = open_files()
    assert limits["status"] == "pass", limits
    assert limits["facts"]["resource"] == "nofile"
    assert limits["facts"]["at_least"] == 1024
    assert limits["facts"]["soft"] == (None if soft == resource.RLIM_INFINITY else soft)
    assert limits["facts"]["hard"] == (None if hard == resource.RLIM_INFINITY else hard)
    assert limits["facts"]["ok"] is True

    assert checkout["status"] == "fail", checkout
    assert checkout["severity"] == "warning"
    assert checkout["facts"] == {
        "path": str(repo),
        "branch": "main",
        "clean": False,
        "count": 2,
        "changed": ["M train.py", "?? notes.txt"],
    }
    assert checkout["diagnostic"] == (
        f"2 uncommitted change(s) in {repo} on main: M train.py, ?? notes.txt"
    )
    assert checkout["fix"] == (
        f"Commit or stash the changes in {repo}, then launch from the commit"
    )
    assert "2 uncommitted change(s)" in done.stdout

    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v2")
    done = cli("run", SPEC, "--var", f"repo={repo}", "--json", "clean.json", env=acme)
    assert done.returncode == 0, done.stdout + done.stderr
    clean = report(tmp_path / "clean.json")
    assert clean["verdict"] == "READY"
    assert clean["by_id"]["git-clean"]["status"] == "pass"
    assert clean["by_id"]["git-clean"]["facts"]["count"] == 0


def test_low_limit_blocks_and_a_non_repository_is_an_error(cli, acme, report, tmp_path):
    soft, hard = open_files()
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard nofile limit to ask for more than")
    need = hard + 1
    nowhere = tmp_path / "not-a-checkout"
    nowhere.mkdir()

    limit, checkout_at = f"min_open_files={need}", f"repo={nowhere}"
    done = cli("run", SPEC, "--var", limit, "--var", checkout_at, "--json", "out.json", env=acme)
    assert done.returncode == 1, done.stdout + done.stderr
    out = report(tmp_path / "out.json")
    assert out["verdict"] == "BLOCKED"
    limits, checkout = out["by_id"]["open-files"], out["by_id"]["git-clean"]

    assert limits["status"] == "fail", limits
    assert limits["facts"]["ok"] is False
    assert limits["facts"]["raisable"] is False
    assert limits["diagnostic"] == (
        f"local allows {soft} open files (hard limit {hard}), need {need}"
    )
    assert limits["fix"].startswith("Raise nofile in /etc/security/limits.conf")
    assert limits["fix"].endswith(f"to {need} and log in again")

    assert checkout["status"] == "error", checkout  # ProbeError: could not observe
    assert checkout["diagnostic"].startswith(f"git status in {nowhere} failed: fatal: ")
    assert "not a git repository" in checkout["diagnostic"]
    assert checkout["fix"].startswith("Run matrix in the checkout the job is launched from")
    assert checkout["facts"] == {}


def installed_plugin(root: Path, name: str, module: str, files: dict[str, str]) -> dict:
    """A plugin "installed" by hand: a .dist-info naming `module` in the matrix.probes group,
    plus its files, under root/site; returns the environment that puts it on the path."""
    site = root / "site"
    info = site / f"matrix_probes_{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: matrix-probes-{name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[matrix.probes]\n{name} = {module}\n")
    for relative, text in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    return {"PYTHONPATH": f"{site}:{REPO}"}


def test_a_plugin_that_fails_to_import_breaks_only_the_specs_that_use_it(cli, tmp_path) -> None:
    env = installed_plugin(
        tmp_path,
        "broken",
        "broken_matrix.probes",
        {
            "broken_matrix/__init__.py": "",
            "broken_matrix/probes.py": "import not_installed_anywhere\n",
        },
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n"
        "      - id: echo\n        probe: {kind: command, argv: [echo, hi]}\n"
    )
    assert cli("validate", plain, env=env).returncode == 0
    uses = tmp_path / "uses.yaml"
    uses.write_text(plain.read_text().replace("kind: command, argv: [echo, hi]", "kind: broken.x"))
    done = cli("validate", uses, env=env)
    assert done.returncode == 2
    assert (
        "unknown probe kind 'broken.x'; plugin broken_matrix.probes failed to import" in done.stderr
    )
    assert "ModuleNotFoundError: No module named 'not_installed_anywhere'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plugin_that_replaces_a_built_in_kind_is_a_warning_in_every_report(cli, tmp_path) -> None:
    env = installed_plugin(
        tmp_path,
        "shadow",
        "shadow_probes",
        {
            "shadow_probes.py": "from matrix.probe import ProbeParams, probe\n\n\n"
            "@probe('memory')\nclass Memory(ProbeParams):\n"
            "    async def observe(self, ctx):\n        return {'total_gb': 1}\n"
        },
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n"
        "      - id: mem\n        probe: {kind: memory}\n"
    )
    done = cli("run", spec, "--json", tmp_path / "out.json", env=env)
    said = "probe kind 'memory' comes from shadow_probes, which replaced the one in probes.host"
    assert said in done.stdout
    assert said in (tmp_path / "out.json").read_text()


MISBEHAVING = """
import asyncio
import socket
import sys
import time

from matrix.probe import ProbeParams, probe


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no words")


class Custom(BaseException):
    pass


RAISES = {
    "unprintable": Unprintable,
    "base": lambda: Custom("a BaseException of its own"),
    "generator-exit": GeneratorExit,
    "keyboard": KeyboardInterrupt,
    "cancelled": asyncio.CancelledError,
    "exit": lambda: SystemExit(3),
}


@probe("bad.raise")
class Raise(ProbeParams):
    how: str

    async def observe(self, ctx):
        raise RAISES[self.how]()


@probe("bad.list")
class ReturnsList(ProbeParams):
    async def observe(self, ctx):
        return [1, 2, 3]


def swallowing():
    while True:
        try:
            time.sleep(3600)
        except Exception:
            pass


def busy():
    while True:
        pass


def reading():
    left, right = socket.socketpair()
    left.recv(1)


BLOCKS = {"sleep": lambda: time.sleep(3600), "swallow": swallowing, "busy": busy,
          "socket": reading}


@probe("bad.block")
class Block(ProbeParams):
    how: str

    async def observe(self, ctx):
        BLOCKS[self.how]()  # never returns: the event loop is held
        return {}
"""


SHAPES = ["unprintable", "base", "generator-exit", "keyboard", "cancelled", "exit"]


def misbehaving(tmp_path: Path) -> dict:
    """spec.yaml in tmp_path, a row per way the bad plugin misbehaves and a sound one last;
    returns the environment that installs the plugin."""
    env = installed_plugin(
        tmp_path, "bad", "bad_matrix.probes",
        {"bad_matrix/__init__.py": "", "bad_matrix/probes.py": MISBEHAVING},
    )  # fmt: skip
    checks = "".join(
        f"      - {{id: {how}, probe: {{kind: bad.raise, how: {how}}}}}\n" for how in SHAPES
    )
    checks += "      - {id: a-list, probe: {kind: bad.list}}\n"
    checks += "      - {id: holds, timeout: 1s, probe: {kind: bad.block, how: sleep}}\n"
    checks += "      - {id: after, probe: {kind: command, argv: ['true']}}\n"
    head = "version: 1\nname: bad\nphases:\n  - id: p\n    checks:\n"
    (tmp_path / "spec.yaml").write_text(head + checks)
    return env


def test_a_misbehaving_plugin_is_an_error_and_the_run_and_its_reports_complete(
    cli, tmp_path
) -> None:
    env = misbehaving(tmp_path)

    done = cli("run", "spec.yaml", "--json", "out.json", "--junit", "out.xml", env=env)

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # BLOCKED: not 3, 130 or a crash
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["verdict"] == "BLOCKED" and not report["interrupted"]
    rows = {r["task_id"]: r for r in report["results"]}
    assert rows["after"]["status"] == "pass"
    for how in [*SHAPES, "a-list", "holds"]:
        assert rows[how]["status"] == "error", (how, rows[how])
    for how in [*SHAPES, "a-list"]:
        assert rows[how]["error_type"] == "crash", how
    assert rows["unprintable"]["reason"] == (
        "probe bad.raise crashed: Unprintable: (its message cannot be shown: RuntimeError in "
        "__str__)"
    )
    assert rows["exit"]["reason"] == "probe bad.raise crashed: SystemExit: 3"
    assert rows["a-list"]["reason"] == (
        "probe bad.list crashed: observe() returned list, not a mapping of facts (a bug of the "
        "probe)"
    )
    assert rows["holds"]["error_type"] == "timeout"
    assert (tmp_path / "out.xml").read_text().count("<testcase") == 9


@pytest.mark.parametrize("how", ["sleep", "swallow", "busy", "socket"])
def test_a_plugin_that_holds_the_event_loop_times_out_and_the_run_goes_on(
    cli, tmp_path, how
) -> None:
    """time.sleep, a busy loop, a blocking read, one that swallows what breaks its sleep:
    the row's timeout holds, the rows beside it run, the reports are written."""
    env = installed_plugin(
        tmp_path, "bad", "bad_matrix.probes",
        {"bad_matrix/__init__.py": "", "bad_matrix/probes.py": MISBEHAVING},
    )  # fmt: skip
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nname: held\nphases:\n  - id: p\n    checks:\n"
        f"      - {{id: holds, timeout: 2s, probe: {{kind: bad.block, how: {how}}}}}\n"
        "      - {id: beside, probe: {kind: command, argv: [sleep, '0.5']}}\n"
    )

    done = cli("run", "spec.yaml", "--json", "out.json", env=env, timeout=60)

    assert done.returncode == 1, done.stdout + done.stderr
    rows = {r["task_id"]: r for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    assert rows["beside"]["status"] == "pass"
    holds = rows["holds"]
    assert (holds["status"], holds["error_type"]) == ("error", "timeout")
    assert holds["reason"].startswith(
        "timed out after 2.0s: probe bad.block held matrix's event loop (a blocking call such "
        "as time.sleep in its async observe()"
    )
    assert holds["duration"] < 2 + 2 * held.GRACE + 1  # its timeout, and the watch's grace


def test_serve_keeps_serving_through_a_misbehaving_plugin(cli, tmp_path) -> None:
    import urllib.error
    import urllib.request

    env = misbehaving(tmp_path)
    process = cli.popen(
        "serve", "spec.yaml", "--listen", "127.0.0.1:0", "--interval", "1s", env=env
    )
    try:
        assert process.stdout is not None
        base = process.stdout.readline().split()[-1].rsplit("/", 1)[0]
        runs = [process.stdout.readline() for _ in range(3)]  # three runs, one line each
        assert all(" run " in line and " BLOCKED " in line for line in runs), runs
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
            raise AssertionError("a BLOCKED run must answer 503")
        except urllib.error.HTTPError as answer:
            assert answer.code == 503
            assert json.loads(answer.read())["verdict"] == "BLOCKED"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
