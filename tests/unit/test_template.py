"""The Jinja2 sandbox: strict names, native types, shell quoting, no escapes."""

from __future__ import annotations

import shlex

import pytest

from matrix.results import Status
from matrix.spec import template

UNSAFE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ vars.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ (1).__class__.__base__.__subclasses__() }}",
]


@pytest.mark.parametrize("text", UNSAFE)
def test_sandbox_refuses_attribute_escapes(text):
    with pytest.raises(template.RenderError):
        template.render(text, {"vars": {"a": 1}})


def test_sandbox_escape_in_a_probe_param_is_a_spec_problem(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe:
                  kind: command
                  shell: "echo {{ ''.__class__.__mro__[1].__subclasses__() }}"
        """
    )
    [problem] = problems
    assert "private attributes (__" in problem.message
    assert problem.where.line == 9  # the shell: line itself


def test_sandbox_escape_in_a_diagnostic_is_a_spec_problem(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["false"]}
                diagnostic: "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        """
    )
    [problem] = problems
    assert "private attributes" in problem.message
    assert problem.where.line == 8


def test_sandbox_refuses_private_attributes_at_render_time():
    with pytest.raises(template.RenderError, match="unsafe"):
        template.render("{{ ''.__class__.__mro__ }}", {})


def test_single_expression_keeps_native_type():
    context = {"vars": {"min": 100, "ratio": 0.5, "flag": False, "hosts": ["a", "b"]}}
    assert template.render("{{ vars.min }}", context) == 100
    assert isinstance(template.render("{{ vars.min }}", context), int)
    assert template.render(" {{ vars.ratio }} ", context) == 0.5
    assert template.render("{{ vars.flag }}", context) is False
    assert template.render("{{ vars.hosts }}", context) == ["a", "b"]
    assert template.render("{{ vars.min * 2 }}", context) == 200
    assert template.render("min={{ vars.min }}", context) == "min=100"


def test_plain_strings_and_non_strings_pass_through():
    assert template.render("no braces", {}) == "no braces"
    assert template.render(42, {}) == 42


def test_strict_undefined_raises():
    with pytest.raises(template.RenderError, match="gpu_hst"):
        template.render("{{ vars.gpu_hst }}", {"vars": {"gpu_host": "x"}})
    with pytest.raises(template.RenderError, match="gpu_hst"):
        template.render("host={{ vars.gpu_hst }}", {"vars": {"gpu_host": "x"}})


def test_ge_with_a_templated_number_compiles_to_a_numeric_matcher(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {min: 100}
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: ["true"]}
                expect: {free_gb: {ge: "{{ vars.min }}"}}
        """
    )
    matcher = plan.tasks["a"].expect["free_gb"]
    assert matcher.text == ">= 100"
    assert matcher(150) and matcher(100)
    assert not matcher(99.5)
    assert not matcher("9")  # numeric, not string comparison: "9" > "100" as text


def test_shell_values_are_quoted():
    rendered = template.render(
        "echo {{ vars.evil }} {{ vars.n }}",
        {"vars": {"evil": "a; rm -rf / $(id) `id`", "n": 3}},
        shell=True,
    )
    assert shlex.split(rendered) == ["echo", "a; rm -rf / $(id) `id`", "3"]


def test_shell_quoting_stops_injection_through_the_engine(run_spec, by_id, tmp_path):
    marker = tmp_path / "pwned"
    run = run_spec(
        f"""
        version: 1
        name: t
        vars:
          evil: "x; touch {marker}"
          sub: "$(touch {marker})"
        phases:
          - id: p
            checks:
              - id: quoted
                probe: {{kind: command, shell: "echo {{{{ vars.evil }}}} {{{{ vars.sub }}}}"}}
        """
    )
    result = by_id(run)["quoted"]
    assert result.status is Status.passed
    assert result.facts["stdout"] == f"x; touch {marker} $(touch {marker})"
    assert not marker.exists()


def test_argv_never_meets_a_shell(run_spec, by_id, tmp_path):
    marker = tmp_path / "pwned"
    run = run_spec(
        f"""
        version: 1
        name: t
        vars: {{evil: "; touch {marker}"}}
        phases:
          - id: p
            checks:
              - id: a
                probe: {{kind: command, argv: ["echo", "{{{{ vars.evil }}}}", "$HOME"]}}
        """
    )
    assert by_id(run)["a"].facts["stdout"] == f"; touch {marker} $HOME"
    assert not marker.exists()


def test_truthy_follows_yaml_words():
    for value in ("false", "False", "no", "off", "0", "", "none", " NO ", False, 0, None):
        assert not template.truthy(value), value
    for value in ("true", "yes", "1", "gpu", True, 1):
        assert template.truthy(value), value


def test_references_lists_names_and_attributes():
    refs = set(template.references("{{ vars.a }} {{ secret['B'] }} {{ facts.x.y }} {{ error }}"))
    assert {("vars", "a"), ("secret", "B"), ("facts", "x"), ("error", None)} <= refs


def test_env_view_says_what_to_export():
    env = template.EnvView({"A": "1"}, "environment variable")
    assert env["A"] == "1"
    with pytest.raises(template.NotConfigured, match="export B="):
        env["B"]
    secrets = template.EnvView({"A": "1", "B": "2"}, "secret", frozenset({"A"}))
    with pytest.raises(template.RenderError, match="not listed under `secrets:`"):
        secrets["B"]
    assert list(secrets) == ["A"]
