"""probes/remote/metrics.py reads /metrics pages a line at a time on the target. Its reading
must agree with prometheus-client's own parser on any page the text format allows (families
of every type, HELP with escapes, label values with quotes, backslashes and newlines, NaN and
infinities), and name the line of a page that is not the format. The parser is the remote
script's own, loaded the way a target runs it."""

from __future__ import annotations

import math
import sys
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from matrix.remote import program


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    """The namespace of the program a target runs, without its entry call (the last line)."""
    source, _ = program("metrics", ("_http",)).rstrip(b"\n").rsplit(b"\n", 1)
    namespace: dict[str, Any] = {"__name__": "remote_metrics"}
    with patch.dict(sys.modules):
        exec(compile(source, "<stdin>", "exec"), namespace)
    return namespace


def read(metrics: dict[str, Any], text: str) -> dict[str, Any]:
    page = metrics["Page"]([])
    for line in text.split("\n"):  # as readline splits: other line breaks are text
        page.line(line)
    return page.facts()


def _escaped(text: str, quotes: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quotes else text


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
# prometheus-client splits HELP at any Unicode space, the format at blanks: they agree on
# a text that starts with neither
HELP = TEXT.filter(lambda text: not text[:1].isspace())
LABELS = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), TEXT, max_size=3)
VALUE = st.one_of(st.floats(allow_nan=True), st.integers(-(10**12), 10**12).map(float))
KIND = st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", None])


@st.composite
def pages(draw: st.DrawFn) -> str:
    """A page of families m0_…, m1_… (distinct, so no name is another's suffix)."""
    lines = []
    for index in range(draw(st.integers(0, 6))):
        kind = draw(KIND)
        base = f"m{index}_{draw(st.from_regex(r'[a-z][a-z_]{0,6}', fullmatch=True))}"
        name = f"{base}_total" if kind == "counter" else base
        if kind is not None:
            if draw(st.booleans()):
                lines.append(f"# HELP {name} {_escaped(draw(HELP), quotes=False)}")
            lines.append(f"# TYPE {name} {kind}")
        suffixes = {"histogram": ["_bucket", "_count", "_sum"], "summary": ["", "_count", "_sum"]}
        for suffix in suffixes.get(kind or "", [""]):
            for labels in draw(st.lists(LABELS, min_size=1, max_size=3, unique_by=str)):
                inner = ",".join(f'{k}="{_escaped(v)}"' for k, v in labels.items())
                value = draw(VALUE)
                shown = {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, repr(value))
                lines.append(
                    f"{name}{suffix}{{{inner}}} {shown}" if inner else f"{name}{suffix} {shown}"
                )
    return "\n".join(lines) + "\n"


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=200, deadline=None)
@given(pages())
def test_it_reads_any_page_as_prometheus_client_does(metrics: dict[str, Any], text: str) -> None:
    theirs: dict[str, dict[str, Any]] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        seen = theirs.setdefault(family.name, {"type": family.type, "help": "", "samples": 0})
        seen["help"] = seen["help"] or family.documentation
        seen["samples"] += len(family.samples)
        for sample in family.samples:
            values[metrics["sample_key"](sample.name, sample.labels)] = sample.value

    ours = read(metrics, text)

    assert ours["families"] == theirs
    assert ours["values"].keys() == values.keys()
    assert all(_same(ours["values"][key], values[key]) for key in values)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("requests_total{code=200} 1", 'labels are not name="value" pairs'),
        ('requests_total{code="200",code="500"} 1', "label code appears twice"),
        ("requests_total 1_000", "'1_000' is not a number"),
        ("requests total 1", "'total' is not a number"),
        ('requests{code="200" 1', 'labels are not name="value" pairs'),
        ("# TYPE requests_total countr", "unknown type 'countr'"),
        ("# TYPE 9requests counter", "'9requests' is not a metric name"),
    ],
)
def test_a_line_that_is_not_the_format_is_named(
    metrics: dict[str, Any], line: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        read(metrics, f"# HELP ok fine\nok 1\n{line}\n")
