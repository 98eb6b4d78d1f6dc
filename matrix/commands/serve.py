"""`matrix serve SPEC --listen HOST:PORT --interval DURATION`: run the spec on an interval and
answer over HTTP what the last finished run found, for load balancers, monitors and
Prometheus (as Goss's `goss serve` does for its checks).

- `/healthz`: 200 when the last run was READY or CAUTION, 503 when BLOCKED or cut short, and
  503 until a first run has finished; the body is JSON: verdict, score, when, and the failing
  checks with their reasons.
- `/metrics`: that run in Prometheus's text format (reporters/prometheus.py).

Runs never overlap: the next starts `--interval` after the last one ended. Each run is one
line on stdout (when, verdict, score, counts, the first thing that blocked it). The spec is loaded
and planned once, at start (an invalid spec exits 2 before anything listens). SIGINT or
SIGTERM (or SIGHUP) stops serving (exit 0); a run they cut short is not published.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
from typing import TYPE_CHECKING, Any

from matrix.commands import EXIT_INVALID, plan, spec_options
from matrix.commands.answering import Answering

if TYPE_CHECKING:
    from matrix.results import Run

DEFAULT_LISTEN = "127.0.0.1:9469"
HEALTHY = ("READY", "CAUTION")


def arguments(parser: argparse.ArgumentParser) -> None:
    spec_options(parser)
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where to answer /healthz and /metrics (default {DEFAULT_LISTEN}; port 0: any)",
    )
    parser.add_argument(
        "--interval",
        default="5m",
        metavar="DURATION",
        help="time between the end of a run and the start of the next (default 5m)",
    )


class Latest:
    """What the last finished run says, as the HTTP answers give it; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: tuple[int, bytes] = (503, _json({"verdict": None, "status": "starting"}))
        self._metrics: tuple[int, bytes] = (503, b"no run has finished yet\n")

    def publish(self, run: Run) -> None:
        from matrix.redact import redact
        from reporters.prometheus import metrics

        verdict = run.verdict.value
        failing = [
            {
                "check": r.check_id,
                "target": r.target,
                "severity": r.severity,
                "status": r.status.value,
                "reason": r.diagnostic or r.reason,
            }
            for r in run.fixes()
        ]
        body = {
            "verdict": verdict,
            "score": round(run.score, 1),
            "started_at": run.started_at,
            "duration": round(run.duration, 3),
            "counts": run.counts(),
            "failing": failing,
        }
        health = (200 if verdict in HEALTHY else 503, redact.text(_text(body)).encode())
        with self._lock:
            self._health = health
            self._metrics = (200, redact.text(metrics(run)).encode())

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET (or HEAD) of `path`."""
        with self._lock:
            if path == "/healthz":
                code, body = self._health
                return code, "application/json", body
            if path == "/metrics":
                code, body = self._metrics
                return code, "text/plain; version=0.0.4", body
        return 404, "text/plain", b"matrix serve answers /healthz and /metrics\n"


def _text(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2, default=str) + "\n"


def _json(body: dict[str, Any]) -> bytes:
    return _text(body).encode()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen: expected HOST:PORT such as {DEFAULT_LISTEN}, got {text!r}")
    return host.strip("[]"), int(port)


def _interval(text: str) -> float:
    from matrix.spec.models import MAX_SECONDS, parse_duration

    try:
        seconds = float(parse_duration(text))
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"--interval: expected a duration like 30s, 5m or 1h (more than 0, at most a "
            f"week), got {text!r}"
        )
    return seconds


def _logged(number: int, run: Run) -> str:
    """One line per run for serve's log (journald, a container's): when, the verdict and
    score, the counts, and what blocked it first."""
    from datetime import datetime, timezone

    from matrix.redact import redact
    from matrix.results import span, whole

    when = datetime.fromtimestamp(run.started_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    counts = run.counts()
    line = (
        f"matrix serve: {when} run {number}: {run.verdict.value} {whole(run.score)}/100 in "
        f"{span(run.duration)}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['error']} errors, {counts['skip']} skipped"
    )
    first = next(iter(run.fixes()), None)
    if run.interrupted:
        line += " (interrupted: not published)"
    elif first is not None:
        why = " ".join((first.diagnostic or first.reason or "").split())
        line += f"; first: {first.check_id}@{first.host}: {why}"
    return redact(line)


def main(args: argparse.Namespace) -> int:
    import anyio

    from matrix import interrupt
    from matrix.engine import Options, execute
    from matrix.listener import Listeners

    try:
        address, interval = _address(args.listen), _interval(args.interval)
    except ValueError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    planned = plan(args)
    latest = Latest()
    try:
        server = Answering(address, latest.answer)
    except OSError as exc:
        print(f"matrix: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    server.start()
    # an IPv6 address in brackets, as URLs write it
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    where = f"http://{host}:{server.port}"
    print(
        f"matrix serve: {planned.spec_path} every {args.interval}; {where}/healthz {where}/metrics",
        flush=True,
    )
    stop = threading.Event()
    try:
        with interrupt.listen(stop.set):
            for number in itertools.count(1):
                run = anyio.run(execute, planned, Options(), Listeners([]))
                print(_logged(number, run), flush=True)
                if run.interrupted:
                    break
                latest.publish(run)
                if stop.wait(interval):
                    break
    finally:
        server.close()
    return 0
