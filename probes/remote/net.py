# Observe the network from the target (params["op"]: port | http | http.load | http.trace |
# net.bandwidth).
import http.client
import http.server
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

from _prelude import GB, ObserveError, by_op, percentile


def _why(exc, timeout):
    """A short human cause for a failed connection: "connection refused", "timed out"."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    if isinstance(exc, socket.timeout):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        cause = getattr(exc, "verify_message", None) or exc.reason or exc
        return f"TLS error: {cause} (verify_tls: false accepts self-signed certificates)"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:  # "Connection refused" → "connection refused"
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc)  # as it was raised: it may quote a URL or header that must stay maskable


def _ms(started):
    return round((time.perf_counter() - started) * 1000, 2)


def observe_port(params):
    host, port, mode = params["host"], params["port"], params["mode"]
    timeout = params["connect_timeout"]
    facts = {"host": host, "port": port, "mode": mode, "privileged": port < 1024}
    started = time.perf_counter()
    try:
        if mode == "open":
            socket.create_connection((host, port), timeout=timeout).close()
            facts["latency_ms"] = _ms(started)
        else:  # bind the way a server without SO_REUSEADDR would
            found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            family, kind, proto, _, address = found[0]
            with socket.socket(family, kind, proto) as sock:
                sock.bind(address)
        facts["ok"] = True
    except OSError as exc:
        facts.update(ok=False, error=_why(exc, timeout))
    facts[mode] = facts["ok"]
    return facts


def _request(params):
    data = params["body"].encode() if params.get("body") is not None else None
    return urllib.request.Request(
        params["url"], data=data, headers=params.get("headers") or {}, method=params["method"]
    )


def _tls(verify):
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def observe_http(params):
    timeout, limit = params["timeout"], params["max_bytes"]
    started = time.perf_counter()
    try:
        try:
            response = urllib.request.urlopen(
                _request(params), timeout=timeout, context=_tls(params["verify_tls"])
            )
        except urllib.error.HTTPError as exc:  # 4xx/5xx still answered: report them
            response = exc
        with response:
            body = response.read(limit + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        request = f"{params['method']} {params['url']}"
        raise ObserveError(f"{request} failed: {_why(exc, timeout)}") from None
    headers = {}
    for name, value in response.headers.items():
        name = name.lower()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return {
        "url": params["url"],
        "status": response.getcode(),
        "reason": response.reason,
        "headers": headers,
        "latency_ms": _ms(started),
        "body": body[:limit].decode("utf-8", "replace"),
        "truncated": len(body) > limit,
    }


def observe_bandwidth(params):
    timeout, budget, source = params["timeout"], params["seconds"], params["source"]
    request = urllib.request.Request(params["url"])
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(
            request, timeout=timeout, context=_tls(params["verify_tls"])
        ) as response:
            first = time.perf_counter()
            got, complete = 0, False
            while time.perf_counter() - first < budget:
                chunk = response.read(1 << 16)
                if not chunk:
                    complete = True
                    break
                got += len(chunk)
            ended = time.perf_counter()
    except urllib.error.HTTPError as exc:
        raise ObserveError(f"GET {source} answered {exc.code} {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ObserveError(f"GET {source} failed: {_why(exc, timeout)}") from None
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
    """One request: (status, or "error" when nothing answered, milliseconds to the end of
    its body, why it failed)."""
    started = time.perf_counter()
    try:
        try:
            response = urllib.request.urlopen(
                _request(params), timeout=params["timeout"], context=context
            )
        except urllib.error.HTTPError as exc:  # 4xx/5xx answered: counted by status
            response = exc
        with response:
            while response.read(1 << 16):
                pass
        return str(response.getcode()), _ms(started), None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return "error", _ms(started), _why(exc, params["timeout"])


def _phase(params, context, concurrency):
    """`requests` requests, `concurrency` at a time: latencies, statuses, throughput."""
    count = params["requests"]
    answers = []
    lock = threading.Lock()
    left = [count]

    def worker():
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
            answer = _send(params, context)
            with lock:
                answers.append(answer)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = max(time.perf_counter() - started, 1e-9)
    ordered = sorted(ms for _, ms, _ in answers)
    statuses = {}
    for status, _, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "concurrency": concurrency,
        "requests": count,
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1],
        "rps": round(count / seconds, 1),
        "statuses": statuses,
    }


def _process(spec, host):
    """The pid of the server process `spec` names: a pid file's path, else a process name
    (its executable's name, or a word of its command line)."""
    if spec.startswith("/"):
        try:
            with open(spec) as handle:
                return int(handle.read().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise ObserveError(f"cannot read a pid from {spec} on {host}: {exc}") from None
    mine = os.getpid()
    for entry in sorted(os.listdir("/proc"), key=lambda name: (len(name), name)):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                comm = handle.read().strip()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                words = handle.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if comm == spec or any(os.path.basename(word) == spec for word in words if word):
            return int(entry)
    raise ObserveError(
        f"no process named {spec!r} runs on {host} — give the server's process name or its "
        "pid file's path as `process`"
    )


def _rss_mb(pid, host):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    raise ObserveError(f"process {pid} on {host} is gone: the server died under load")


def observe_load(params):
    host = socket.gethostname()
    context = _tls(params["verify_tls"])
    pid = _process(params["process"], host) if params.get("process") else None
    before = _rss_mb(pid, host) if pid else None
    why = _send(params, context)[2]  # connects and warms the server: not counted
    if why:
        raise ObserveError(f"{params['method']} {params['url']} failed: {why}")
    sequential = _phase(params, context, 1)
    concurrency = params["concurrency"]
    concurrent = _phase(params, context, concurrency) if concurrency > 1 else None
    after = _rss_mb(pid, host) if pid else None
    facts = {"url": params["url"], "sequential": sequential, "concurrent": concurrent}
    if pid:
        growth = (after - before) / before * 100 if before else None
        facts.update(pid=pid, rss_before_mb=before, rss_after_mb=after,
                     rss_growth_pct=round(growth, 1) if growth is not None else None)  # fmt: skip
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
            f"{_why(exc, 0)} — pick a free downstream_port and point the service's next hop "
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
            first = next((c for c in calls if c[2]), calls[0]) if calls else (None,) * 3
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
