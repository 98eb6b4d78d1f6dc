"""matrix's host agent: the program matrix/agent.py starts on an SSH host, over one session.

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

MAGIC = b"\x00matrix-agent\x00"
PYTHON = sys.argv[2]  # the target's `python` as configured: requests for it use this one
LIMIT = int(sys.argv[3])  # bytes kept per stream, plus one that flags the cut

_send_lock = threading.Lock()
_children = {}


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
    child = _children.get(ident)
    if child is not None:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)


def execute(request):
    argv = request["argv"]
    if argv and argv[0] == PYTHON:
        argv = [sys.executable, *argv[1:]]
    env = dict(os.environ, **request["env"]) if request.get("env") else None
    data = request.get("input")
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    _children[request["id"]] = child
    out, err = bytearray(), bytearray()
    helpers = [threading.Thread(target=drain, args=(child.stderr, err))]
    if data is not None:
        helpers.append(threading.Thread(target=feed, args=(child.stdin, base64.b64decode(data))))
    for helper in helpers:
        helper.start()
    drain(child.stdout, out)
    for helper in helpers:
        helper.join()
    code = child.wait()
    _children.pop(request["id"], None)
    return {
        "code": code,
        "out": base64.b64encode(out).decode(),
        "err": base64.b64encode(err).decode(),
    }


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
    sys.stdout.buffer.write(MAGIC)
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
