"""vars, --var/--vars overrides, env and secrets in templates."""

from __future__ import annotations

import pytest

from matrix.plan import build_plan
from matrix.results import Status
from matrix.spec.load import load, parse_var
from matrix.spec.problems import SpecInvalid

SPEC = """
version: 1
name: t
vars:
  min_free_gb: 100
  region: us-east-1
  use_gpu: false
  label: "{{ vars.region }}-run"
phases:
  - id: p
    checks:
      - id: a
        probe: {kind: command, argv: ["echo", "{{ vars.region }}", "{{ vars.label }}"]}
        expect: {exit_code: {le: "{{ vars.min_free_gb }}"}}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n=200", ("n", 200)),
        ("n=-3", ("n", -3)),
        ("flag=true", ("flag", True)),
        ("flag=False", ("flag", False)),
        ("region=eu-west-1", ("region", "eu-west-1")),
        ("ratio=1.5", ("ratio", "1.5")),
        ("cmd=a=b", ("cmd", "a=b")),
        (" k =", ("k", "")),
        ("min_torch=2.10", ("min_torch", "2.10")),  # a version, never the number 2.1
        ("packages=[torch>=2.5, peft]", ("packages", ["torch>=2.5", "peft"])),
        ("limits={gpu: 8, ram: 64}", ("limits", {"gpu": 8, "ram": 64})),
    ],
)
def test_parse_var_types_ints_and_booleans(text, expected):
    assert parse_var(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=x"])
def test_parse_var_needs_key_and_value(text):
    with pytest.raises(SpecInvalid, match="expected key=value"):
        parse_var(text)


def test_var_args_override_spec_vars(write_spec):
    spec = load(write_spec(SPEC), var_args=["min_free_gb=250", "use_gpu=true"]).spec
    assert spec.vars["min_free_gb"] == 250
    assert spec.vars["use_gpu"] is True
    assert spec.vars["region"] == "us-east-1"


def test_a_var_the_spec_does_not_declare_is_an_error_not_ignored(write_spec):
    """A typo would otherwise leave the default in force and the run would pass on it."""
    path = write_spec(SPEC)
    extra = write_spec("regoin: eu-west-1\n", "prod.yaml")
    with pytest.raises(SpecInvalid) as raised:
        load(path, vars_files=[extra], var_args=["min_fre_gb=100000"])
    said = sorted(str(p).removeprefix(f"{extra.parent}/") for p in raised.value.problems)
    assert said == [
        "--var:1:1: min_fre_gb: the spec has no var 'min_fre_gb' (did you mean 'min_free_gb'?);"
        " add it under vars: to pass it",
        "prod.yaml:1:1: regoin: the spec has no var 'regoin' (did you mean 'region'?);"
        " add it under vars: to pass it",
    ]


def test_vars_file_overrides_and_var_args_win_over_it(write_spec):
    path = write_spec(SPEC)
    overrides = write_spec("region: eu-west-1\nmin_free_gb: 50\n", "prod.yaml")
    spec = load(path, vars_files=[overrides], var_args=["min_free_gb=75"]).spec
    assert spec.vars["region"] == "eu-west-1"
    assert spec.vars["min_free_gb"] == 75


def test_overridden_vars_flow_into_rendered_params_and_templates_of_vars(write_spec, plan_spec):
    overrides = write_spec("region: eu-west-1\n", "prod.yaml")
    plan = plan_spec(SPEC, vars_files=[overrides], var_args=["min_free_gb=7"])
    task = plan.tasks["a"]
    assert task.params.argv == ["echo", "eu-west-1", "eu-west-1-run"]
    assert task.expect["exit_code"].text == "<= 7"
    assert plan.vars["label"] == "eu-west-1-run"


def test_vars_file_must_be_a_mapping(write_spec):
    bad = write_spec("- a\n- b\n", "bad.yaml")
    with pytest.raises(SpecInvalid, match="a vars file must be a mapping"):
        load(write_spec(SPEC), vars_files=[bad])


def test_vars_file_errors_point_at_the_vars_file(write_spec):
    bad = write_spec("a: 1\na: 2\n", "bad.yaml")
    with pytest.raises(SpecInvalid) as info:
        load(write_spec(SPEC), vars_files=[bad])
    [problem] = info.value.problems
    assert problem.where.file.endswith("bad.yaml")
    assert problem.where.line == 2


def test_env_is_visible_in_templates(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["ls", "{{ env.HOME }}/data"]}
        """,
        environ={"HOME": "/home/tester"},
    )
    assert plan.tasks["a"].params.argv == ["ls", "/home/tester/data"]


def test_missing_env_var_makes_that_task_an_error_not_an_invalid_spec(run_spec, by_id):
    run = run_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: needs-env
                probe: {kind: command, argv: ["echo", "{{ env.MATRIX_TEST_UNSET_VAR }}"]}
              - id: fine
                probe: {kind: command, argv: ["true"]}
        """,
        environ={},
    )
    results = by_id(run)
    assert results["needs-env"].status is Status.error
    assert "export MATRIX_TEST_UNSET_VAR=" in results["needs-env"].diagnostic
    assert results["fine"].status is Status.passed


def test_declared_but_unset_secret_is_an_error_with_export_hint(run_spec, by_id):
    run = run_spec(
        """
        version: 1
        name: t
        secrets: [API_TOKEN]
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, shell: "test -n {{ secret.API_TOKEN }}"}
        """,
        environ={},
    )
    result = by_id(run)["a"]
    assert result.status is Status.error
    assert "secret API_TOKEN is not set: export API_TOKEN=" in result.reason


def test_secret_not_listed_under_secrets_is_a_problem(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        secrets: [API_TOKEN]
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, shell: "curl -H {{ secret.HOME }}"}
        """,
        environ={"HOME": "/root"},
    )
    [problem] = problems
    assert "secret.HOME" in problem.message
    assert "secrets:" in problem.message
    assert problem.where.line == 8


TARGET_TYPO = """
version: 1
name: t
vars: {gpu_host: a}
targets:
  gpu:
    hosts: ["{{ vars.gpu_hots }}"]
phases:
  - {id: p, checks: [{id: a, probe: {kind: command, argv: ["true"]}}]}
"""


def test_undefined_var_in_target_hosts_is_a_problem(spec_problems):
    problems = spec_problems(TARGET_TYPO)
    hinted = [p for p in problems if "did you mean 'gpu_host'?" in p.message]
    assert len(hinted) == 1
    assert hinted[0].where.line == 6


def test_undefined_var_in_target_hosts_is_reported_once(spec_problems):
    problems = spec_problems(TARGET_TYPO)
    assert len(problems) == 1, "\n".join(map(str, problems))


def test_a_bad_value_from_the_command_line_says_where_it_came_from(write_spec):
    """The spec line it is reported at looks right: the message names the --var or file."""
    path = write_spec(
        """
        version: 1
        name: t
        vars: {port: 8080}
        phases:
          - id: p
            checks:
              - {id: a, probe: {kind: port, port: "{{ vars.port }}"}}
        """
    )
    extra = write_spec("port: xyz\n", "prod.yaml")
    for options, origin in (
        ({"var_args": ["port=abc"]}, "vars.port = 'abc' from --var port"),
        ({"vars_files": [extra]}, "vars.port = 'xyz' from"),
    ):
        with pytest.raises(SpecInvalid) as raised:
            build_plan(load(path, **options))
        (problem,) = raised.value.problems
        assert (problem.where.line, problem.key) == (7, "phases[p].checks[a].probe.port")
        assert f"({origin}" in problem.message
    build_plan(load(path))  # the spec's own default is fine
