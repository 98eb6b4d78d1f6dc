"""`port`, `http`, `http.load`, `http.trace`, `net.bandwidth`: the network as the target
sees it, probed by probes/remote/net.py.

Connections start on the target, so `127.0.0.1` means the target's own loopback and a
firewall between the controller and the host does not skew the answer.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from matrix.probe import ProbeContext, ProbeError, ScriptProbe, probe
from matrix.redact import remember
from probes import awsapi
from probes.awsapi import AwsParams


class _Net(ScriptProbe):
    script = "net"
    libraries = ("_http", "_procs")


INCOMPLETE = (
    "{fact: why} for facts the probe could not read whole; an `expect` on one of them is an "
    "error saying so, never a pass"
)


@probe(
    "port",
    default_expect={"ok": True},
    facts={
        "host": "host as given",
        "port": "port as given",
        "mode": "open or free",
        "ok": "the port is what `mode` asks for: `open` in open mode, `free` in free mode",
        "open": "a TCP connection succeeded (mode open)",
        "free": "the port could be bound without SO_REUSEADDR (mode free)",
        "latency_ms": "milliseconds to connect, when open",
        "error": "why not ok, e.g. connection refused, address already in use",
        "privileged": "port < 1024 (binding needs root or CAP_NET_BIND_SERVICE)",
    },
)
class Port(_Net):
    """A TCP port that must accept connections (`open`) or be available to bind (`free`)."""

    port: int = Field(ge=1, le=65535)
    """TCP port number."""
    host: str = "127.0.0.1"
    """Address to connect to or bind, seen from the target."""
    mode: Literal["open", "free"] = "open"
    """open: something listens there; free: a server about to start could bind it."""
    connect_timeout: float = Field(3.0, gt=0)
    """Seconds to wait for a connection before calling the port closed."""


class HttpRequest(_Net):
    """The request params every HTTP probe shares, made from the target."""

    url: str
    """http:// or https:// URL."""
    method: str = "GET"
    """Request method."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers."""
    body: str | None = None
    """Request body, sent as UTF-8."""
    timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the connection and for each read."""
    verify_tls: bool = True
    """false accepts self-signed or mismatched certificates."""
    follow_redirects: bool = True
    """Follow up to 10 http(s) redirects; a loop, or a redirect to another scheme (file:,
    ftp:), is then an error (`http.load` counts it by its 3xx). false: the 3xx is the
    answer."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _checked_url(url, ("http://", "https://"))

    @field_validator("method")
    @classmethod
    def _upper(cls, method: str) -> str:
        return method.upper()


@probe(
    "http",
    default_expect={"status": {"lt": 400}},
    facts={
        "url": "URL as given",
        "status": "HTTP status code (4xx and 5xx are facts, not errors)",
        "reason": "status text, e.g. Not Found",
        "headers": "response headers, names lower-cased (the first 32 KiB of them)",
        "latency_ms": "milliseconds from request to the end of the (capped) body",
        "body": "body decoded as UTF-8 (invalid bytes replaced), at most `max_bytes`",
        "truncated": "the body was longer than `max_bytes` (the rest was not read)",
        "json": "body parsed as JSON, present only when it parses",
        "redirects": "the URLs redirects led to, in order ([] when none)",
        "final_url": "the URL that answered",
        "incomplete": INCOMPLETE,
    },
)
class Http(HttpRequest):
    """An HTTP request made from the target; no response at all (refused, timeout, DNS, TLS,
    a redirect loop) is an error naming the cause. A body over `max_bytes` is cut there: an
    `expect` on `body` or `json` is then an error, never judged on part of it."""

    max_bytes: int = Field(65_536, ge=0, le=131_072)
    """Body bytes read and kept (at most 128 KiB, the share of a probe's 1 MiB answer a
    body may take); the rest is not read. `prometheus.metrics` reads large pages."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        body = facts["body"].strip()
        if facts["truncated"]:
            facts["incomplete"]["json"] = facts["incomplete"]["body"]
        elif "json" in facts["headers"].get("content-type", "") or body[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                facts["json"] = json.loads(body)
        return facts


LATENCIES = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
PHASE = (
    "{concurrency, requests, p50_ms, p95_ms, p99_ms, max_ms, control_p50_ms, control_p95_ms, "
    "p95_over_p50, rps, statuses, first_error} of the requests made"
)


@probe(
    "http.load",
    default_expect={"errors": 0, "over_budget": [], "leak": {"ne": True}, "exited": []},
    facts={
        "url": "URL as given",
        "requests": "requests counted, both phases (warm-up requests are not)",
        "over_budget": 'the percentiles over their `max_pNN_ms`, in words: ["p99 536 ms '
        '(8 at a time) is over the 100 ms budget"]; [] when within or without budgets',
        **{
            key: f"{key[:3]} latency in milliseconds (to the end of each body), the worse of the "
            "two phases: a budget holds one at a time and under load"
            for key in LATENCIES[:3]
        },
        "max_ms": "slowest request of either phase, milliseconds",
        "p95_over_p50": "the server's tail, the worse of the two phases (seed 003 asks for < 2): "
        "(p50 + the server's spread p95 - p50 beyond the control's) / p50. Each request is "
        "followed by one to a control server in the probe that answers at once, whose spread "
        "is what the machine's load and the client add to any server; p50 counts as at least "
        "`tail_floor_ms`",
        "rps": "requests per second at `concurrency` (one at a time when it is 1)",
        "sequential": f"{PHASE} one at a time",
        "concurrent": f"{PHASE} `concurrency` at a time; null when it is 1",
        "statuses": 'requests by final status, both phases: {"200": 198, "503": 2, "error": 0} '
        '("error": no answer: refused, reset, timed out; a 3xx: a redirect that was not '
        "followed: a loop, another scheme)",
        "errors": "requests not answered 2xx (after redirects), or not answered",
        "error_rate": "errors / requests",
        "pid": "with `process` a pid, pid file or name: the server's root process",
        "cgroup": "with `process` a cgroup or unit: its cgroup directory",
        "processes": "[{pid, name, rss_before_mb, rss_after_mb, growth_pct}] of each of the "
        "server's processes (its whole tree: workers too; rss_before_mb null for a process "
        "started during the load, rss_after_mb null for one that exited)",
        "process_count": "the server's processes after the load",
        "exited": "pids of the server's processes that exited during the load (a worker that "
        "crashed or was killed for memory); [] without `process`",
        "rss_before_mb": "resident memory of all the server's processes before the load, MiB",
        "rss_after_mb": "and after it",
        "rss_total_growth_pct": "growth of that total over the load, %",
        "rss_growth_pct": "the worse of the total's growth and any one process's, % (seed "
        "003: < 20% over 100 requests; a leak in one of eight workers is an eighth of the "
        "total)",
        "long_tail": "p95_over_p50 is over `max_tail_ratio`",
        "leak": "rss_growth_pct is over `max_growth_pct`; null without `process`",
        "problem": "errors, budgets missed, a long tail, a leak and exited processes, in "
        "words; null when none",
    },
)
class HttpLoad(HttpRequest):
    """`requests` requests made from the target (where clients are), one at a time and then
    `concurrency` at a time: latency percentiles, errors by status, throughput, and the
    memory growth of the server's processes (`process`: the master and every worker).
    Warm-up requests come first and are not counted. It runs alone, with no other check of
    the run beside it, since their load would skew its tail (a check may say
    `alone: false`)."""

    alone = True

    requests: int = Field(100, ge=1, le=100_000)
    """Requests in each phase."""
    concurrency: int = Field(8, ge=1, le=256)
    """Requests at once in the second phase (threads on the target); 1 runs only the
    first."""
    process: str | None = None
    """The server to watch, on the target, as its whole process tree: its pid file's path
    (`/run/app.pid`; a stale one is an error before any load), its pid (`4242`), its name
    (`gunicorn`, matched against each process's name and command line; a name that matches
    unrelated servers is an error listing them), or every process of a cgroup
    (`cgroup:/system.slice/app.service`) or systemd unit (`unit:app.service`)."""
    tail_floor_ms: float = Field(10.0, ge=0)
    """p50 counts as at least this in p95_over_p50: a few milliseconds of scheduling on a
    busy machine are not a long tail of a fast endpoint."""
    max_p50_ms: float | None = Field(None, gt=0)
    """Latency budget for p50 in either phase (null: none); over it is in `over_budget`."""
    max_p95_ms: float | None = Field(None, gt=0)
    """Budget for p95, likewise."""
    max_p99_ms: float | None = Field(None, gt=0)
    """Budget for p99, likewise (seed 000 serves predictions at < 100 ms p99)."""
    max_tail_ratio: float = Field(2.0, gt=1)
    """p95_over_p50 above this is a long tail (`long_tail`; seed 003: < 2)."""
    max_growth_pct: float = Field(20.0, gt=0)
    """rss_growth_pct above this is a leak (`leak`; seed 003: < 20% over 100 requests)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        phases = [phase for phase in (facts["sequential"], facts["concurrent"]) if phase]
        statuses: dict[str, int] = {}
        for phase in phases:
            for status, count in phase["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        requests = sum(statuses.values())
        errors = sum(n for status, n in statuses.items() if status[:1] != "2")
        growth = facts.get("rss_growth_pct")
        facts.setdefault("exited", [])
        facts["long_tail"] = max(phase["p95_over_p50"] for phase in phases) > self.max_tail_ratio
        facts["leak"] = None if growth is None else growth > self.max_growth_pct
        judged = {
            "url": facts["url"],
            "requests": requests,
            **{key: max(phase[key] for phase in phases) for key in LATENCIES},
            "p95_over_p50": max(phase["p95_over_p50"] for phase in phases),
            "rps": phases[-1]["rps"],
            **facts,
            "statuses": statuses,
            "errors": errors,
            "error_rate": round(errors / requests, 4) if requests else 0.0,
            "over_budget": self._over_budget(phases),
        }
        return {**judged, "problem": self._problem(judged, phases)}

    def _problem(self, facts: dict[str, Any], phases: list[dict[str, Any]]) -> str | None:
        """What went wrong under the load, in words: errors with their first cause, budgets
        missed, a long tail, a leak (in the process that grew most) and exited processes."""
        said = []
        if facts["errors"]:
            cause = next((p["first_error"] for p in phases if p["first_error"]), None)
            failed = f"{facts['errors']} of {facts['requests']} requests failed"
            said.append(f"{failed} {facts['statuses']}" + (f" ({cause})" if cause else ""))
        said += facts["over_budget"]
        if facts["long_tail"]:
            worst = max(phases, key=lambda p: p["p95_over_p50"])
            said.append(
                f"p95 {worst['p95_ms']:g} ms is {worst['p95_over_p50']:g}× p50 "
                f"{worst['p50_ms']:g} ms ({_at(worst)}), over {self.max_tail_ratio:g}×"
            )
        if facts["leak"]:
            said.append(self._grew(facts))
        if facts["exited"]:
            said.append(f"server processes {facts['exited']} exited during the load")
        return "; ".join(said) or None

    def _grew(self, facts: dict[str, Any]) -> str:
        """'memory grew 2650% in pid 812 (python3, 31 → 852 MiB); all 3 processes: +880%'."""
        rows = [row for row in facts["processes"] if row["growth_pct"] is not None]
        worst = max(rows, key=lambda row: row["growth_pct"], default=None)
        total = f"all {facts['process_count']} processes: {facts['rss_total_growth_pct']:+g}%"
        if worst is None:
            return f"memory grew over {self.max_growth_pct:g}% ({total})"
        return (
            f"memory grew {worst['growth_pct']:g}% in pid {worst['pid']} ({worst['name']}, "
            f"{worst['rss_before_mb']:g} → {worst['rss_after_mb']:g} MiB) over the load, over "
            f"{self.max_growth_pct:g}%; {total}"
        )

    def _over_budget(self, phases: list[dict[str, Any]]) -> list[str]:
        budgets = {"p50_ms": self.max_p50_ms, "p95_ms": self.max_p95_ms, "p99_ms": self.max_p99_ms}
        return [
            f"{key[:3]} {phase[key]:g} ms ({_at(phase)}) is over the {budget:g} ms budget"
            for key, budget in budgets.items()
            if budget is not None
            for phase in phases
            if phase[key] > budget
        ]


def _at(phase: dict[str, Any]) -> str:
    return "one at a time" if phase["concurrency"] == 1 else f"{phase['concurrency']} at a time"


SEEN = (
    "value: the header's value (null when absent), trace_id: the trace it names (null when "
    "it is not a traceparent), same_trace: it carries our trace id, new_span: its parent id "
    "is not ours (the service made a span of its own; false when it passed ours on as is)"
)


@probe(
    "http.trace",
    default_expect={"status": {"lt": 400}, "propagated": True},
    facts={
        "url": "URL as given",
        "status": "HTTP status of the answer",
        "traceparent": "the W3C traceparent sent: 00-<trace_id>-<span id>-<flags>",
        "trace_id": "the fresh trace id it carries (32 hex digits)",
        "response": f"with `response_header`: {{header, {SEEN}}}; null without",
        "downstream": "with `downstream_port`: {port, calls (requests the listener got), "
        f"method, path, {SEEN}}} of the call that carried our trace, else of the first that "
        "carried one, else of the first; null without",
        "looked": "where the trace was looked for: response, downstream",
        "propagated": "our trace id came back everywhere looked",
        "problem": "where the trace was lost, in words; null when it was not",
    },
)
class HttpTrace(HttpRequest):
    """Does the service carry the W3C trace context on? A request with a fresh `traceparent`
    is sent from the target; the trace id must come back in a response header, and reach a
    listener this probe opens where the service's next hop would be. It sees only those two
    places: that the service's spans reach your tracing backend is not checked."""

    response_header: str | None = None
    """A response header that must carry the trace: `traceparent` (or `traceresponse`) as
    the W3C value, or a header such as `x-trace-id` that holds the trace id."""
    downstream_port: int | None = Field(None, ge=1, le=65535)
    """Listen on the target's 127.0.0.1 at this port during the request: point the service's
    downstream URL there, and the call it makes must carry the trace on."""
    downstream_wait: float = Field(5.0, ge=0)
    """Seconds to wait after the answer for a downstream call the service makes later."""
    sampled: bool = True
    """Send the trace as sampled (flags 01); a service may forward an unsampled one without
    recording it."""

    @model_validator(mode="after")
    def _somewhere(self) -> HttpTrace:
        if not self.response_header and self.downstream_port is None:
            raise ValueError(
                "give response_header (e.g. traceparent) and/or downstream_port: the places "
                "where the trace must come back"
            )
        return self

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        looked = [place for place in ("response", "downstream") if facts[place] is not None]
        lost = [_lost(place, facts[place], facts["trace_id"]) for place in looked]
        problems = [why for why in lost if why]
        return {
            **facts,
            "looked": looked,
            "propagated": not problems,
            "problem": "; ".join(problems) or None,
        }


def _lost(place: str, seen: dict[str, Any], trace_id: str) -> str | None:
    """Why `seen` does not carry the trace, in words; None when it does."""
    if place == "response":
        where = f"the answer's {seen['header']} header"
    elif not seen["calls"]:
        return (
            f"no downstream call reached 127.0.0.1:{seen['port']}: point the service's next "
            "hop there (or raise downstream_wait if it calls later)"
        )
    else:
        where = f"its downstream call ({seen['method']} {seen['path']})"
    if seen["value"] is None:
        return f"{where} carried no trace context: the service does not pass traceparent on"
    if not seen["same_trace"]:
        other = seen["trace_id"] or seen["value"]
        return (
            f"{where} carried trace {other}, not ours ({trace_id}): the service started a new trace"
        )
    return None


def _checked_url(url: str, schemes: tuple[str, ...]) -> str:
    if not url.lower().startswith(schemes):
        raise ValueError(f"expected an {' or '.join(schemes)} URL, got {url!r}")
    return url


@probe(
    "net.bandwidth",
    facts={
        "source": "what was downloaded: the URL without its query, or s3://bucket/key",
        "bytes": "bytes received",
        "seconds": "seconds from the first byte to the last one read",
        "latency_ms": "milliseconds until the first byte",
        "mbps": "throughput in megabits per second (10^6 bits)",
        "complete": "the whole object arrived before `seconds` ran out",
        "size_gb": "the data size the estimate is for",
        "hours": "hours to download size_gb at this speed",
        "estimate": "e.g. Speed 94Mbps, will take 0.7h for 27GB",
    },
)
class Bandwidth(_Net, AwsParams):
    """Download speed as the target sees it: a URL or S3 object is read for at most
    `seconds`, and the speed turned into the time the real download will take. An s3://
    object is presigned on the controller, so the target needs no AWS SDK or credentials."""

    url: str
    """http(s):// URL or s3://bucket/key of a large object (hundreds of MB)."""
    seconds: float = Field(10.0, gt=0, le=600)
    """Most seconds to spend downloading."""
    size_gb: float | None = Field(None, gt=0)
    """Size of the real download, in GB, for the time estimate, e.g. 27."""
    timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the connection and for each read."""
    verify_tls: bool = True
    """false accepts self-signed or mismatched certificates."""

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        return _checked_url(url, ("http://", "https://", "s3://"))

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        params = {"op": self.kind, **self.model_dump(exclude={"url"})}
        if self.url.startswith("s3://"):
            params["source"] = self.url
            url = await self._presign()
            remember(url)  # a credential for its lifetime: masked wherever it might show
        else:
            params["source"] = self.url.split("?")[0]
            url = self.url
        return await ctx.python(self.script, {**params, "url": url}, libraries=self.libraries)

    async def _presign(self) -> str:
        """A GET URL for the object, valid just long enough for the test."""
        bucket, _, key = self.url[5:].partition("/")
        try:
            async with awsapi.client("s3", self) as s3:
                return await s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": bucket, "Key": key},
                    ExpiresIn=int(self.seconds + self.timeout) + 60,
                )
        except Exception as exc:
            failure = awsapi.classify(exc, self)
            raise ProbeError(f"cannot sign a download of {self.url}: {failure.message}") from None
