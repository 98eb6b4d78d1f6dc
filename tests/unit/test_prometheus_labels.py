"""Metrics Prometheus and its clients read back exactly: every matrix axis its own label,
whatever its name (`a-b` beside `a_b`, non-ASCII), in Prometheus's `values` escaping, and
label values with any character — `\\r` and other control characters included — parsed by
prometheus_client from the file as Python opens it (universal newlines)."""

from __future__ import annotations

import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_fd_to_metric_families

from matrix.results import PhaseInfo, Result, Run, Status
from reporters.prometheus import label_name, metrics

_ESCAPED = re.compile(r"__|_([0-9a-f]+)_|.", re.S)


def unescape(name: str) -> str:
    """Prometheus's model.UnescapeName for the `values` scheme, as its Go code reads it."""
    if not name.startswith("U__"):
        return name
    return "".join(
        "_" if found[0] == "__" else chr(int(found[1], 16)) if found[1] else found[0]
        for found in _ESCAPED.finditer(name[3:])
    )


def shown(value: str) -> str:
    """What a label value reads as: control characters as their pictures, the rest kept."""
    pictures = {code: 0x2400 + code for code in range(0x20) if code != 0x0A}
    others = [*range(0x80, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000)]
    return value.translate({**pictures, 0x7F: 0x2421, **dict.fromkeys(others, 0xFFFD)})


def run_of(cell: dict[str, str]) -> Run:
    result = Result(
        task_id="c[x]",
        check_id="c",
        phase_id="p",
        target="local",
        host="localhost",
        cell=cell,
        status=Status.passed,
        severity="critical",
        title="c",
        duration=0.25,
    )
    return Run(
        spec_name="labels",
        spec_path="spec.yaml",
        vars={},
        phases=[PhaseInfo("p", "P", 10, {"c": 1.0})],
        results=[result],
        order=[result.task_id],
        started_at=1_700_000_000.0,
        duration=1.0,
    )


def read_back(text: str) -> list[dict[str, str]]:
    """The label sets of matrix_check_duration_seconds, read as a .prom file is read."""
    stream = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8")  # newline=None
    families = {family.name: family for family in text_fd_to_metric_families(stream)}
    return [sample.labels for sample in families["matrix_check_duration_seconds"].samples]


def test_axes_that_would_share_a_label_each_keep_their_own():
    cell = {"a-b": "1", "a_b": "2", "ünï": "3", "ñ": "4", "a.b": "5", "a:b": "6"}
    [labels] = read_back(metrics(run_of(cell)))
    axes = {unescape(name).removeprefix("cell_"): value for name, value in labels.items()}
    assert {axis: axes[axis] for axis in cell} == cell
    assert labels["cell_a_b"] == "2" and labels["U__cell__a_2d_b"] == "1"


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=20), min_size=1, max_size=6)
)
def test_any_axis_names_and_values_read_back_as_written(cell):
    [labels] = read_back(metrics(run_of(cell)))
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) for name in labels)
    axes = {
        unescape(name).removeprefix("cell_"): value
        for name, value in labels.items()
        if name.startswith(("cell_", "U__cell_"))
    }
    assert axes == {axis: shown(value) for axis, value in cell.items()}


def test_label_names_already_valid_are_kept_as_they_were():
    assert label_name("cell_batch_size") == "cell_batch_size"
    assert label_name("cell_a-b") == "U__cell__a_2d_b"
