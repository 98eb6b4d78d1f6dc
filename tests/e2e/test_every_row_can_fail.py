"""Every row of every shipped spec can fail: a row that cannot go red is a false green waiting
to happen. For each task the walk shows a value of each expected fact that breaks the
expectation, and that the fact is one the probe reports; a row with no expectation (its probe
fails by raising) is provoked for real. Every declared var is read by some template, so
overriding it changes what is checked."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_shipped_specs import REPO, shipped_specs

from matrix.plan import build_plan
from matrix.spec import template
from matrix.spec.expect import Matcher
from matrix.spec.load import load
from matrix.spec.yaml import read_yaml

# Vars and environment that make every row of a spec plan as it would on a configured setup
# (blank vars leave rows `when:`-false, with params that need not validate).
APPLICABLE: dict[str, tuple[list[str], dict[str, str]]] = {
    "specs/pipeline.yaml": (
        [
            "instance_id=i-0123456789abcdef0",
            "speedtest_url=s3://bucket/speedtest.bin",
            "prometheus_url=http://prometheus:9090",
            "trainer_metrics_url=http://127.0.0.1:8000/metrics",
        ],
        {"SLACK_WEBHOOK": "https://hooks.slack.com/services/T0/B0/x"},
    ),
    "specs/serving-config.yaml": (
        ["server_url=http://127.0.0.1:8000", "trace_downstream_port=9411"],
        {"PORT": "8080", "MODEL_DIR": "/srv/model"},
    ),
}
# Values a broken setup could report; each matcher must reject at least one of them.
WRONG: list[Any] = [
    None, False, True, 0, 1, -1, 10**18, -(10**18), 0.5, "", "x", "0.0.1", "999.0",
    [], ["x"], {}, {"x": 1},
]  # fmt: skip


def rows() -> list[tuple[str, str]]:
    return [(spec, task_id) for spec in shipped_specs() for task_id in plan_of(spec).tasks]


def plan_of(spec: str):
    var_args, env = APPLICABLE.get(spec, ([], {}))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return build_plan(load(REPO / spec, var_args=var_args))


def _family(value: Any) -> type:
    """Numbers, numeric text among them (facts from command output arrive as text), or the
    value's own type."""
    if isinstance(value, bool):
        return bool
    try:
        float(value)
    except (TypeError, ValueError):
        return type(value)
    return float


def can_fail(matcher: Matcher) -> bool:
    """A matcher can fail when a value of the kind it accepts breaks it: `ge: 0` rejects -1,
    `version: ">=2.5"` rejects "0.0.1". One that accepts every value of each kind it accepts
    at all (`ge: -1e30` over numbers) passes whatever is observed. A matcher accepting none
    of these values fails on them all; accepting null (an unset variable) says nothing."""
    accepted = {_family(value) for value in WRONG if value is not None and matcher(value)}
    return not accepted or any(not matcher(value) for value in WRONG if _family(value) in accepted)


@pytest.mark.parametrize("spec", shipped_specs())
def test_every_row_has_an_expectation_that_a_wrong_fact_breaks(spec: str) -> None:
    plan = plan_of(spec)
    cannot_fail, unreported, unplanned = [], [], []
    for task_id, task in plan.tasks.items():
        if task.compares:  # a `consistent` row probes nothing: it fails when hosts differ
            continue
        if task.params is None or task.expect is None:
            unplanned.append(f"{task_id}: {task.error or 'its params did not validate'}")
            continue
        if not task.expect and task.params.kind not in PROVOKED:
            cannot_fail.append(f"{task_id} ({task.params.kind}): no expectation")
        for path, matcher in task.expect.items():
            if path.split(".")[0] not in task.params.facts:
                unreported.append(f"{task_id}: {path} is not a fact of {task.params.kind}")
            if not can_fail(matcher):
                cannot_fail.append(f"{task_id}: {path} {matcher.text} accepts every value")
    assert unplanned == [], "give APPLICABLE vars/env so these rows plan"
    assert cannot_fail == []
    assert unreported == []


# Rows whose probe has no expectation fail by raising: each is provoked for real.
PROVOKED = {"ssh.connect"}
PROVOCATIONS = {
    ("specs/pipeline.yaml", "ssh-access"): ["--var", "gpu_host=127.0.0.1:1"],  # nothing listens
}


def test_rows_without_an_expectation_are_provoked() -> None:
    silent = {
        (spec, task_id)
        for spec in shipped_specs()
        for task_id, task in plan_of(spec).tasks.items()
        if task.params is not None and task.expect == {}
    }
    assert silent == set(PROVOCATIONS)


@pytest.mark.parametrize(("spec", "task_id"), sorted(PROVOCATIONS))
def test_a_row_without_an_expectation_fails_when_provoked(spec, task_id, cli, tmp_path) -> None:
    out = tmp_path / "out.json"
    cli("run", REPO / spec, "--check", task_id, *PROVOCATIONS[spec, task_id], "--json", out)
    results = {r["check_id"]: r for r in json.loads(out.read_text())["results"]}
    assert results[task_id]["status"] == "error", results[task_id]


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []


@pytest.mark.parametrize("spec", shipped_specs())
def test_every_declared_var_is_read_by_some_row(spec: str) -> None:
    """A var no template reads does nothing when overridden: `--var min_ram_gb=64` would
    change no check. (A var used as a YAML anchor, `<<: *aws`, is read through it.)"""
    path = REPO / spec
    document = read_yaml(path)
    text = path.read_text(encoding="utf-8")
    read = {
        attr
        for string in _strings(document)
        if template.is_template(string)
        for root, attr in template.references(string)
        if root == "vars"
    }
    declared = set(document.get("vars") or {})
    anchored = {name for name in declared if f"*{name}" in text}
    assert declared - read - anchored == set()


@pytest.mark.parametrize(
    ("expect", "fails"),
    [
        ({"eq": 0}, True),
        ({"ge": 100}, True),
        ({"version": ">=2.5"}, True),
        ({"match": "^ok$"}, True),
        ({"eq": True}, True),
        ({"ge": -(10**30)}, False),
        ({"not": {"eq": "never reported"}}, False),
    ],
)
def test_the_walk_tells_a_matcher_that_can_fail_from_one_that_cannot(expect, fails) -> None:
    from matrix.spec.expect import compile_matcher

    assert can_fail(compile_matcher(expect)) is fails
