"""matrix's host agent: the program agent.py starts on an SSH host, over one session.

It runs each requested argv as its own process group and answers with exit code and output,
so a host's tasks cost one login (shell start-up included) instead of one each. Stdlib only,
Python >= 3.8; its source arrives on stdin and nothing is written to the host. Frames both
ways are a 4-byte big-endian length and a JSON object. When stdin closes (matrix finished or
the connection died) every process it started is killed: no orphans on the host.

Never imported by matrix itself: its text is sent to the host.
"""

import base64
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import traceback

PYTHON = sys.argv[2]  # the target's `python` as configured: requests for it use this one
LIMIT = int(sys.argv[3])  # bytes kept per stream, plus one that flags the cut
MARKER = sys.argv[4].encode()  # printed before the first frame, after any login-shell banner

_send_lock = threading.Lock()
_children = {}
_compiled = {}
# Imported once here so that each forked script finds them loaded (the built-in scripts' own
# imports); a missing one is the script's business, not the agent's.
WARM = ("glob", "grp", "hashlib", "platform", "pwd", "re", "shutil", "socket", "stat")
for _name in WARM:
    with contextlib.suppress(ImportError):
        __import__(_name)


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
    for chunk in iter(lambda: stream.read(65536), b""):
        if len(sink) <= LIMIT:
            sink += chunk[: LIMIT + 1 - len(sink)]


def feed(stream, data):
    with contextlib.suppress(OSError):  # the process may exit without reading all its input
        stream.write(data)
        stream.close()


def kill(ident):
    pid = _children.get(ident)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def execute(request):
    argv = request["argv"]
    data = request.get("input")
    data = base64.b64decode(data) if data is not None else None
    if argv[:2] == [PYTHON, "-"] and data is not None and hasattr(os, "fork"):
        pid, streams, reap = fork_script(data, argv[2:], request.get("env") or {})
    else:
        pid, streams, reap = spawn(argv, request.get("env"), data)
    _children[request["id"]] = pid
    try:
        out, err = bytearray(), bytearray()
        reader = threading.Thread(target=drain, args=(streams[1], err))
        reader.start()
        drain(streams[0], out)
        reader.join()
        code = reap()
    finally:
        _children.pop(request["id"], None)
        for stream in streams:
            stream.close()
    return {"code": code, "out": encode(out), "err": encode(err)}


def spawn(argv, env, data):
    """The request's program in a process group of its own."""
    if argv and argv[0] == PYTHON:
        argv = [sys.executable, *argv[1:]]
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, **env) if env else None,
        start_new_session=True,
    )
    if data is not None:
        threading.Thread(target=feed, args=(child.stdin, data), daemon=True).start()
    return child.pid, (child.stdout, child.stderr), child.wait


def fork_script(source, args, env):
    """`python - ARGS` with the script on stdin, as a fork of this interpreter: the same
    python, without its start-up (~20 ms a probe, the bulk of a fleet run's remote work).
    Compiled once per distinct program here, so every fork inherits the code object (each
    fork still compiles a probe's prelude, libraries and script: see matrix/remote.py)."""
    code = _compiled.get(source)
    if code is None:
        code = _compiled[source] = compile(source, "<stdin>", "exec")
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


def run_script(code_object, args, env, out_w, err_w):
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
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.update(env)
        sys.argv = ["-", *args]
        code = 0
        exec(code_object, {"__name__": "__main__"})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
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


def main():
    sys.stdout.buffer.write(MARKER)
    send({"python": sys.executable, "pid": os.getpid()})
    while True:
        request = receive()
        if request is None:
            break
        if "kill" in request:
            kill(request["kill"])
        else:
            threading.Thread(target=serve, args=(request,), daemon=True).start()
    for ident in list(_children):
        kill(ident)


main()
