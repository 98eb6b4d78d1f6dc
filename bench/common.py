"""Helpers the benchmarks share: running and timing commands, their memory, and RESULTS.md."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
PAGE = os.sysconf("SC_PAGE_SIZE")


def matrix_argv() -> list[str]:
    """The installed `matrix` script (what users run), else `python -m matrix`."""
    found = shutil.which("matrix")
    return [found] if found else [sys.executable, "-m", "matrix"]


def timed(fn: Callable[[], None], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def run_quietly(
    argv: list[str],
    expect_codes: tuple[int, ...] = (0,),
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    started: Callable[[int], None] | None = None,
) -> str:
    """Run `argv` to the end and return its stdout when `capture`, else discard it; exit with
    its stderr when it exits otherwise. It runs in its own session, so a timeout or Ctrl-C kills
    its whole process group; `started` is told its pid."""
    try:
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        ) as proc:
            if started:
                started(proc.pid)
            try:
                out, err = proc.communicate(timeout=timeout)
            except BaseException:  # the timeout, or Ctrl-C (which the new session does not get)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{shlex.join(argv)} timed out after {timeout} s") from None
    if proc.returncode not in expect_codes:
        tail = (err.decode(errors="replace") or (out or b"").decode(errors="replace"))[-2000:]
        raise SystemExit(f"{shlex.join(argv)} exited {proc.returncode}: {tail}")
    return (out or b"").decode(errors="replace")


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs (nproc), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()} "
        f"{platform.machine()}"
    )


def write_section(name: str, text: str) -> None:
    """Put `text` between `<!-- begin NAME -->` and `<!-- end NAME -->` in RESULTS.md:
    in place of the block already there, else appended; the rest of the file is untouched."""
    block = f"<!-- begin {name} -->\n{text.strip()}\n<!-- end {name} -->"
    old = RESULTS.read_text() if RESULTS.exists() else ""
    pattern = re.compile(
        rf"^<!-- begin {re.escape(name)} -->$.*?^<!-- end {re.escape(name)} -->$",
        re.DOTALL | re.MULTILINE,
    )
    new, replaced = pattern.subn(lambda _: block, old, count=1)
    if not replaced:
        new = f"{old.rstrip()}\n\n{block}" if old.strip() else block
    RESULTS.write_text(new.rstrip() + "\n")


def publish(section: str, heading: str, how: str, rows: list[str], write: bool) -> None:
    """Print a result table under its heading and how it was measured; with `write`, also
    put it in RESULTS.md as `section`."""
    text = "\n".join([f"## {heading}", "", how, "", *rows])
    print(text)
    if write:
        write_section(section, text)


class Proc(NamedTuple):
    parent: int
    name: str
    start: str
    rss: int


def _read(path: str) -> bytes:
    """A small /proc file in one read (cheaper than open(); the sampler reads hundreds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _stat(pid: str) -> Proc | None:
    """A process from /proc/PID/stat; None once it has gone."""
    try:
        head, tail = _read(f"/proc/{pid}/stat").rsplit(b")", 1)
    except (OSError, ValueError):
        return None
    fields = tail.split()
    name = head.split(b"(", 1)[1].decode(errors="replace")
    return Proc(int(fields[1]), name, fields[19].decode(), int(fields[21]) * PAGE)


def _processes() -> dict[str, Proc]:
    return {pid: stat for pid in os.listdir("/proc") if pid.isdigit() and (stat := _stat(pid))}


def _cmdline(pid: str) -> str:
    try:
        return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class PeakRss:
    """Samples, every `interval` s in a thread, the summed RSS of a process tree (the pid given
    to `follow`, and everything below it) plus every process whose command line contains
    `marker` (an ssh ControlMaster daemonizes and leaves the tree), sshd excepted: that is
    the server side. Summing RSS counts shared pages once per process, as `ps` does.

        with PeakRss(marker=str(run_dir)) as rss:
            run_quietly(argv, started=rss.follow)
        rss.peak_mb
    """

    def __init__(self, marker: str, interval: float = 0.025):
        self.marker = marker
        self.interval = interval
        self.root: int | None = None
        self.peak = 0
        self._marked: dict[tuple[str, str], bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    def follow(self, pid: int) -> None:
        self.root = pid

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, sum(proc.rss for proc in self._tool().values()))

    def _tool(self) -> dict[str, Proc]:
        """The processes of the tool now: the tree below the root, and the marked ones."""
        procs = _processes()
        children: dict[int, list[str]] = {}
        for pid, proc in procs.items():
            children.setdefault(proc.parent, []).append(pid)
        tree: set[str] = set()
        pending = [str(self.root)] if self.root and str(self.root) in procs else []
        while pending:
            pid = pending.pop()
            tree.add(pid)
            pending += children.get(int(pid), [])
        return {
            pid: proc
            for pid, proc in procs.items()
            if proc.name != "sshd" and (pid in tree or self._is_marked(pid, proc.start))
        }

    def _is_marked(self, pid: str, start: str) -> bool:
        """Whether the command line holds the marker, once per process (pid and start time)."""
        key = (pid, start)
        if key not in self._marked:
            self._marked[key] = self.marker in _cmdline(pid)
        return self._marked[key]


def end_marked(marker: str, grace: float = 5.0) -> int:
    """Terminate the processes (sshd and this one excepted) whose command line holds `marker`,
    e.g. ssh ControlMasters left behind by a run; SIGKILL what is still there after `grace` s.
    Returns how many there were."""
    found = {
        pid: proc.start
        for pid, proc in _processes().items()
        if proc.name != "sshd" and int(pid) != os.getpid() and marker in _cmdline(pid)
    }

    def alive() -> list[str]:
        return [pid for pid, start in found.items() if (proc := _stat(pid)) and proc.start == start]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), sig)
        deadline = time.monotonic() + grace
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    return len(found)
