"""YAML is read safely: no code execution, bounded size and alias expansion, YAML 1.2 booleans."""

from __future__ import annotations

import time

import pytest

from matrix.spec.load import load
from matrix.spec.problems import SpecInvalid
from matrix.spec.yaml import MAX_BYTES, MAX_DEPTH, read_yaml


def billion_laughs(levels: int = 9) -> str:
    lines = ["version: 1", "name: lol", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("phases: []")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_rejected_quickly(write_spec):
    path = write_spec(billion_laughs())
    started = time.perf_counter()
    with pytest.raises(SpecInvalid) as info:
        load(path)
    assert time.perf_counter() - started < 2.0
    [problem] = info.value.problems
    assert "alias bomb" in problem.message


def test_too_many_aliases_are_refused(write_spec):
    aliases = ", ".join(["*x"] * 201)
    path = write_spec(f"version: 1\nname: t\nx: &x hi\ny: [{aliases}]\nphases: []\n")
    with pytest.raises(SpecInvalid) as info:
        read_yaml(path)
    [problem] = info.value.problems
    assert "more than 200 YAML aliases" in problem.message
    assert problem.where.line in (3, 4)


def test_a_few_aliases_are_fine(write_spec):
    path = write_spec(
        """
        version: 1
        name: t
        vars:
          base: &cmd ["echo", "hi"]
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: *cmd}
              - id: b
                probe: {kind: command, argv: *cmd}
        """
    )
    spec = load(path).spec
    assert [c.probe.model_extra["argv"] for c in spec.phases[0].checks] == [["echo", "hi"]] * 2


def test_file_over_two_mib_is_rejected_without_parsing(write_spec):
    path = write_spec("version: 1\nname: big\nphases: []\n# " + "x" * MAX_BYTES + "\n")
    assert MAX_BYTES == 2 * 1024 * 1024
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert f"the limit is {MAX_BYTES}" in problem.message
    assert (problem.where.line, problem.where.col) == (1, 1)


def test_yaml_12_booleans_on_and_no_stay_strings(write_spec):
    data = read_yaml(write_spec("on: yes\nneeds: [no, off, y, n, On]\nflag: true\nother: False\n"))
    assert data == {
        "on": "yes",
        "needs": ["no", "off", "y", "n", "On"],
        "flag": True,
        "other": False,
    }


def test_on_and_needs_no_work_in_a_spec(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        targets:
          "yes": {via: local}
        phases:
          - id: p
            checks:
              - id: "no"
                probe: {kind: command, argv: ["true"]}
              - id: after
                on: yes
                needs: [no]
                probe: {kind: command, argv: ["true"]}
        """
    )
    after = plan.tasks["after@yes"]
    assert after.check.on == "yes"
    assert [n.task_id for n in after.needs] == ["check:no"]  # on another host: its group
    assert plan.groups["check:no"] == ["no"]


@pytest.mark.parametrize(
    "tag",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/object:os.system {{}}",
        '!!python/name:os.system ""',
    ],
)
def test_python_tags_are_rejected_and_never_run(write_spec, tmp_path, tag):
    marker = tmp_path / "pwned"
    path = write_spec(f"version: 1\nname: {tag.format(marker=marker)}\nphases: []\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert "python/" in problem.message
    assert problem.where.line == 2
    assert not marker.exists()


def test_non_mapping_document_is_a_clear_problem(write_spec):
    with pytest.raises(SpecInvalid) as info:
        load(write_spec("- just\n- a list\n"))
    assert "must be a YAML mapping" in str(info.value)


def test_missing_file_is_a_problem_not_an_exception(tmp_path):
    with pytest.raises(SpecInvalid) as info:
        load(tmp_path / "nope.yaml")
    assert "file not found" in str(info.value)


def test_invalid_utf8_is_a_problem(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"version: 1\nname: \xff\xfe\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    assert "cannot read file" in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!float abc", "'abc' is not a valid !!float value"),
        ("!!int abc", "'abc' is not a valid !!int value"),
        ("!!bool maybe", "'maybe' is not a valid !!bool value"),
        ("9" * 5000, "is not a valid !!int value: Exceeds the limit (4300 digits)"),
        ("!!timestamp nope", "'nope' is not a valid !!timestamp value"),
        ("!!set {a: null}", "!!set values are not supported"),
        ("!!binary AAAA", "!!binary values are not supported"),
        ("!!omap [{a: 1}]", "!!omap values are not supported"),
    ],
)
def test_values_a_tag_cannot_make_are_located_problems(write_spec, value, message):
    path = write_spec(f"version: 1\nname: t\nvars:\n  x: {value}\nphases: []\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert message in problem.message
    assert (problem.where.line, problem.where.col) == (4, 6)


def test_keys_must_be_strings(write_spec):
    with pytest.raises(SpecInvalid) as info:
        read_yaml(write_spec("vars: {1: a, true: c, ~: d, [x]: e}\n"))
    assert [f"{p.where.line}:{p.where.col}: {p.message}" for p in info.value.problems] == [
        "1:8: keys must be strings (names), got 1; quote it: '1'",
        "1:14: keys must be strings (names), got true; quote it: 'true'",
        "1:23: keys must be strings (names), got null; quote it: 'null'",
        "1:29: keys must be strings (names), not a list or a mapping",
    ]


@pytest.mark.parametrize("depth", [65, 350, 5000])
def test_deep_nesting_is_refused_before_it_is_built(write_spec, depth):
    path = write_spec("version: 1\nname: t\nx: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(SpecInvalid) as info:
        read_yaml(path)
    [problem] = info.value.problems
    assert problem.message == f"nested more than {MAX_DEPTH} levels deep; flatten the structure"
    # at the first level too deep; PyYAML 6.0.4's libyaml refuses 1,000 levels itself, reading
    # ahead of our count, and then points where it stopped
    assert problem.where.line == 3
    assert problem.where.col == 4 + MAX_DEPTH - 1 or (depth > 1000 and problem.where.col > 1000)


def test_nesting_deep_enough_to_crash_libyaml_is_a_problem(cli):
    (cli.cwd / "deep.yaml").write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    done = cli("validate", "deep.yaml")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("deep.yaml:1:")
    assert f"nested more than {MAX_DEPTH} levels deep" in done.stderr


def test_aliases_cannot_nest_past_the_limit(write_spec):
    half = MAX_DEPTH // 2
    nested = "[" * half + "*a" + "]" * half
    path = write_spec(
        f"a: &a {'[' * half}1{']' * half}\nb: &b {nested}\nc: {nested.replace('a', 'b')}\n"
    )
    with pytest.raises(SpecInvalid) as info:
        read_yaml(path)
    assert "levels deep (through aliases?)" in str(info.value)


def test_a_recursive_alias_is_a_problem(write_spec):
    with pytest.raises(SpecInvalid) as info:
        read_yaml(write_spec("a: &loop [*loop]\n"))
    [problem] = info.value.problems
    assert problem.message == "malformed YAML: found unconstructable recursive node"
    assert (problem.where.line, problem.where.col) == (1, 4)


def test_a_document_that_is_not_a_mapping_is_located_at_its_node(write_spec):
    with pytest.raises(SpecInvalid) as info:
        load(write_spec("# a comment\n\n- just\n- a list\n"))
    [problem] = info.value.problems
    assert problem.message == "a spec must be a YAML mapping with version, name, phases"
    assert (problem.where.line, problem.where.col) == (3, 1)
