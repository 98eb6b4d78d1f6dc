"""`prometheus.metrics`, `prometheus.query`, `prometheus.alert`: is the pipeline observable,
and does its monitoring see a failure?

`prometheus.metrics` fetches an exporter's `/metrics` from the target (as `http` does, so
127.0.0.1 is the target's own) and reads it there as it streams (probes/remote/metrics.py).
`prometheus.query` and `prometheus.alert` ask a Prometheus server's HTTP API from the
controller: a PromQL instant query, and an alerting rule's state, so a spec can inject a
failure and expect the alert to fire.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from matrix.probe import ProbeContext, ProbeError, ProbeParams, probe
from probes.net import HttpRequest


@probe(
    "prometheus.metrics",
    default_expect={"status": 200, "missing": [], "without_help": []},
    facts={
        "url": "URL as given",
        "status": "HTTP status of the scrape",
        "bytes": "bytes of the page read",
        "lines": "lines of the page",
        "latency_ms": "milliseconds from the request to the page's last line",
        "families": "{family: {type, help, samples}} (a counter's family drops `_total`: "
        "`requests` for `requests_total`; a sample with no HELP or TYPE is a family of its own)",
        "samples": "samples on the page",
        "values": '{sample: value}: `name` for a sample without labels, else `name{a="1"}`; '
        "every sample of the metrics in `required`, and the first 1000 others",
        "missing": "names in `required` that are neither a family nor a sample",
        "without_help": "families with no HELP text (whoever reads the dashboard cannot tell "
        "what they mean), the first 100",
        "without_help_count": "how many families have no HELP text",
        "untyped": "families with no TYPE (Prometheus treats them as unknown), the first 100",
        "untyped_count": "how many families have no TYPE",
        "incomplete": "{values, families: why} when the page had more than the facts keep",
    },
)
class PrometheusMetrics(HttpRequest):
    """A `/metrics` endpoint that answers in the Prometheus text format, with the metrics the
    pipeline's dashboards and alerts need. The page is read on the target as it streams, a
    line at a time, so an exporter of any size is checked; a line that is not the format is
    an error naming its number and the complaint."""

    script = "metrics"
    libraries = ("_http",)

    url: str = "http://127.0.0.1:9100/metrics"
    """The endpoint, seen from the target."""
    required: list[str] = Field(default_factory=list)
    """Metric names that must be there (a family's or a sample's, e.g. `requests_total`)."""
    max_bytes: int = Field(64 << 20, ge=1)
    """Most bytes of the page read; a larger page is an error (Prometheus's own
    body_size_limit is unlimited by default)."""


class _Server(ProbeParams):
    server: str = "http://127.0.0.1:9090"
    """The Prometheus server's base URL, from the controller."""
    timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the server's answer."""

    @field_validator("server")
    @classmethod
    def _http_url(cls, server: str) -> str:
        if not server.lower().startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {server!r}")
        return server.rstrip("/")

    async def api(self, path: str, **query: str) -> Any:
        """The `data` of a Prometheus HTTP API answer; ProbeError saying why there is none."""
        import urllib.parse  # here, as anyio and urllib.request: planning imports this module

        import anyio

        url = f"{self.server}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return await anyio.to_thread.run_sync(self._get, url)

    def _get(self, url: str) -> Any:
        import socket
        import urllib.error
        import urllib.request

        path = url.removeprefix(self.server).partition("?")[0]
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # the API explains a 400 in its JSON body
            try:
                answer = json.loads(exc.read())
            except ValueError:
                why = f"Prometheus at {self.server} answered {exc.code} to {path}"
                raise ProbeError(why) from None
        except (OSError, ValueError) as exc:
            why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(why, socket.timeout):
                why = f"no answer in {self.timeout:g}s"
            raise ProbeError(
                f"cannot ask Prometheus at {self.server} ({path}): {why} — check `server` "
                "and that Prometheus runs there"
            ) from None
        if answer.get("status") != "success":
            raise ProbeError(
                f"Prometheus at {self.server} refused {path}: {answer.get('errorType')}: "
                f"{answer.get('error')}"
            )
        return answer["data"]


@probe(
    "prometheus.query",
    runs_on="controller",
    default_expect={"count": {"ge": 1}},
    facts={
        "query": "the PromQL expression as given",
        "result_type": "vector, matrix, scalar or string",
        "count": "series in the result (a scalar or string counts 1)",
        "value": "the first series' value as a number (null when there is none)",
        "results": "[{metric: labels, value}] of every series",
    },
)
class PrometheusQuery(_Server):
    """A PromQL instant query against a Prometheus server: does it hold the metric, and what
    is its value now. A query the server rejects is an error with Prometheus's reason."""

    query: str
    """PromQL, e.g. `up{job="trainer"}` or `rate(errors_total[5m])`."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        data = await self.api("/api/v1/query", query=self.query)
        kind, result = data["resultType"], data["result"]
        if kind in ("scalar", "string"):
            results = [{"metric": {}, "value": _number(result[1])}]
        else:
            results = [
                {"metric": row["metric"], "value": _number((row.get("value") or [0, None])[1])}
                for row in result
            ]
        return {
            "query": self.query,
            "result_type": kind,
            "count": len(results),
            "value": results[0]["value"] if results else None,
            "results": results,
        }


def _number(text: str | None) -> float | None:
    return float(text) if text is not None else None


@probe(
    "prometheus.alert",
    runs_on="controller",
    default_expect={
        "firing": False,
        "missing_annotations": [],
        "health": {"in": ["ok", "unknown"]},
    },
    facts={
        "alert": "the alerting rule's name as given",
        "state": "the rule's state: inactive, pending or firing",
        "firing": "at least one of its alerts is firing",
        "alerts": "[{labels, annotations, state, value}] of its active alerts",
        "labels": "the rule's labels (e.g. severity)",
        "annotations": "the rule's annotations (summary, description, runbook_url…)",
        "missing_annotations": "names in `annotations` the rule does not carry, or leaves "
        "blank (an alert that says only that something failed)",
        "query": "the rule's PromQL expression",
        "health": "ok, err (its last evaluation failed: it cannot fire) or unknown (not "
        "evaluated yet)",
        "last_error": "why its last evaluation failed; null when it did not",
    },
)
class PrometheusAlert(_Server):
    """An alerting rule on a Prometheus server: that it exists, carries the annotations
    on-call needs, and whether it fires now. Inject a failure and expect `firing: true` to
    test the alert path end to end; by default a firing alert fails the check, and so does a
    rule whose evaluation fails (it could never fire). A rule the server does not have is an
    error."""

    alert: str
    """The alerting rule's name (`alert:` in the rule file)."""
    annotations: list[str] = Field(default_factory=list)
    """Annotations the rule must carry non-empty, e.g. [summary, runbook_url]."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        data = await self.api("/api/v1/rules", type="alert")
        rules = [
            rule
            for group in data["groups"]
            for rule in group["rules"]
            if rule.get("name") == self.alert
        ]
        if not rules:
            known = sorted({r.get("name", "") for g in data["groups"] for r in g["rules"]})
            listed = f" (it has {', '.join(known[:10])})" if known else " (it has none)"
            raise ProbeError(
                f"Prometheus at {self.server} has no alerting rule {self.alert!r}{listed} — "
                "load the rule file (rule_files: in prometheus.yml) or fix the name"
            )
        alerts = [
            {key: alert.get(key) for key in ("labels", "annotations", "state", "value")}
            for rule in rules
            for alert in rule.get("alerts", [])
        ]
        states = {rule.get("state", "inactive") for rule in rules}
        state = next((s for s in ("firing", "pending") if s in states), "inactive")
        annotations = rules[0].get("annotations", {})
        return {
            "alert": self.alert,
            "state": state,
            "firing": state == "firing",
            "alerts": alerts,
            "labels": rules[0].get("labels", {}),
            "annotations": annotations,
            "missing_annotations": [
                name for name in self.annotations if not str(annotations.get(name, "")).strip()
            ],
            "query": rules[0].get("query"),
            "health": rules[0].get("health", "unknown"),
            "last_error": rules[0].get("lastError") or None,
        }
