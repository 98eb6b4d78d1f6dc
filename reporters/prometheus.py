"""`--prometheus FILE`: the run as Prometheus metrics in the text exposition format (0.0.4),
for node_exporter's textfile collector (write it into its directory: the file is replaced
atomically, as the collector needs) and for `matrix serve`'s /metrics.

A task's status is a state set: one series per status, 1 for the task's own, so a query can
count failing checks (`sum(matrix_check_status{status="fail"})`) and an alert can name them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from matrix.results import Result, Run, Status, Verdict
from reporters.base import Reporter, write_report

STATUSES = ("pass", "fail", "error", "skip")
VERDICTS = (Verdict.ready, Verdict.caution, Verdict.blocked, Verdict.incomplete)
assert {status.value for status in Status} == set(STATUSES)


def metrics(run: Run) -> str:
    """The run's metrics, HELP and TYPE lines included, ending in a newline."""
    spec = {"spec": run.spec_name, **({"node": run.node} if run.node else {})}
    lines: list[str] = []
    family = _family(lines)
    family("matrix_verdict", "the run's verdict: 1 for the one it reached", [
        ({**spec, "verdict": verdict.value}, int(run.verdict is verdict)) for verdict in VERDICTS
    ])  # fmt: skip
    family("matrix_readiness_score", "readiness score, 0 to 100", [(spec, round(run.score, 1))])
    family("matrix_run_duration_seconds", "wall time of the run", [(spec, round(run.duration, 3))])
    family("matrix_last_run_timestamp_seconds", "when the run started, seconds since the epoch", [
        (spec, round(run.started_at, 3))
    ])  # fmt: skip
    counts = run.counts()
    family("matrix_tasks", "tasks of the run by status", [
        ({**spec, "status": status}, counts[status]) for status in STATUSES
    ])  # fmt: skip
    tasks = [(_task_labels(run, result), result) for result in run.results]
    family("matrix_check_status", "each task's status: 1 for its own, 0 for the others", [
        ({**labels, "status": status}, int(result.status.value == status))
        for labels, result in tasks
        for status in STATUSES
    ])  # fmt: skip
    family("matrix_check_duration_seconds", "time each task took, retries included", [
        (labels, round(result.duration, 4)) for labels, result in tasks
    ])  # fmt: skip
    return "\n".join(lines) + "\n"


def _task_labels(run: Run, result: Result) -> dict[str, str]:
    """Which task: its spec, phase, check, target and severity, and each matrix axis as
    `cell_AXIS` (escaped as `label_name` says, so two axes never share a label)."""
    return {
        "spec": run.spec_name,
        **({"node": run.node} if run.node else {}),
        "phase": result.phase_id,
        "check": result.check_id,
        "target": result.target,
        "severity": result.severity,
        **{label_name(f"cell_{axis}"): str(value) for axis, value in result.cell.items()},
    }


Samples = Iterable[tuple[Mapping[str, str], float]]


def _family(lines: list[str]) -> Callable[[str, str, Samples], None]:
    """add(name, help, samples): one gauge family, appended to `lines`."""

    def add(name: str, help_text: str, samples: Samples) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{{{_labels(labels)}}} {_value(value)}" for labels, value in samples)

    return add


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())


def label_name(name: str) -> str:
    """A label name Prometheus accepts ([a-zA-Z_][a-zA-Z0-9_]*), one to one: a name outside
    that set is written in Prometheus's own `values` escaping (`U__` before it, `_` doubled,
    any other character as `_HEX_`: axis `a-b` is `U__cell__a_2d_b`, never `cell_a_b`),
    which Prometheus and its client libraries decode (`model.UnescapeName`)."""
    if _LEGACY_NAME.fullmatch(name):
        return name
    return "U__" + "".join(
        "__" if c == "_" else c if c.isascii() and c.isalnum() else f"_{_code_point(c):x}_"
        for c in name
    )


def _code_point(c: str) -> int:
    return 0xFFFD if 0xD800 <= ord(c) <= 0xDFFF else ord(c)  # a lone surrogate: no character


def _escape(value: str) -> str:
    """A label value as the format writes it: `\\`, `\n` and `\"` escaped, and every other
    character a reader could take for a line break or that is not text (`\r`, which
    Python's universal newlines read as one; other control characters, U+2028; a lone
    surrogate from a file name) replaced by its visible stand-in, never written raw."""
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value.translate(_STAND_INS) if _UNSAFE.search(value) else value


_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_STAND_INS = {
    **{code: 0x2400 + code for code in range(0x20) if code != 0x0A},  # ␍ ␀ ␉ …: control pictures
    0x7F: 0x2421,  # ␡
    **dict.fromkeys([*range(0x80, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)], 0xFFFD),
}


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class PrometheusReporter(Reporter):
    def __init__(self, destination: str):
        self.path = Path(destination)

    def finish(self, run: Run) -> None:
        write_report(self.path, metrics(run))
