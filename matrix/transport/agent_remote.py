"""matrix's host agent: the program agent.py starts on an SSH host, over one session.

It runs each requested argv as its own process group and answers with exit code and output,
so a host's tasks cost one login (shell start-up included) instead of one each. Stdlib only,
Python >= 3.8; its source arrives on stdin and nothing is written to the host. Frames both
ways are a 4-byte big-endian length and a JSON object.

Nothing a task starts outlives it: when its program ends (or is killed for a timeout), the
agent kills the rest of its process group and every descendant that left it — adopted as
orphans (the agent is a child subreaper) and known by the task's mark in their environment.
When stdin closes (matrix finished or the connection died) the agent does the same for every
task still running, then sweeps whatever of its own is left, and exits. And when the agent
itself dies by any means (SIGKILL included), its keeper does it: the agent is a fork of the
process the session started, which stays behind as a subreaper, `matrix-keeper` in its
command line, adopts every process the agent leaves and sweeps them (`keep`).

The local transport imports the containment part (Claim to subreaper) to do the same on the
machine running matrix; only run as a program does this module serve requests.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable

# --- containment: shared with matrix/transport/local.py -----------------------------------

MARK = "MATRIX_PROBE"  # "<token>.<task>." in each task's environment, inherited by descendants
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
UNSURE_WAIT = 1.0  # seconds to keep sweeping while a child's environment cannot be read yet
# (a process in the middle of an exec; on a loaded machine that can take well over 0.1 s)


class Claim:
    """The processes a sweep may kill: those in `sessions` (the task's own, and each stray's
    once found), those whose mark starts with `mark`, and, with `since` (a boot time in clock
    ticks, for a run's last sweep), unmarked ones started after it: a process that both left
    its session and cleared its environment has no other sign of where it came from.
    `unsure`: the last sweep saw a live child whose environment it could not read, which is
    how a process looks in the middle of an exec; a moment later its mark shows."""

    def __init__(self, sessions: Iterable[int], mark: str, since: int | None = None) -> None:
        self.sessions = set(sessions)
        self.mark = mark.encode()
        self.since = since
        self.unsure = False

    def covers(self, session: int, start: int, mark: bytes | None) -> bool:
        if session in self.sessions or (mark and mark.startswith(self.mark)):
            return True
        return self.since is not None and start >= self.since and not mark


def subreaper(on: bool) -> bool:
    """Make this process adopt its orphaned descendants (Linux's PR_SET_CHILD_SUBREAPER), so a
    process that leaves its task's session still becomes a child here, where a sweep finds it.
    Returns the previous setting; elsewhere (no prctl) nothing changes and it returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int()
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
            return False
        libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
        return bool(previous.value)
    except (ImportError, OSError, AttributeError):
        return False


def boot_ticks() -> int:
    """Now, in the unit of /proc/PID/stat's start time (clock ticks since boot)."""
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return int(time.clock_gettime(clock) * os.sysconf("SC_CLK_TCK"))


def children() -> list[int]:
    """This process's children. Orphans are adopted by its main thread, so that thread's list
    has them; without that file (CONFIG_PROC_CHILDREN off) every process's parent is read."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", "rb") as listing:
            return [int(pid) for pid in listing.read().split()]
    except FileNotFoundError:
        pass
    except OSError:
        return []
    found = []
    for name in _pids():
        info = _stat(int(name))
        if info is not None and info[0] == me:
            found.append(int(name))
    return found


def _pids() -> list[str]:
    try:
        return [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc: process groups are all there is
        return []


def _stat(pid: int) -> tuple[int, bool, int, int] | None:
    """(parent, alive (not a zombie), session, start time) of a process; None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0] != b"Z", int(fields[3]), int(fields[19])


def start_time(pid: int) -> int | None:
    """When a live process started, in clock ticks since boot (with its pid, a name no later
    process can take); None once it is gone."""
    found = _stat(pid)
    return found[3] if found and found[1] else None


def _mark(pid: int) -> bytes | None:
    """The process's mark; b"" when it has none, None when its environment cannot be read
    (empty: a zombie's, one cleared, one in the middle of an exec; another user's)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            entries = environ.read()
    except OSError:
        return None
    if not entries:
        return None
    prefix = MARK.encode() + b"="
    for entry in entries.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :]
    return b""


def killpg(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


def kill_strays(claim: Claim, spare: Collection[int] = ()) -> list[int]:
    """SIGKILL each child of this process (adopted orphans and zombies included) that `claim`
    covers, except `spare` (live task leaders, reaped by their own waiters); returns their
    pids, to reap. This process's own session is never claimed: no task's process is in it."""
    own = os.getsid(0)
    killed = []
    claim.unsure = False
    for pid in children():
        info = None if pid in spare else _stat(pid)
        if info is None or info[2] == own:
            continue
        _, alive, session, start = info
        mark = _mark(pid)
        if not claim.covers(session, start, mark):
            claim.unsure |= alive and mark is None
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        claim.sessions.add(session)
        killed.append(pid)
    return killed


def settle(claim: Claim, killed: list[int], spare: Collection[int] = ()) -> None:
    """Reap what was killed, then sweep again, until a sweep finds nothing (each death hands
    its own children to this process) and no child is left unjudged. Blocks meanwhile."""
    deadline = time.monotonic() + UNSURE_WAIT
    while killed or (claim.unsure and time.monotonic() < deadline):
        for pid in killed:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if not killed:
            time.sleep(0.001)
        killed = kill_strays(claim, spare)


def end_task(leader: int, claim: Claim, spare: Collection[int] = ()) -> list[int]:
    """After a task's leader is reaped: kill the rest of its group and the strays the claim
    covers; returns the pids to `settle`."""
    if leader not in spare:  # its number, free again, may already lead another task
        killpg(leader)
    return kill_strays(claim, spare)


# --- the agent ----------------------------------------------------------------------------

GRACE = 2.0  # seconds a task's output may still flow once its processes are gone
_send_lock = threading.Lock()
_children: dict[int, int] = {}
_compiled: dict[bytes, object] = {}
_sources: dict[tuple, object] = {}  # (source, filename, mode) of a program's modules: code
_compile = compile
MAX_COMPILED = 64
_settings = {"python": sys.executable, "limit": 1 << 20, "token": ""}
# Imported once at start so that each forked script finds them loaded (the built-in scripts'
# own imports); a missing one is the script's business, not the agent's.
WARM = ("glob", "grp", "hashlib", "platform", "pwd", "re", "shutil", "socket", "stat")


def send(message):
    data = json.dumps(message).encode()
    with _send_lock:
        sys.stdout.buffer.write(struct.pack(">I", len(data)) + data)
        sys.stdout.buffer.flush()


def receive():
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        return None
    return json.loads(sys.stdin.buffer.read(struct.unpack(">I", head)[0]))


def drain(stream, sink):
    """Read a pipe to its end (then close it), keeping LIMIT bytes plus one; each chunk as it
    comes, so what arrived is in `sink` even if the end never does."""
    limit = _settings["limit"]
    with stream:
        for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
            if len(sink) <= limit:
                sink += chunk[: limit + 1 - len(sink)]


def feed(stream, data):
    with contextlib.suppress(OSError):  # the process may exit without reading all its input
        stream.write(data)
        stream.close()


def kill(ident):
    pid = _children.get(ident)
    if pid is not None:
        killpg(pid)


def execute(request):
    argv = request["argv"]
    data = request.get("input")
    data = base64.b64decode(data) if data is not None else None
    mark = f"{_settings['token']}.{request['id']}."
    env = dict(request.get("env") or {}, **{MARK: mark})
    if argv[:2] == [_settings["python"], "-"] and data is not None and hasattr(os, "fork"):
        pid, streams, reap = fork_script(data, argv[2:], env)
    else:
        pid, streams, reap = spawn(argv, env, data)
    _children[request["id"]] = pid
    out, err = bytearray(), bytearray()
    readers = [_thread(drain, stream, sink) for stream, sink in zip(streams, (out, err))]
    try:
        code = reap()
    finally:
        _children.pop(request["id"], None)
        claim, spare = Claim([pid], mark), set(_children.values())
        settle(claim, end_task(pid, claim, spare), spare)
    for reader in readers:  # a writer nothing could claim may hold a pipe: stop waiting
        reader.join(GRACE)
    return {"code": code, "out": encode(bytes(out)), "err": encode(bytes(err))}


def _thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def spawn(argv, env, data):
    """The request's program in a process group of its own."""
    if argv and argv[0] == _settings["python"]:
        argv = [sys.executable, *argv[1:]]
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, **env),
        start_new_session=True,
    )
    if data is not None:
        _thread(feed, child.stdin, data)
    return child.pid, (child.stdout, child.stderr), child.wait


def fork_script(source, args, env):
    """`python - ARGS` with the script on stdin, as a fork of this interpreter: the same
    python, without its start-up (~20 ms a probe, the bulk of a fleet run's remote work).
    A program is its body (the same bytes for every task of a script) and a last line, the
    entry call that carries the task's params (matrix/remote.py): the body, and every source
    it compiles as it runs (the prelude, libraries and script), is compiled once here, so
    every fork inherits the code objects and only the entry is compiled per task."""
    body, entry = split_entry(source)
    preload(preloads(body))
    code = _compiled.get(body)
    if code is None:
        if len(_compiled) >= MAX_COMPILED:  # a run of many distinct programs: start afresh
            _compiled.clear()
            _sources.clear()
        code = _compiled[body] = compile(body, "<stdin>", "exec")
        for key in literal_compiles(body):
            _sources[key] = compile(*key)
    code = (code, compile(entry, "<stdin>", "exec"))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        run_script(code, args, env, out_w, err_w)
    os.close(out_w)
    os.close(err_w)

    def reap():
        status = os.waitpid(pid, 0)[1]
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    return pid, (os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb")), reap


ENTRY = b"__import__('_prelude').main("  # how matrix/remote.py's programs end
PRELOAD = b"# preload: "  # a program's second line naming its slow imports (matrix/remote.py)


def preloads(source):
    """The modules a matrix program asks to find imported (torch): [] for any other."""
    lines = source.split(b"\n", 2)
    if len(lines) < 3 or not lines[1].startswith(PRELOAD):
        return []
    return lines[1][len(PRELOAD) :].decode().split()


def preload(names):
    """Import them here, once: every script forked after finds them loaded. One that fails
    to import is the script's to report, as it would be without the agent."""
    for name in names:
        if name not in sys.modules:
            with contextlib.suppress(Exception):
                __import__(name)


def literal_compiles(body):
    """The (source, filename, mode) of each `compile` call with three literal strings in a
    program: matrix/remote.py compiles every module and the script that way. Read from its
    syntax tree, so nothing of the program runs here."""
    import ast  # here: only an agent that is sent programs pays for it

    for node in ast.walk(ast.parse(body)):
        args = getattr(node, "args", None)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "compile"
            and not node.keywords
            and len(args) == 3
            and all(isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in args)
        ):
            yield tuple(arg.value for arg in args)


def compile_known(source, filename, mode, *args, **kwargs):
    """`compile` in a forked script: what the agent compiled already is handed over as is."""
    known = None
    if not args and not kwargs and type(source) is str:
        known = _sources.get((source, filename, mode))
    return known if known is not None else _compile(source, filename, mode, *args, **kwargs)


def split_entry(source):
    """(body, entry call) of a matrix program; any other program is all body."""
    body, newline, entry = source.rstrip(b"\n").rpartition(b"\n")
    if not entry.startswith(ENTRY):
        return source, b""
    return body + newline, entry + b"\n"


def run_script(code_objects, args, env, out_w, err_w):
    """In the forked child: become `python - ARGS` in a session of its own, never return."""
    code = 1
    try:
        os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        close_inherited()
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (as python's own)
        os.environ.update(env)
        builtins.compile = compile_known
        sys.argv = ["-", *args]
        code = 0
        namespace = {"__name__": "__main__"}
        for code_object in code_objects:
            exec(code_object, namespace)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback  # here: the agent's start does not pay for it

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def close_inherited():
    """Drop every descriptor but 0-2: another request's pipe held open here would keep its
    reader waiting for this script to end."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 4096)
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def encode(data):
    return base64.b64encode(data).decode()


def serve(request):
    """Answer one request, also when its program cannot start: every request gets a reply."""
    try:
        reply = execute(request)
    except OSError as exc:
        reply = {"unstarted": exc.strerror or str(exc)}
    except Exception as exc:
        reply = {"error": f"agent: {type(exc).__name__}: {exc}"}
    reply["id"] = request["id"]
    send(reply)


KEEPER = "matrix-keeper"
# the keeper's program: this one, handed over in the environment (nothing written to the host)
KEEPER_BOOT = "import os; SOURCE = os.environb.pop(b'MATRIX_KEEPER'); exec(SOURCE)"


def keep(token, started):
    """Fork: the child serves as the agent, in a process group of its own (a signal to one
    group spares the other); this process becomes its keeper, re-executed under a command
    line of its own (so whatever names the agent to kill it, `pkill -f matrix-agent`, spares
    it). Returns in the agent only; where there is no fork or no agent source, at once."""
    source = globals().get("SOURCE")
    if not isinstance(source, bytes) or not hasattr(os, "fork"):
        return
    agent = os.fork()
    if agent == 0:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        return
    with contextlib.suppress(OSError):
        os.setpgid(agent, agent)
    subreaper(True)  # kept across exec: what the agent leaves comes here from the start
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the session ends with the agent's streams, not this process's
        os.dup2(null, fd)
    argv = [sys.executable, "-c", KEEPER_BOOT, KEEPER, str(agent), token, str(started)]
    environ = dict(os.environb, MATRIX_KEEPER=source) if os.supports_bytes_environ else None
    with contextlib.suppress(OSError, TypeError):
        os.execve(sys.executable, argv, environ)
    keeper(agent, token, started)  # could not re-execute: keep under the agent's name


def keeper(agent, token, started):
    """Wait for the agent; once it is gone, sweep every process of its tasks (adopted here)
    as its own last sweep would, and exit as it did."""
    status = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == agent:
            break
    claim = Claim((), token + ".", since=started)
    settle(claim, kill_strays(claim))
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def warm():
    for name in WARM:
        with contextlib.suppress(ImportError):
            __import__(name)


def main(argv):
    """argv: the target's `python` as configured (requests for it run this interpreter), the
    bytes kept per stream, the marker printed before the first frame, after any banner, and
    optionally the token that starts its tasks' marks (matrix's own, on this machine, so that
    its last sweep finds what an agent that died left). Or `matrix-keeper` and what `keep`
    hands the keeper."""
    if argv[1:2] == [KEEPER]:
        keeper(int(argv[2]), argv[3], int(argv[4]))
    token = argv[5] if len(argv) > 5 else os.urandom(8).hex()  # not `secrets`: 4 ms to import
    _settings.update(python=argv[2], limit=int(argv[3]), token=token)
    started = boot_ticks()
    keep(token, started)
    subreaper(True)
    sys.stdout.buffer.write(argv[4].encode())
    send({"python": sys.executable, "pid": os.getpid()})
    warm()  # after the hello: the first requests are on their way while these import
    serving = []
    while True:
        request = receive()
        if request is None:
            break
        if "kill" in request:
            kill(request["kill"])
        else:
            serving.append(_thread(serve, request))
            serving = [thread for thread in serving if thread.is_alive()]
    for ident in list(_children):
        kill(ident)
    deadline = time.monotonic() + GRACE
    for thread in serving:
        thread.join(max(0.0, deadline - time.monotonic()))
    claim = Claim((), _settings["token"] + ".", since=started)
    settle(claim, kill_strays(claim))


if __name__ == "__main__":
    main(sys.argv)
