"""The Jinja2 sandbox: strict names, native types, shell quoting, no escapes."""

from __future__ import annotations

import contextlib
import shlex
import time

import jinja2.filters
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matrix import sandbox
from matrix.redact import MASK, Redactor
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


def test_null_reads_as_missing_not_as_python_none():
    """A fact a probe could not observe is null: `default` replaces it as it replaces a
    missing name, and text for people says "(no value)", never "None"."""
    context = {"facts": {"typed": None, "n": 0}, "vars": {"workers": 4}}
    assert template.render("W {{ facts.typed | default(vars.workers) }}", context) == "W 4"
    assert template.render("{{ facts.typed | d('?') }}", context) == "?"
    assert template.render("{{ facts.n | default(7) }}", context) == 0
    assert template.render("{{ facts.n | default(7, true) }}", context) == 7
    assert template.render("W {{ facts.typed }}", context) == "W (no value)"
    assert template.render_text("{{ facts.typed }}", context) == "(no value)"
    assert template.render("{{ facts.typed }}", context) is None  # a param keeps its null
    assert template.render("echo {{ facts.typed }}", context, shell=True) == "echo ''"


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


# --- the budget: time, data, integer size and nesting, for every render -------------------

BIG = {"big": "x" * 1_000_000}
TIME = "took over 1s"
DATA = "characters or items of data"
INT = "integer over 4096 bits"
BUDGET_CASES = [
    ("{{ 9 ** (9 ** 9) }}", INT),
    ("{{ 2 ** 5000 }}", INT),
    ("{{ (2 ** 4000) * (2 ** 4000) }}", INT),
    ("{{ 5 | round(-10 ** 9) }}", INT),
    ("{{ ('9' * 4000) | int * 2 }}", INT),
    ("{{ 5 | round(10 ** 9, 'ceil') }}", INT),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", TIME),
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        TIME,
    ),
    (
        "{% for x in range(100000) recursive %}{% if loop.depth < 3 %}{{ loop(range(100000)) }}"
        "{% endif %}{% endfor %}",
        TIME,
    ),
    ("{{ 'a' * 10 ** 10 }}", DATA),
    ("{{ 10 ** 10 * [1] }}", DATA),
    ("{{ 'x' | center(10 ** 9) }}", DATA),
    ("{{ 'x\nx' | indent(10 ** 9, true) }}", DATA),
    ("{{ '%0999999999d' | format(1) }}", DATA),
    ("{{ '%0999999999d' % 1 }}", DATA),
    ("{{ '%(a)999999999s' % {'a': 1} }}", DATA),
    ("{{ '{:>999999999}'.format(1) }}", DATA),
    ("{{ ('{0:4000000}' * 1000).format(1) }}", DATA),
    ("{{ 'x'.ljust(10 ** 9) }}", DATA),
    ("{{ 'x'.zfill(10 ** 9) }}", DATA),
    ("{{ ('\t' * 1000).expandtabs(10 ** 6) }}", DATA),
    ("{{ big.replace('', big) }}", DATA),
    ("{{ big | replace('x', big) }}", DATA),
    ("{{ big.join([big] * 100) }}", DATA),
    ("{{ ([big] * 8) | join }}", DATA),
    ("{{ range(100000) | batch(10 ** 9, 0) | list }}", DATA),
    ("{{ [1] | slice(10 ** 8) | list }}", DATA),
    ("{{ [[big]] | tojson(indent=10 ** 9) }}", DATA),
    ("{{ range(100000) | map('center', 4000000) | list }}", DATA),
    ("{{ dict.fromkeys(range(100000), big) }}", DATA),
    # a list that holds another twice, sixty times over: tiny in memory, 2**60 items printed
    (
        "{% set ns = namespace(a=[1]) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}"
        "{% endfor %}{{ ns.a }}",
        DATA,
    ),
    (
        "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        DATA,
    ),
    ("{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('a') }}", DATA),
    # literal text and folded constants, written at every pass of a loop
    (
        "{% for i in range(100000) %}{% for j in range(1000) %}"
        + "x" * 4000
        + "{% endfor %}{% endfor %}",
        DATA,
    ),
    ("{% set x %}{% for i in range(100000) %}" + "x" * 4000 + "{% endfor %}{% endset %}", DATA),
    ("{% for i in range(100000) %}{{ 'x' | center(100000) }}{% endfor %}", DATA),
    # CPython hashes nested tuples in C, recursively: 200k deep crashes the process
    (
        "{% set ns = namespace(t=()) %}{% for i in range(1000) %}{% set ns.t = (ns.t,) %}"
        "{% endfor %}{{ ns.t in {} }}",
        "nests values over 100 deep",
    ),
]


@pytest.mark.parametrize(("text", "limit"), BUDGET_CASES)
def test_a_template_past_its_budget_is_refused_quickly(text, limit):
    started = time.monotonic()
    with pytest.raises(template.RenderError) as info:
        template.render(text, BIG)
    assert time.monotonic() - started < sandbox.MAX_SECONDS + 1.5
    message = str(info.value)
    assert limit in message
    assert message.startswith("template exceeds a rendering limit")
    assert "the template must do less" in message


def test_the_message_names_the_template_cut_short():
    text = "{{ 'a' * 10 ** 10 }}" + " " * 1000
    with pytest.raises(template.RenderError) as info:
        template.render(text, {})
    assert "{{ 'a' * 10 ** 10 }}" in str(info.value)
    assert len(str(info.value)) < 400


def test_a_budget_spec_problem_points_at_the_line(spec_problems):
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: [echo, "{{ 'a' * 10 ** 10 }}"]}
        """
    )
    [problem] = problems
    assert "exceeds a rendering limit" in problem.message
    assert problem.where.line == 7  # the probe's line


WITHIN_BUDGET = [
    ("{{ 2 ** 4095 }}", 2**4095),
    ("{{ (2 ** 64) * 3 }}", 3 * 2**64),
    ("{{ big | length }}", 1_000_000),
    ("{{ (big ~ big) | length }}", 2_000_000),
    ("{{ ('a,' * 1000).split(',') | length }}", 1001),
    ("{% for i in range(3) %}{{ i }},{% endfor %}", "0,1,2,"),
    ("{% for i in range(1000) %}{% for j in range(100) %}{% endfor %}{% endfor %}ok", "ok"),
    ("{{ [[1, 2], [3]] | sum(start=[]) }}", [1, 2, 3]),
    ("{{ range(5) | sum }}", 10),
    ("{{ range(3) | map('string') | join('-') }}", "0-1-2"),
    ("{{ range(3) | map('string') }}", ["0", "1", "2"]),
    ("{{ {'a': [1, 2]} | tojson(indent=2) }}", '{\n  "a": [\n    1,\n    2\n  ]\n}'),
    ("{{ '%05.1f|%(x)s' % {'x': 1} if false else '%05.1f' % 2.25 }}", "002.2"),
    ("{{ '{:>6}|{x}'.format('ab', x=1) }}", "    ab|1"),
    ("{{ 'a-b'.replace('-', '+') }} {{ 'ab' | center(6) }}|", "a+b   ab  |"),
    ("{{ 'x' | indent(2, true) }}", "  x"),
    (
        "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }}",
        45,
    ),
    ("{% macro f(n) %}{{ n }}{% if n %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", "3210"),
    ("{{ namespace(a=1) }}", "<namespace>"),
]


@pytest.mark.parametrize(("text", "expected"), WITHIN_BUDGET)
def test_ordinary_templates_render_as_before(text, expected):
    rendered = template.render(text, BIG)
    assert rendered == expected or str(rendered) == str(expected)


def test_every_render_has_the_same_budget_first_or_cached():
    """Filters of constants run while compiling, on a budget of their own: the first render
    (which compiles) and a cached one agree."""
    text = "{{ 'x' | center(3000000) }}{{ 'y' | center(1000000) }}"
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(len(template.render(text, {})))
        except template.RenderError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1] == 4_000_000


ERRORS = [
    "{{ 1 / 0 }}",
    "{{ 'a' + 1 }}",
    "{{ 10.0 ** 400 }}",
    "{{ nope }}",
    "{% for %}",
    "{% include 'other.j2' %}",
    "{% extends 'base.j2' %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{{ " + "[" * 3000 + "]" * 3000 + " }}",
    "{{ (1).to_bytes(8, 'big') }}",  # methods outside the allowed list grow or change data
    "{{ 'a'.translate({97: 'b'}) }}",
    "{{ [1].append(2) }}",
    "{{ {}.update(a=1) }}",
    "{{ lipsum(5) }}",  # dropped: unbounded text
    "{{ 'x' | wordwrap(1) }}",  # dropped: textwrap runs 12 s on 1 MB past any check
    "{{ [1] | pprint }}",
    "{{ '%*d' % (5, 1) }}",
    "{{ '{:{}}'.format(1, 5) }}",
    "{{ [1, 'a'] | sort }}",
]


@pytest.mark.parametrize("text", ERRORS)
def test_every_failure_is_a_render_error_naming_the_template(text):
    with pytest.raises(template.RenderError) as info:
        template.render(text, {})
    assert text[:40] in str(info.value)


def nested(kind: str, n: int) -> str:
    """A template of one kind of nesting, n levels deep."""
    return {
        "operators": "{{ " + " + ".join(["1"] * n) + " }}",
        "filters": "{{ 1" + " | abs" * n + " }}",
        "attributes": "{{ vars" + ".a" * n + " }}",
        "indexes": "{{ vars.x" + "[0]" * n + " }}",
        "and": "{{ " + " and ".join(["true"] * n) + " }}",
        "not": "{{ " + "not " * n + "1 }}",
        "brackets": "{{ " + "(" * n + "1" + ")" * n + " }}",
        "lists": "{{ " + "[" * n + "]" * n + " | length }}",
        "blocks": "{% if 1 %}" * n + "x" + "{% endif %}" * n,
    }[kind]


NESTINGS = ["operators", "filters", "attributes", "indexes", "and", "not", "brackets", "lists"]


@pytest.mark.parametrize("kind", [*NESTINGS, "blocks"])
def test_a_template_nested_past_the_limit_is_a_spec_problem_at_its_place(cli, write_spec, kind):
    """Reading its names, compiling and rendering all walk the tree recursively: a tree
    deeper than MAX_NESTING is refused before any of them, where the template stands."""
    text = nested(kind, 500 if kind == "blocks" else 3000)
    with pytest.raises(template.RenderError, match="nests too deeply"):
        template.references(text)
    with pytest.raises(template.RenderError, match="nests too deeply"):
        template.render(text, {"vars": {}})
    path = write_spec(
        "version: 1\nname: t\nvars: {x: [1]}\nphases:\n  - id: p\n    checks:\n"
        f"      - id: c\n        probe: {{kind: command, argv: [echo, '{text}']}}\n"
    )
    done = cli("validate", str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path.name}:8:" in done.stderr and "argv[1]: template nests too deeply" in done.stderr


@pytest.mark.parametrize("kind", [*NESTINGS, "blocks"])
def test_a_template_nested_well_within_the_limit_renders(kind):
    itself: dict = {}
    itself["a"] = itself
    listed: list = []
    listed.append(listed)
    text = nested(kind, template.MAX_NESTING // 3)  # a level is one to three nodes
    assert template.render(text, {"vars": {"a": itself, "x": listed}}) not in (None, "")


def test_a_secret_read_is_remembered_for_redaction():
    secrets = template.EnvView({"TOKEN": "s3cret-value-4711"}, "secret", frozenset({"TOKEN"}))
    assert template.render("auth {{ secret.TOKEN }}", {"secret": secrets}) == (
        "auth s3cret-value-4711"
    )
    assert Redactor()("sent s3cret-value-4711") == f"sent {MASK}"
    secrets.get("TOKEN")  # the other way in remembers too
    other = template.EnvView({"OTHER": "0ther-secret-99", "X": "1"}, "secret", frozenset({"X"}))
    assert other.get("OTHER") is None  # not listed: reads as unset


# --- properties: any expression renders or raises RenderError, within its budget ----------

ATOMS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        ["10 ** 9", "2 ** 4000", "big", "'ab'", "'%s'", "'{}'", "[1, 2, 3]", "{'a': 1}", "none",
         "true", "1.5", "range(100000)", "range(3)", "namespace(a=1)", "'\t'", "''"]
    ),
)  # fmt: skip
OPERATORS = ["+", "-", "*", "/", "//", "%", "**", "~", "==", "<", "in", "and", "or"]
FILTERS = sorted(set(jinja2.filters.FILTERS) - {"random"})
METHODS = ["center", "ljust", "zfill", "replace", "join", "split", "format", "expandtabs",
           "count", "upper", "items", "get", "to_bytes", "translate", "append"]  # fmt: skip


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        args = st.lists(inner, max_size=2).map(", ".join)
        return st.one_of(
            st.tuples(inner, st.sampled_from(OPERATORS), inner).map(
                "({0[0]} {0[1]} {0[2]})".format
            ),
            st.tuples(inner, st.sampled_from(FILTERS), args).map(
                "({0[0]} | {0[1]}({0[2]}))".format
            ),
            st.tuples(inner, st.sampled_from(METHODS), args).map("{0[0]}.{0[1]}({0[2]})".format),
            st.lists(inner, max_size=3).map(", ".join).map("[{}]".format),
        )

    return st.recursive(ATOMS, extend, max_leaves=10)


def _renders_within_budget(text: str) -> None:
    started = time.monotonic()
    with contextlib.suppress(template.RenderError):
        template.render(text, BIG)
    assert time.monotonic() - started < sandbox.MAX_SECONDS + 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions())
def test_any_expression_renders_or_raises_a_render_error(expression):
    _renders_within_budget("{{ " + expression + " }}")
    _renders_within_budget("x {{ " + expression + " }} y")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(), _expressions())
def test_any_loop_renders_or_raises_a_render_error(iterable, body):
    _renders_within_budget(
        "{% set ns = namespace(v=1) %}{% for x in " + iterable + " %}{% set ns.v = " + body
        + " %}{{ ns.v }}{% endfor %}"
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="{}%#()[]|.,:'\"*+-/~ 0123456789abxyz\n", max_size=60))
def test_any_text_renders_or_raises_a_render_error(text):
    _renders_within_budget(text)
    _renders_within_budget("{{ " + text + " }}")
