"""Spec problems: each points at the line the user wrote and says what to do about it."""

from __future__ import annotations

import re

import pytest

from matrix.spec.load import load
from matrix.spec.problems import Problem, SpecInvalid

LOCATION = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): ")


def one(problems: list[Problem], text: str) -> Problem:
    """The single problem whose text contains `text`; fails listing them all otherwise."""
    found = [p for p in problems if text in str(p)]
    assert len(found) == 1, "\n".join(map(str, problems))
    return found[0]


def line_of(problem: Problem) -> int:
    """The line as the user sees it: parsed back from `file:line:col: message`."""
    found = LOCATION.match(str(problem))
    assert found, str(problem)
    assert found["file"].endswith("spec.yaml")
    assert int(found["line"]) == problem.where.line
    return int(found["line"])


def test_unknown_key_names_the_line_and_suggests_the_right_key(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                wieght: 3
                probe: {kind: command, argv: ["true"]}
        """
    )
    problem = one(problems, "unknown key 'wieght'")
    assert line_of(problem) == 7
    assert "did you mean 'weight'?" in problem.message
    assert problem.key == "phases[p].checks[a].wieght"


def test_wrong_type_points_at_the_value(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"]}
                weight: lots
        """
    )
    problem = one(problems, "weight")
    assert line_of(problem) == 8
    assert problem.where.col == 17  # the value `lots`, not the key
    assert "number" in problem.message


def test_unknown_probe_kind_suggests_a_known_one(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe:
                  kind: comand
                  argv: ["true"]
        """
    )
    problem = one(problems, "unknown probe kind 'comand'")
    assert line_of(problem) == 8
    assert "did you mean 'command'?" in problem.message


def test_command_without_argv_or_shell_says_give_exactly_one(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, stdin: hello}
        """
    )
    problem = one(problems, "give exactly one of argv")
    assert line_of(problem) == 7


def test_command_with_both_argv_and_shell_is_refused(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"], shell: "true"}
        """
    )
    assert line_of(one(problems, "give exactly one of argv")) == 7


def test_unknown_needs_reference_with_suggestion(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: reachable
                probe: {kind: command, argv: ["true"]}
              - id: b
                needs: [reachble]
                probe: {kind: command, argv: ["true"]}
        """
    )
    problem = one(problems, "unknown check or phase 'reachble'")
    assert line_of(problem) == 9
    assert "did you mean 'reachable'?" in problem.message


def test_unknown_phase_need(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: infra
            checks: []
          - id: env
            needs: [infar]
            checks: []
        """
    )
    problem = one(problems, "unknown phase 'infar'")
    assert line_of(problem) == 7
    assert "did you mean 'infra'?" in problem.message


def test_dependency_cycle_spells_out_the_loop(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                needs: [b]
                probe: {kind: command, argv: ["true"]}
              - id: b
                needs: [a]
                probe: {kind: command, argv: ["true"]}
        """
    )
    problem = one(problems, "dependency cycle")
    assert "check a → check b → check a" in problem.message
    assert line_of(problem) == 7


def test_cycle_through_phases_is_found(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: one
            needs: [two]
            checks: []
          - id: two
            needs: [one]
            checks: []
        """
    )
    problem = one(problems, "dependency cycle")
    assert "phase one → phase two → phase one" in problem.message
    assert line_of(problem) == 5


def test_undefined_template_variable_suggests_the_declared_one(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        vars:
          gpu_host: 10.0.0.1
        phases:
          - id: p
            checks:
              - id: a
                probe:
                  kind: command
                  argv: ["ping", "{{ vars.gpu_hst }}"]
        """
    )
    problem = one(problems, "undefined variable vars.gpu_hst")
    assert line_of(problem) == 11
    assert "did you mean 'gpu_host'?" in problem.message
    assert "vars:" in problem.message


def test_undefined_top_level_template_name(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"]}
                diagnostic: "broken: {{ eror }}"
        """
    )
    problem = one(problems, "undefined name 'eror'")
    assert line_of(problem) == 8
    assert "did you mean 'error'?" in problem.message


def test_malformed_yaml_reports_the_line_of_the_error(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"}
              - id: b
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert len(problems) == 1
    assert "malformed YAML" in problems[0].message
    assert line_of(problems[0]) == 7


def test_template_syntax_error_is_a_problem(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, shell: "echo {{ vars.x "}
        """
    )
    problem = one(problems, "template syntax error")
    assert line_of(problem) == 7


def test_duplicate_ids_point_at_the_second_one(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: same
                probe: {kind: command, argv: ["true"]}
          - id: q
            checks:
              - id: same
                probe: {kind: command, argv: ["true"]}
        """
    )
    problem = one(problems, "duplicate id")
    assert line_of(problem) == 10


def test_duplicate_phase_id(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks: []
          - id: p
            checks: []
        """
    )
    assert line_of(one(problems, "duplicate id")) == 6


def test_duplicate_yaml_keys_name_both_lines(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: first
        phases: []
        name: second
        """
    )
    problem = one(problems, "duplicate key")
    assert line_of(problem) == 4
    assert "first at line 2" in problem.message


def test_merge_keys_are_overridden_by_the_maps_own_keys(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: a
        probe: &base {kind: command, argv: ["true"]}
      - id: b
        probe: {<<: *base, argv: ["false"]}
"""
    )
    checks = load(path).spec.phases[0].checks
    assert checks[1].probe.model_dump()["argv"] == ["false"]


def test_a_maps_own_keys_still_must_be_unique_next_to_a_merge(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        base: &base {a: 1}
        phases: []
        other: {<<: *base, b: 1, b: 2}
        """
    )
    assert line_of(one(problems, "duplicate key")) == 5


def test_unknown_matcher_in_expect_suggests_one(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"]}
                expect:
                  exit_code: {gee: 0}
        """
    )
    problem = one(problems, "unknown matcher 'gee'")
    assert line_of(problem) == 9
    assert "did you mean 'ge'?" in problem.message


def test_unknown_target_is_a_problem(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        targets:
          gpu: {via: local}
        phases:
          - id: p
            checks:
              - id: a
                on: gpus
                probe: {kind: command, argv: ["true"]}
        """
    )
    problem = one(problems, "unknown target 'gpus'")
    assert line_of(problem) == 9
    assert "did you mean 'gpu'?" in problem.message


def test_every_problem_is_reported_at_once(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        vars:
          region: eu
        phases:
          - id: p
            checks:
              - id: kind-typo
                probe: {kind: comand, argv: ["true"]}
              - id: no-argv
                probe: {kind: command}
              - id: bad-need
                needs: [nowhere]
                probe: {kind: command, argv: ["true"]}
              - id: bad-var
                probe: {kind: command, argv: ["echo", "{{ vars.regoin }}"]}
              - id: bad-matcher
                probe: {kind: command, argv: ["true"]}
                expect: {exit_code: {eqq: 0}}
        """
    )
    assert len(problems) == 5, "\n".join(map(str, problems))
    assert [line_of(p) for p in problems] == [9, 11, 13, 16, 19]
    for text in ("comand", "give exactly one", "nowhere", "vars.regoin", "eqq"):
        one(problems, text)


def test_structural_problems_are_all_reported_together(spec_problems):
    problems = spec_problems(
        """
        version: 2
        name: t
        phases:
          - id: p
            weight: heavy
            checks:
              - id: a
                severty: critical
                probe: {kind: command, argv: ["true"]}
              - id: b
                timeout: soon
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert [line_of(p) for p in problems] == [1, 5, 8, 11]
    one(problems, "expected 1, got 2")
    one(problems, "did you mean 'severity'?")
    one(problems, "duration like 500ms")


def test_missing_required_key_points_at_the_mapping(spec_problems):
    problems = spec_problems(
        """
        version: 1
        phases:
          - id: p
            checks:
              - id: a
                severity: warning
        """
    )
    assert [line_of(p) for p in problems] == [1, 5]
    assert all("required key" in p.message for p in problems)


def test_missing_required_key_is_named(spec_problems):
    problems = spec_problems(
        """
        version: 1
        phases:
          - id: p
            checks:
              - id: a
                severity: warning
        """
    )
    assert "'name'" in str(problems[0])
    assert "'probe'" in str(problems[1])


def test_spec_invalid_message_lists_every_problem(write_spec):
    from matrix.plan import build_plan
    from matrix.spec.load import load

    path = write_spec("version: 1\nname: t\nphases: []\nextra: 1\nmore: 2\n")
    with pytest.raises(SpecInvalid) as info:
        build_plan(load(path))
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert all(LOCATION.match(line) for line in lines)


def test_structural_and_planner_problems_are_reported_in_one_go(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                wieght: 3
                probe: {kind: command, argv: ["true"]}
              - id: b
                probe: {kind: comand, argv: ["true"]}
        """
    )
    assert [line_of(p) for p in problems] == [7, 10]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".inf", "Input should be a finite number"),
        ("-.inf", "Input should be a finite number"),
        (".nan", "Input should be a finite number"),
        ("-1", "Input should be greater than or equal to 0"),
        ("1000001", "Input should be less than or equal to 1000000"),
    ],
)
def test_weights_must_be_finite_and_sensible(spec_problems, value, message):
    problems = spec_problems(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            weight: {value}
            checks:
              - id: a
                weight: {value}
                probe: {{kind: command, argv: ["true"]}}
        """
    )
    # the same problem with a weight at two places: one line, naming the other place
    assert [(p.key, p.where.line, p.message, [a.line for a in p.also]) for p in problems] == [
        ("phases[p].weight", 5, message, [8])
    ]


@pytest.mark.parametrize("value", [".inf", "99999999h"])
def test_durations_are_bounded(spec_problems, value):
    problem = one(
        spec_problems(
            f"""
            version: 1
            name: t
            phases:
              - id: p
                checks:
                  - id: a
                    timeout: {value}
                    probe: {{kind: command, argv: ["true"]}}
            """
        ),
        "timeout",
    )
    assert "less than or equal to 604800" in problem.message


def test_var_names_must_be_strings(spec_problems):
    problems = spec_problems("version: 1\nname: t\nvars: {1: a, true: c}\nphases: []\n")
    assert [str(p).split(": ", 1)[1] for p in problems] == [
        "keys must be strings (names), got 1; quote it: '1'",
        "keys must be strings (names), got true; quote it: 'true'",
    ]


def test_a_key_with_brackets_is_located(spec_problems):
    problem = one(
        spec_problems(
            """
            version: 1
            name: t
            "h[1-2]": 1
            phases: []
            """
        ),
        "unknown key",
    )
    assert problem.key == "h[1-2]"
    assert line_of(problem) == 3


@pytest.mark.parametrize(
    ("line", "key", "said"),
    [
        ("consistent: []", "consistent", "an empty list compares nothing"),
        ('consistent: [""]', "consistent[0]", "'' is not a fact path"),
        ("consistent: [stdout, stdout]", "consistent", "'stdout' listed twice"),
        ('tags: ["gpu", ""]', "tags[1]", "'' is not a tag: one word"),
        ('tags: ["a,b"]', "tags[0]", "'a,b' is not a tag"),
    ],
)
def test_a_list_of_names_holding_nothing_or_a_blank_is_a_problem_at_its_item(
    spec_problems, line, key, said
):
    """An empty `consistent` would compare nothing, a blank name name nothing: both are
    mistakes a spec would otherwise carry silently."""
    problems = spec_problems(
        f"""
        version: 1
        name: t
        targets:
          g: {{hosts: [h1]}}
        phases:
          - id: p
            checks:
              - id: c
                on: g
                probe: {{kind: command, argv: ["true"]}}
                {line}
        """
    )
    problem = one(problems, said)
    assert problem.key == f"phases[p].checks[c].{key}" and line_of(problem) == 11


def test_a_secret_that_is_not_an_environment_variable_name_is_a_problem(spec_problems):
    problems = spec_problems('version: 1\nname: t\nsecrets: [HF_TOKEN, "", "A B"]\n')
    assert [(p.key, line_of(p)) for p in problems] == [("secrets[1]", 3), ("secrets[2]", 3)]
    assert "'A B' is not an environment variable name" in str(problems[1])
