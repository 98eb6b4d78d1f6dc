"""`--otel PATH|otlp`: the run as one OpenTelemetry trace (reference in docs/reporters.md).

    matrix run <spec>            root span, child of $TRACEPARENT when the caller set one
      ├── <phase title>          first task start → last task end
      │     ├── <task id>        result.started_at → + duration; $TRACEPARENT of its probes
      │     │     ├── attempt 1  one per try, when the task was retried
      │     │     └── attempt 2
      │     └── <skipped task>   zero-length, with the skip reason

Every time comes from the Run (the numbers every other format shows), so the spans are built
when the run has finished. A task's span id is chosen as the task starts, though, so its probe
processes can be handed a TRACEPARENT naming it; `_Ids` makes the SDK use that id when the span
is created. Only this module imports OpenTelemetry, and only when `--otel` is used.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix import __version__
from matrix.redact import redact
from matrix.results import Attempt, PhaseInfo, PhaseScore, Result, Run, Status, Verdict
from reporters import ReporterError
from reporters.base import Reporter, plural, write_report

if TYPE_CHECKING:
    from matrix.plan.model import Plan, Task

try:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.semconv._incubating.attributes import (
        cicd_attributes,
        error_attributes,
        host_attributes,
        server_attributes,
        test_attributes,
    )
    from opentelemetry.semconv.attributes import exception_attributes, service_attributes
    from opentelemetry.trace import (
        NonRecordingSpan,
        Span,
        SpanContext,
        StatusCode,
        TraceFlags,
        get_current_span,
        set_span_in_context,
    )
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # the `otel` extra is not installed: say so from __init__
    _MISSING: ImportError | None = exc
    IdGenerator = SpanExporter = object  # type: ignore[assignment,misc]  # bases below
else:
    _MISSING = None

OTLP = "otlp"
INSTALL_HINT = "pip install 'preflight-matrix[otel]'"
EXPORT_TIMEOUT = 5.0  # seconds for the whole export, retries included, unless OTEL_* says
DEFAULT_ENDPOINT = "http://localhost:4318"

# CI systems → (cicd.pipeline.name, cicd.pipeline.run.id, cicd.pipeline.run.url.full) vars;
# the first system whose run id is set wins.
CI_SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("GITHUB_WORKFLOW", "GITHUB_RUN_ID", ""),  # url built from GITHUB_SERVER_URL + repository
    ("CI_PIPELINE_NAME", "CI_PIPELINE_ID", "CI_PIPELINE_URL"),  # GitLab
    ("JOB_NAME", "BUILD_ID", "BUILD_URL"),  # Jenkins
)


class OtelReporter(Reporter):
    """Builds the run's trace and writes it as OTLP-JSON (`PATH`) or sends it (`otlp`)."""

    def __init__(self, destination: str):
        if _MISSING is not None:
            raise ReporterError(
                f"--otel needs OpenTelemetry ({_MISSING.name or 'opentelemetry'} is not "
                f"installed): {INSTALL_HINT}"
            )
        if not destination:
            raise ReporterError("--otel needs a file for OTLP-JSON, or `otlp` to send OTLP/HTTP")
        self.environ: Mapping[str, str] = os.environ
        self.destination = destination
        self.exporter = _otlp_exporter(self.environ) if destination == OTLP else None
        self.ids = _Ids()
        self.provider = TracerProvider(
            sampler=ALWAYS_ON,  # the user asked for this trace: record it whatever the parent
            resource=_resource(),
            id_generator=self.ids,
            shutdown_on_exit=False,  # finish shuts it down
        )
        self.collected = _Collect()
        self.provider.add_span_processor(SimpleSpanProcessor(self.collected))
        self.tracer = self.provider.get_tracer("matrix", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.plan: Plan | None = None
        self.parent = Context()
        self.trace_id = 0
        self.task_span_ids: dict[str, int] = {}
        self.started: dict[str, float] = {}  # task_started times, for interrupted tasks
        self.decided: dict[str, float] = {}  # task_finished times, for tasks that never ran

    # ── engine events ────────────────────────────────────────────────────────

    def start(self, plan: Plan) -> None:
        self.plan = plan
        self.parent = self._caller_context()
        caller = _span_context(self.parent)
        self.trace_id = caller.trace_id if caller.is_valid else self.ids.random_trace_id()

    def task_started(self, task: Task) -> None:
        self.started[task.id] = time.time()
        self.task_span_ids[task.id] = self.ids.random_span_id()

    def probe_env(self, task: Task) -> Mapping[str, str]:
        span_id = self.task_span_ids.get(task.id)
        if span_id is None or not self.trace_id:
            return {}
        caller = _span_context(self.parent)
        context = SpanContext(
            self.trace_id,
            span_id,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=caller.trace_state,
        )
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=set_span_in_context(NonRecordingSpan(context)))
        return {key.upper(): value for key, value in carrier.items()}

    def task_finished(self, result: Result) -> None:
        self.decided[result.task_id] = time.time()

    def finish(self, run: Run) -> None:
        if self.plan is None:  # the run never started: nothing to trace
            return
        try:
            self._build(run)
            self.provider.force_flush()
            spans = self.collected.spans
            if self.exporter is None:
                write_report(Path(self.destination), otlp_json(spans))
            else:
                self._send(spans)
        finally:
            self.provider.shutdown()

    # ── the trace ────────────────────────────────────────────────────────────

    def _caller_context(self) -> Context:
        """The caller's trace from $TRACEPARENT/$TRACESTATE (W3C), as CI and otel-cli set it."""
        traceparent = self.environ.get("TRACEPARENT")
        if not traceparent:
            return Context()
        carrier = {"traceparent": traceparent, "tracestate": self.environ.get("TRACESTATE", "")}
        context = self.propagator.extract(carrier)
        if not _span_context(context).is_valid:
            print(f"matrix: ignoring TRACEPARENT={traceparent!r}: not W3C", file=sys.stderr)
            return Context()
        return context

    def _build(self, run: Run) -> None:
        assert self.plan is not None
        timed = {r.task_id: self._times(r) for r in run.results}
        starts = [start for start, _ in timed.values()]
        ends = [end for _, end in timed.values()]
        run_end = run.started_at + run.duration
        self.ids.reserve_trace(self.trace_id)
        root = self._span(
            f"matrix run {run.spec_name}",
            self.parent,
            min([run.started_at, *starts]),
            self._run_attributes(run),
        )
        if run.verdict is Verdict.blocked:
            blockers = sum(r.bad and r.severity == "critical" for r in run.results)
            root.set_status(StatusCode.ERROR, f"BLOCKED: {plural(blockers, 'critical issue')}")
        elif run.verdict is Verdict.incomplete:
            done = f"{run.finished()} of {len(run.results)} tasks finished"
            root.set_status(StatusCode.ERROR, f"INCOMPLETE: {done}; no verdict")
        scores = {score.id: score for score in run.phase_scores()}
        for info in run.phases:
            mine = [r for r in run.results if r.phase_id == info.id]
            if not mine:
                continue
            phase = self._span(
                info.title,
                set_span_in_context(root),
                min(timed[r.task_id][0] for r in mine),
                self._phase_attributes(info, mine, scores.get(info.id)),
            )
            bad = [r for r in mine if r.bad]
            if bad:
                phase.set_status(StatusCode.ERROR, f"{len(bad)} of {len(mine)} tasks went wrong")
            for result in mine:
                self._task(result, set_span_in_context(phase), *timed[result.task_id])
            phase.end(_ns(max(timed[r.task_id][1] for r in mine)))
        root.end(_ns(max([run_end, *ends])))

    def _times(self, result: Result) -> tuple[float, float]:
        """Start and end of a task: the Run's numbers; a task that never ran is a moment."""
        if result.started_at is not None:
            return result.started_at, result.started_at + result.duration
        moment = self.decided.get(result.task_id, time.time())
        return self.started.get(result.task_id, moment), moment

    def _task(self, result: Result, parent: Context, start: float, end: float) -> None:
        span = self._span(
            result.task_id,
            parent,
            start,
            self._task_attributes(result),
            span_id=self.task_span_ids.get(result.task_id),
        )
        if result.bad:
            cause = result.diagnostic or result.reason or result.status.value
            span.set_status(StatusCode.ERROR, redact.text(cause))
            self._record_error(span, result, end)
        if len(result.tries) > 1:
            for number, attempt in enumerate(result.tries, 1):
                self._attempt(attempt, number, set_span_in_context(span))
        span.end(_ns(end))

    def _attempt(self, attempt: Attempt, number: int, parent: Context) -> None:
        end = attempt.started_at + attempt.duration
        attributes: dict[str, Any] = {"matrix.attempt": number, "matrix.status": attempt.status}
        span = self._span(f"attempt {number}", parent, attempt.started_at, attributes)
        if attempt.status in (Status.failed, Status.error):
            span.set_status(StatusCode.ERROR, redact.text(attempt.reason or attempt.status.value))
            self._record_error(span, attempt, end)
        span.end(_ns(end))

    def _record_error(self, span: Span, outcome: Result | Attempt, when: float) -> None:
        """`error.type` on every failure; an `exception` event for errors and timeouts."""
        status, reason, exception = outcome.status, outcome.reason, outcome.exception
        span.set_attribute(error_attributes.ERROR_TYPE, outcome.error_type or "probe-error")
        if exception:
            event = {
                exception_attributes.EXCEPTION_TYPE: exception,
                exception_attributes.EXCEPTION_MESSAGE: redact.text(reason or status.value),
            }
            span.add_event("exception", event, timestamp=_ns(when))

    def _span(
        self,
        name: str,
        parent: Context,
        start: float,
        attributes: Mapping[str, Any],
        *,
        span_id: int | None = None,
    ) -> Span:
        self.ids.reserve_span(span_id)
        return self.tracer.start_span(
            redact.text(name),
            context=parent,
            start_time=_ns(start),
            attributes=self._clean(attributes),
        )

    def _clean(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """Drop unset values; redact every string (results already are; the rest may not be)."""
        clean: dict[str, Any] = {}
        for key, value in attributes.items():
            if value is None:
                continue
            if isinstance(value, Status):
                value = value.value
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = tuple(redact.text(v) for v in value)  # an OTel string array
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, default=str)
            elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 63:
                value = str(value)  # OTel integers are 64-bit
            elif not isinstance(value, (bool, int, float, str)):
                value = str(value)
            clean[key] = redact.text(value) if isinstance(value, str) else value
        return clean

    # ── attributes ───────────────────────────────────────────────────────────

    def _run_attributes(self, run: Run) -> dict[str, Any]:
        counts = run.counts()
        return {
            "matrix.spec": run.spec_name,
            "matrix.spec.path": run.spec_path,
            "matrix.verdict": run.verdict.value,
            "matrix.score": round(run.score, 1),
            "matrix.interrupted": run.interrupted or None,
            "matrix.stopped_early": run.stopped_early,
            "matrix.warnings": list(run.warnings) or None,
            **{f"matrix.tasks.{status}": count for status, count in counts.items()},
            **ci_attributes(self.environ),
        }

    def _phase_attributes(
        self, info: PhaseInfo, results: Sequence[Result], score: PhaseScore | None
    ) -> dict[str, Any]:
        if any(r.bad for r in results):
            status = test_attributes.TestSuiteRunStatusValues.FAILURE.value
        elif all(r.status is Status.skipped for r in results):
            status = test_attributes.TestSuiteRunStatusValues.SKIPPED.value
        else:
            status = test_attributes.TestSuiteRunStatusValues.SUCCESS.value
        return {
            "matrix.phase": info.id,
            "matrix.phase.weight": score.weight if score else info.weight,
            "matrix.phase.score": round(score.score, 2) if score else None,
            test_attributes.TEST_SUITE_NAME: info.title,
            test_attributes.TEST_SUITE_RUN_STATUS: status,
        }

    def _task_attributes(self, result: Result) -> dict[str, Any]:
        case = {
            Status.passed: test_attributes.TestCaseResultStatusValues.PASS.value,
            Status.failed: test_attributes.TestCaseResultStatusValues.FAIL.value,
            Status.error: test_attributes.TestCaseResultStatusValues.FAIL.value,
        }.get(result.status)  # a skipped task has no test result
        return {
            "matrix.phase": result.phase_id,
            "matrix.check.id": result.check_id,
            "matrix.check.title": result.title,
            "matrix.check.severity": result.severity,
            "matrix.check.category": result.category,
            "matrix.check.failure": result.failure,
            "matrix.target": result.target,
            "matrix.target.group": result.group,
            **{f"matrix.cell.{axis}": value for axis, value in result.cell.items()},
            "matrix.status": result.status,
            "matrix.attempts": result.attempts,
            "matrix.skip.reason": result.why if result.skip else None,
            "matrix.fix": result.fix,
            host_attributes.HOST_NAME: result.host,
            server_attributes.SERVER_ADDRESS: result.address,
            server_attributes.SERVER_PORT: result.port,
            test_attributes.TEST_CASE_NAME: result.task_id,
            test_attributes.TEST_CASE_RESULT_STATUS: case,
        }

    # ── export ───────────────────────────────────────────────────────────────

    def _send(self, spans: Sequence[ReadableSpan]) -> None:
        """One OTLP/HTTP request; a collector that is down costs seconds and a warning on
        stderr, never the run's exit code (the verdict does not depend on observability)."""
        assert self.exporter is not None
        if not spans:
            return
        with _captured_logs() as logs:
            try:
                outcome = self.exporter.export(spans)
            except Exception as exc:  # a broken exporter must not sink the run either
                logs.append(f"{type(exc).__name__}: {exc}")
                outcome = SpanExportResult.FAILURE
            finally:
                self.exporter.shutdown()
        if outcome is not SpanExportResult.SUCCESS:
            endpoint = redact.text(_endpoint(self.environ))
            print(
                f"matrix: could not send OpenTelemetry traces to {endpoint}: "
                f"{redact.text(_why(logs))}; the run's result is unchanged",
                file=sys.stderr,
            )


def ci_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    """`cicd.pipeline.*` from GitHub Actions, GitLab CI or Jenkins, when one ran matrix."""
    # newer than semconv 0.48b0 (opentelemetry-sdk 1.27), which has every other name used here
    run_url = getattr(cicd_attributes, "CICD_PIPELINE_RUN_URL_FULL", "cicd.pipeline.run.url.full")
    for name, run_id, url in CI_SYSTEMS:
        if not environ.get(run_id):
            continue
        link = environ.get(url) if url else None
        if run_id == "GITHUB_RUN_ID" and environ.get("GITHUB_REPOSITORY"):
            site = environ.get("GITHUB_SERVER_URL", "https://github.com")
            link = f"{site}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ[run_id]}"
        found = {
            cicd_attributes.CICD_PIPELINE_NAME: environ.get(name),
            cicd_attributes.CICD_PIPELINE_RUN_ID: environ[run_id],
            run_url: link,
        }
        return {key: value for key, value in found.items() if value}
    return {}


def otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """OTLP-JSON: the protobuf JSON mapping of ExportTraceServiceRequest, with the OTLP rules
    on top (hex trace and span ids, enums as integers); one line, so also valid JSON Lines."""
    document = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    return json.dumps(_hex_ids(document), separators=(",", ":")) + "\n"


ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON mapping writes bytes as base64; OTLP-JSON wants trace/span ids in hex."""
    if isinstance(node, list):
        return [_hex_ids(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: base64.b64decode(value).hex() if key in ID_FIELDS else _hex_ids(value)
        for key, value in node.items()
    }


class _Ids(IdGenerator):
    """Random ids, except the ones chosen before their span exists: the trace id (from
    TRACEPARENT or fresh) and each task's span id (handed to its probes as TRACEPARENT)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._trace: int | None = None
        self._span: int | None = None

    def random_trace_id(self) -> int:
        return self._random.generate_trace_id()

    def random_span_id(self) -> int:
        return self._random.generate_span_id()

    def reserve_trace(self, trace_id: int) -> None:
        self._trace = trace_id

    def reserve_span(self, span_id: int | None) -> None:
        self._span = span_id

    def generate_trace_id(self) -> int:
        trace_id, self._trace = self._trace, None
        return trace_id or self._random.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self._span = self._span, None
        return span_id or self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return True


class _Collect(SpanExporter):
    """Keeps the finished spans so `finish` can send them in one request (or one file)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _resource() -> Resource:
    """service.name "matrix" unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say else."""
    resource = Resource.create({service_attributes.SERVICE_VERSION: __version__})
    name = str(resource.attributes.get(service_attributes.SERVICE_NAME, ""))
    if name.startswith("unknown_service"):
        resource = resource.merge(Resource({service_attributes.SERVICE_NAME: "matrix"}))
    return resource


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ReporterError(
            f"--otel otlp needs the OTLP/HTTP exporter ({exc.name} is not installed): "
            f"{INSTALL_HINT}"
        ) from None
    timeout_set = environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or environ.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    try:
        return OTLPSpanExporter(timeout=None if timeout_set else EXPORT_TIMEOUT)
    except Exception as exc:  # a bad OTEL_* value: a usage error, said before the run
        raise ReporterError(f"--otel otlp: cannot set up the OTLP exporter: {exc}") from None


def _endpoint(environ: Mapping[str, str]) -> str:
    """Where OTLPSpanExporter sends, by the same OTEL_* rules, for messages."""
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


@contextmanager
def _captured_logs() -> Iterator[list[str]]:
    """The exporter logs its retries and failure; keep them off stderr (we say it once,
    plainly) but keep the messages to explain the failure."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("opentelemetry")
    handler, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _why(messages: Sequence[str]) -> str:
    """The gist of the exporter's last complaint: an errno text, an HTTP status, or as is."""
    if not messages:
        return "export failed"
    text = " ".join(messages)
    errno = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno[-1].strip().lower()
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "no answer in time"
    code = re.findall(r"code: (\d{3})", text)
    if code:
        return f"HTTP {code[-1]}"
    return messages[-1][:300]


def _span_context(context: Context) -> SpanContext:
    return get_current_span(context).get_span_context()


def _ns(seconds: float) -> int:
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)
