# Observe the network from the target (params["op"]: port | http | http.load | http.trace |
# net.bandwidth).
import http.server
import os
import re
import socket
import threading
import time

from _http import (
    FAILED,
    HEADER_BYTES,
    header_facts,
    ms,
    open_url,
    request_failed,
    tls,
    why,
)
from _prelude import GB, ObserveError, by_op, percentile
from _procs import Server, growth, snapshot


def observe_port(params):
    host, port, mode = params["host"], params["port"], params["mode"]
    timeout = params["connect_timeout"]
    facts = {"host": host, "port": port, "mode": mode, "privileged": port < 1024}
    started = time.perf_counter()
    try:
        if mode == "open":
            socket.create_connection((host, port), timeout=timeout).close()
            facts["latency_ms"] = ms(started)
        else:  # bind the way a server without SO_REUSEADDR would
            found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            family, kind, proto, _, address = found[0]
            with socket.socket(family, kind, proto) as sock:
                sock.bind(address)
        facts["ok"] = True
    except OSError as exc:
        facts.update(ok=False, error=why(exc, timeout))
    facts[mode] = facts["ok"]
    return facts


def observe_http(params):
    limit = params["max_bytes"]
    started = time.perf_counter()
    try:
        response, hops = open_url(params, tls(params["verify_tls"]))
        with response:
            body = response.read(limit + 1)
    except FAILED as exc:
        raise request_failed(params, exc) from None
    headers, cut = header_facts(response)
    truncated = len(body) > limit
    incomplete = {}
    if truncated:
        incomplete["body"] = (
            f"the body is longer than max_bytes ({limit} bytes): only its start was read"
        )
    if cut:
        incomplete["headers"] = f"over {HEADER_BYTES} bytes of headers: only the first were kept"
    return {
        "url": params["url"],
        "status": response.getcode(),
        "reason": response.reason,
        "headers": headers,
        "latency_ms": ms(started),
        "body": body[:limit].decode("utf-8", "replace"),
        "truncated": truncated,
        "redirects": hops,
        "final_url": hops[-1] if hops else params["url"],
        "incomplete": incomplete,
    }


def observe_bandwidth(params):
    timeout, budget, source = params["timeout"], params["seconds"], params["source"]
    get = {"url": params["url"], "method": "GET", "timeout": timeout}
    started = time.perf_counter()
    try:
        response, _ = open_url(get, tls(params["verify_tls"]))
        with response:
            if response.getcode() >= 300:
                raise ObserveError(f"GET {source} answered {response.getcode()} {response.reason}")
            first = time.perf_counter()
            got, complete = 0, False
            while time.perf_counter() - first < budget:
                chunk = response.read(1 << 16)
                if not chunk:
                    complete = True
                    break
                got += len(chunk)
            ended = time.perf_counter()
    except FAILED as exc:
        raise request_failed({**get, "url": source}, exc) from None
    seconds = max(ended - first, 1e-6)
    mbps = round(got * 8 / seconds / 1e6, 1)  # the estimate uses the speed as shown
    facts = {
        "source": source,
        "bytes": got,
        "seconds": round(seconds, 3),
        "latency_ms": round((first - started) * 1000, 2),
        "mbps": mbps,
        "complete": complete,
    }
    size = params.get("size_gb")
    if size:
        hours = size * GB * 8 / max(mbps * 1e6, 1) / 3600
        facts.update(size_gb=size, hours=round(hours, 2))
        facts["estimate"] = f"Speed {mbps:.0f}Mbps, will take {hours:.1f}h for {size:g}GB"
    return facts


def _send(params, context):
    """One request: (its final status, or "error" when nothing answered, milliseconds to the
    end of its body, why it failed). A redirect counts by where it ends: a 3xx that was not
    followed (a loop, another scheme) is its status."""
    started = time.perf_counter()
    try:
        response, _ = open_url(params, context)
        with response:
            while response.read(1 << 16):
                pass
        return str(response.getcode()), ms(started), None
    except FAILED as exc:
        code = getattr(exc, "code", None)  # a refused redirect: answered, with a 3xx
        return (str(code) if code else "error"), ms(started), why(exc, params["timeout"])


def _phase(params, context, concurrency, count, control):
    """`count` requests, `concurrency` at a time: latencies, statuses, throughput, and the
    tail ratio p95 / p50. Each request is followed by one to `control`, a server in this
    process that answers at once: its spread (p95 - p50) is what the machine's load and
    the client add to any server, and only the server's spread beyond it counts as its tail
    (with p50 taken as at least `tail_floor_ms`)."""
    answers, controls = [], []
    lock = threading.Lock()
    left = [count]
    plain = {"url": control, "method": "GET", "timeout": params["timeout"]}

    def worker():
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            answer = _send(params, context)
            beside = _send(plain, context)
            with lock:
                answers.append(answer)
                controls.append(beside[1])

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = max(time.perf_counter() - started, 1e-9)
    ordered, controls = sorted(took for _, took, _ in answers), sorted(controls)
    statuses = {}
    for status, _, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    p50, p95 = percentile(ordered, 50), percentile(ordered, 95)
    c50, c95 = percentile(controls, 50), percentile(controls, 95)
    tail = max(0.0, (p95 - p50) - (c95 - c50))
    return {
        "concurrency": concurrency,
        "requests": count,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1],
        "control_p50_ms": c50,
        "control_p95_ms": c95,
        "p95_over_p50": round((p50 + tail) / max(p50, params["tail_floor_ms"], 1e-9), 2),
        "rps": round(count / seconds, 1),
        "statuses": statuses,
        "first_error": next((w for _, _, w in answers if w), None),
    }


def observe_load(params):
    context = tls(params["verify_tls"])
    server = Server(params["process"]) if params.get("process") else None
    failed = _send(params, context)[2]  # connects and warms the server: not counted
    if failed:
        raise ObserveError(f"{params['method']} {params['url']} failed: {failed}")
    count, concurrency = params["requests"], params["concurrency"]
    control = _listen(0, socket.gethostname())
    try:
        url = f"http://127.0.0.1:{control.server_address[1]}/"
        if concurrency > 1:  # every worker of a pre-fork server warms up before memory is read
            _phase(params, context, concurrency, concurrency, url)
        before = snapshot(server) if server else None
        sequential = _phase(params, context, 1, count, url)
        concurrent = _phase(params, context, concurrency, count, url) if concurrency > 1 else None
    finally:
        control.shutdown()
        control.server_close()
    facts = {"url": params["url"], "sequential": sequential, "concurrent": concurrent}
    if server:
        facts.update(pid=server.root, cgroup=server.cgroup, **growth(before, snapshot(server)))
    return facts


TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _context(value):
    """(trace id, parent id) of a W3C traceparent value; None when it is not one (an all-zero
    id is invalid by the spec, and version ff is forbidden)."""
    found = TRACEPARENT.fullmatch((value or "").strip().lower())
    if not found or found[1] == "ff" or set(found[2]) == {"0"} or set(found[3]) == {"0"}:
        return None
    return found[2], found[3]


def _seen(value, trace_id, span_id):
    """What a header value says of our trace: a traceparent's ids, or (a header such as
    x-trace-id) whether it holds the trace id at all."""
    if value is None:
        return {"value": None, "trace_id": None, "same_trace": False, "new_span": None}
    parsed = _context(value)
    if parsed is None:
        return {"value": value, "trace_id": None, "same_trace": trace_id in value.lower(),
                "new_span": None}  # fmt: skip
    return {"value": value, "trace_id": parsed[0], "same_trace": parsed[0] == trace_id,
            "new_span": parsed[1] != span_id}  # fmt: skip


class _Downstream(http.server.ThreadingHTTPServer):
    """Stands where the service's next hop would be, and keeps what each call carried."""

    daemon_threads = True
    calls = None

    def __init__(self, address):
        self.calls = []
        self.arrived = threading.Event()
        super().__init__(address, _Recorder)


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.calls.append((self.command, self.path, self.headers.get("traceparent")))
        self.server.arrived.set()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


def _listen(port, host):
    try:
        server = _Downstream(("127.0.0.1", port))
    except OSError as exc:
        raise ObserveError(
            f"cannot listen on 127.0.0.1:{port} on {host} for the service's downstream call: "
            f"{why(exc, 0)} — pick a free downstream_port and point the service's next hop "
            "there"
        ) from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def observe_trace(params):
    """Send a request carrying a fresh traceparent; see whether the trace comes back in the
    response header and reaches the downstream listener."""
    host = socket.gethostname()
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    sent = f"00-{trace_id}-{span_id}-{'01' if params['sampled'] else '00'}"
    headers = {**(params.get("headers") or {}), "traceparent": sent}
    port = params.get("downstream_port")
    server = _listen(port, host) if port else None
    try:
        reply = observe_http({**params, "headers": headers, "max_bytes": 0})
        facts = {"url": params["url"], "status": reply["status"], "traceparent": sent,
                 "trace_id": trace_id, "response": None, "downstream": None}  # fmt: skip
        name = params.get("response_header")
        if name:
            facts["response"] = {"header": name, **_seen(reply["headers"].get(name.lower()),
                                                         trace_id, span_id)}  # fmt: skip
        if server:
            server.arrived.wait(params["downstream_wait"])
            calls = list(server.calls)
            # ours among them (another client's requests may reach the hop too), else the
            # first that carried any trace, else the first
            ours = [c for c in calls if c[2] and trace_id in c[2].lower()]
            traced = ours or [c for c in calls if c[2]] or calls or [(None,) * 3]
            first = traced[0]
            seen = _seen(first[2], trace_id, span_id)
            facts["downstream"] = {"port": port, "calls": len(calls), "method": first[0],
                                   "path": first[1], **seen}  # fmt: skip
    finally:
        if server:
            server.shutdown()
            server.server_close()
    return facts


observe = by_op(
    {
        "port": observe_port,
        "http": observe_http,
        "http.load": observe_load,
        "http.trace": observe_trace,
        "net.bandwidth": observe_bandwidth,
    }
)
