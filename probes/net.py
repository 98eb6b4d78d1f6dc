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
    """http:// or https:// URL; redirects are followed."""
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
        "headers": "response headers, names lower-cased",
        "latency_ms": "milliseconds from request to the end of the (capped) body",
        "body": "body decoded as UTF-8 (invalid bytes replaced), at most `max_bytes`",
        "truncated": "the body was longer than `max_bytes`",
        "json": "body parsed as JSON, present only when it parses",
    },
)
class Http(HttpRequest):
    """An HTTP request made from the target; no response at all (refused, timeout, DNS, TLS)
    is an error naming the cause."""

    max_bytes: int = Field(1_048_576, ge=0)
    """Body bytes kept; the rest is not read."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        body = facts["body"].strip()
        if "json" in facts["headers"].get("content-type", "") or body[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                facts["json"] = json.loads(body)
        return facts


LATENCIES = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
PHASE = (
    "{concurrency, requests, p50_ms, p95_ms, p99_ms, max_ms, rps, statuses} of the requests made"
)


@probe(
    "http.load",
    default_expect={"errors": 0},
    facts={
        "url": "URL as given",
        "requests": "requests counted, both phases (one untimed request warms up first)",
        **{
            key: f"{key[:3]} latency of the requests made one at a time, milliseconds (to the "
            "end of each body)"
            for key in LATENCIES[:3]
        },
        "max_ms": "slowest of the requests made one at a time, milliseconds",
        "p95_over_p50": "p95_ms / p50_ms: a long tail (seed 003 asks for < 2)",
        "rps": "requests per second at `concurrency` (one at a time when it is 1)",
        "sequential": f"{PHASE} one at a time",
        "concurrent": f"{PHASE} `concurrency` at a time; null when it is 1",
        "statuses": 'requests by status, both phases: {"200": 198, "503": 2, "error": 0} '
        '("error": no answer: refused, reset, timed out)',
        "errors": "requests answered 4xx or 5xx, or not answered",
        "error_rate": "errors / requests",
        "pid": "the watched server process (`process`)",
        "rss_before_mb": "its resident memory before the load, MiB",
        "rss_after_mb": "and after it",
        "rss_growth_pct": "growth over the load, % (seed 003: < 20% over 100 requests)",
    },
)
class HttpLoad(HttpRequest):
    """`requests` requests made from the target (where clients are), one at a time and then
    `concurrency` at a time: latency percentiles, errors by status, throughput, and the
    memory growth of a server process. It runs alone, with no other check of the run beside
    it, since their load would skew its tail (a check may say `alone: false`)."""

    alone = True

    requests: int = Field(100, ge=1, le=100_000)
    """Requests in each phase."""
    concurrency: int = Field(8, ge=1, le=256)
    """Requests at once in the second phase (threads on the target); 1 runs only the
    first."""
    process: str | None = None
    """A server process to watch, on the target: its pid file's path (`/run/app.pid`) or its
    name (`gunicorn`, matched against each process's name and command line)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        phases = [phase for phase in (facts["sequential"], facts["concurrent"]) if phase]
        statuses: dict[str, int] = {}
        for phase in phases:
            for status, count in phase["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        requests = sum(statuses.values())
        errors = sum(n for status, n in statuses.items() if status[:1] not in ("1", "2", "3"))
        one = facts["sequential"]
        p50 = one["p50_ms"]
        return {
            "url": facts["url"],
            "requests": requests,
            **{key: one[key] for key in LATENCIES},
            "p95_over_p50": round(one["p95_ms"] / p50, 2) if p50 else None,
            "rps": phases[-1]["rps"],
            **facts,
            "statuses": statuses,
            "errors": errors,
            "error_rate": round(errors / requests, 4) if requests else 0.0,
        }


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
        f"method, path, {SEEN}}} of the call that carried a traceparent, else the first; "
        "null without",
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
        return await ctx.python(self.script, {**params, "url": url})

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
