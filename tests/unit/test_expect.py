"""The matcher language: every operator, readable mismatches, paths into nested facts."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matrix.spec.expect import ExpectError, compile_expect, compile_matcher, evaluate, lookup


def unmet(expectation: Any, facts: Any) -> list[str]:
    """The problem lines of `evaluate`, in order."""
    return list(evaluate(expectation, facts).values())


def holds(spec, value) -> bool:
    return compile_matcher(spec)(value)


@pytest.mark.parametrize(
    ("spec", "passing", "failing"),
    [
        ({"eq": 3}, [3, 3.0], [4, "x", None]),
        ({"eq": "ok"}, ["ok"], ["OK", "ok "]),
        ({"ne": 0}, [1, "x"], [0, 0.0]),
        ({"gt": 10}, [11, 10.5, "11"], [10, 9, "abc", None]),
        ({"ge": 10}, [10, 10.0, "10"], [9.99]),
        ({"lt": 1.5}, [1, "1.4"], [1.5, 2]),
        ({"le": -1}, [-1, -2], [0]),
        ({"match": r"^v\d+\.\d+$"}, ["v1.2", "v10.0"], ["1.2", "v1.2.3", 7]),
        ({"contains": "cuda"}, ["with cuda 12", ["cuda", "cpu"]], ["cpu only", ["cpu"]]),
        ({"contains": ["a", "b"]}, ["abc", ["b", "a", "c"]], ["ac", ["a"]]),
        ({"in": ["a", "b", 3]}, ["a", 3, 3.0], ["c", 4]),
        ({"len": 2}, [[1, 2], "ab", {"a": 1, "b": 2}], [[1], "abc", 5]),
        ({"len": {"ge": 1}}, [[0], "x"], [[], ""]),
        ({"version": ">=2.5,<3"}, ["2.5.0", "2.5.1+cu121", "2.9.0rc1"], ["3.0.0", "2.4", "abc"]),
        ({"not": {"eq": 1}}, [2, "x"], [1]),
        ({"not": {"contains": "error"}}, ["all good"], ["an error here"]),
        ({"and": [{"ge": 1}, {"le": 5}]}, [1, 3, 5], [0, 6]),
        ({"or": [{"eq": "a"}, {"gt": 10}]}, ["a", 11], ["b", 10]),
        ({"ge": 1, "le": 5}, [1, 5], [0, 6]),
        ("literal", ["literal"], ["other"]),
        (0, [0], [1]),
        (True, [True, "true"], [False, "false"]),
    ],
)
def test_operators_pass_and_fail(spec, passing, failing):
    for value in passing:
        assert holds(spec, value), (spec, value)
    for value in failing:
        assert not holds(spec, value), (spec, value)


def test_numbers_compare_as_numbers_not_text():
    assert holds({"gt": 9}, "10")  # as text "10" < "9"
    assert not holds({"ge": 100}, "9")


def test_booleans_are_not_numbers():
    assert not holds({"ge": 1}, True)
    with pytest.raises(ExpectError, match="expected a number"):
        compile_matcher({"ge": True})


def test_number_fact_equals_numeric_string_expectation():
    assert holds({"eq": "100"}, 100)
    assert holds({"eq": "1.5"}, 1.5)
    assert not holds({"eq": "abc"}, 100)


def test_numeric_string_fact_equals_number_expectation():
    # `expect: {stdout: 3}` after `wc -l` observes the string "3".
    assert holds(3, "3")
    assert holds({"in": [1, 2, 3]}, "2")


def test_version_matcher():
    matcher = compile_matcher({"version": ">=2.5,<3"})
    assert matcher("2.5.1+cu121")
    assert not matcher("3.0.0")
    assert not matcher("not a version")
    assert matcher.text == "version <3,>=2.5"


@pytest.mark.parametrize("bad", ["2.5", ">=two", "", "~="])
def test_invalid_version_specifier_is_an_expect_error(bad):
    with pytest.raises(ExpectError, match="PEP 440 specifier"):
        compile_matcher({"version": bad})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gt": "many"}, 'expected a number, got "many"'),
        ({"match": "(unclosed"}, "invalid regular expression"),
        ({"in": "abc"}, "`in` takes a list"),
        ({"and": []}, "`and` takes a non-empty list"),
        ({"or": {"eq": 1}}, "`or` takes a non-empty list"),
        ({}, "empty matcher"),
        ({"contain": "x"}, "unknown matcher 'contain' (did you mean 'contains'?"),
    ],
)
def test_malformed_matchers_raise_expect_error(spec, message):
    with pytest.raises(ExpectError) as info:
        compile_matcher(spec, ("field",))
    assert message in str(info.value)
    assert info.value.path[0] == "field"


def test_expect_error_path_points_inside_nested_matchers():
    with pytest.raises(ExpectError) as info:
        compile_expect({"x": {"and": [{"ge": 1}, {"lte": 2}]}})
    assert info.value.path == ("x", "and", 1, "lte")


def test_mismatch_text_is_readable():
    expectation = compile_expect({"free_gb": {"ge": 100}, "mount": "/mnt/training"})
    problems = unmet(expectation, {"free_gb": 12.0, "mount": "/mnt/training"})
    assert problems == ["free_gb is 12.0, expected >= 100"]


def test_mismatch_texts_for_compound_matchers():
    expectation = compile_expect(
        {
            "a": {"not": {"eq": 1}},
            "b": {"or": [{"lt": 0}, {"gt": 10}]},
            "c": {"len": {"ge": 2}},
            "d": {"match": "^ok"},
            "e": {"in": ["x", "y"]},
        }
    )
    problems = unmet(expectation, {"a": 1, "b": 5, "c": [1], "d": "nope", "e": "z"})
    assert problems == [
        "a is 1, expected not (== 1)",
        "b is 5, expected (< 0) or (> 10)",
        "c is [1], expected length >= 2",
        'd is "nope", expected matching /^ok/',
        'e is "z", expected one of ["x", "y"]',
    ]


def test_missing_fact_names_what_was_observed():
    problems = unmet(compile_expect({"free_gb": {"ge": 1}}), {"mount": "/", "total_gb": 3})
    assert problems == ["free_gb was not observed (facts: mount, total_gb)"]
    assert unmet(compile_expect({"x": 1}), {}) == ["x was not observed (facts: none)"]


def test_all_matchers_hold_means_no_problems():
    expectation = compile_expect({"exit_code": 0, "stdout": {"contains": "ok"}})
    assert unmet(expectation, {"exit_code": 0, "stdout": "all ok"}) == []


def test_dotted_paths_into_nested_dicts_and_lists():
    facts = {
        "gpu": {"devices": [{"name": "A100", "mem_gb": 80}, {"name": "H100", "mem_gb": 80}]},
        "json": {"version": {"major": 2}},
        "a.b": "literal key",
        "a": {"b": "nested"},
    }
    assert lookup(facts, "gpu.devices.1.name") == "H100"
    assert lookup(facts, "json.version.major") == 2
    assert lookup(facts, "a.b") == "literal key"  # a literal key with dots wins
    expectation = compile_expect(
        {"gpu.devices.0.mem_gb": {"ge": 40}, "gpu.devices": {"len": 2}, "gpu.devices.5.name": "x"}
    )
    assert unmet(expectation, facts) == [
        "gpu.devices.5.name was not observed (facts: a, a.b, gpu, json)"
    ]


def test_matcher_never_raises_on_odd_values():
    for spec in ({"ge": 1}, {"len": 1}, {"version": ">=1"}, {"contains": "x"}, {"match": "x"}):
        for value in (None, {"a": 1}, object(), 3, [None]):
            assert compile_matcher(spec)(value) in (True, False)


# --- numbers compare exactly, at any size; odd numbers never crash --------------------------

BIG = 10**400


def test_big_integers_compare_exactly():
    assert holds({"ge": BIG}, BIG)
    assert not holds({"ge": BIG}, BIG - 1)
    assert holds({"gt": BIG}, BIG + 1)
    assert holds({"eq": BIG}, str(BIG))  # as numeric text too
    assert not holds({"eq": BIG}, BIG + 1)
    assert holds({"in": [BIG]}, BIG)


def test_big_integers_compare_with_floats_without_overflow():
    assert holds({"gt": 1.5}, BIG)
    assert holds({"lt": BIG}, 1e308)
    assert not holds({"le": 1e308}, BIG)
    assert not holds({"ge": "1e400"}, BIG)  # 1e400 is inf as a float


def test_nan_and_inf_facts_fail_or_pass_without_crashing():
    nan, inf = float("nan"), float("inf")
    for spec in ({"ge": 1}, {"le": 1}, {"eq": 1}, {"ne": 1}, {"in": [1]}):
        assert holds(spec, nan) in (True, False)
    assert not holds({"ge": 1}, nan)
    assert not holds({"ge": 1}, "nan")
    assert holds({"ge": 1}, inf)
    assert not holds({"le": 1}, inf)


def test_a_nan_bound_is_an_expect_error():
    with pytest.raises(ExpectError, match="expected a number, got NaN"):
        compile_matcher({"ge": float("nan")})


# --- regexes run on RE2: linear time, and what RE2 cannot do is a spec error ---------------


def test_a_backtracking_pattern_matches_a_long_output_in_linear_time():
    matcher = compile_matcher({"match": "^(a+)+$"})
    started = time.monotonic()
    assert not matcher("a" * 1_000_000 + "b")
    assert matcher("a" * 1_000_000)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"(a)\1", "backreference"),
        (r"(?P<n>a)(?P=n)", "backreference"),
        ("(?=a)", "lookahead"),
        ("(?!a)", "negative lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "negative lookbehind"),
        ("a++", "possessive quantifier"),
        ("(?>a)", "atomic group"),
        ("a{1001}", "repetition count over 1000"),
        ("(?x) a", "verbose flag"),
        ("(unclosed", "missing )"),
    ],
)
def test_a_pattern_re2_cannot_run_is_an_expect_error_naming_why(pattern, construct, capfd):
    with pytest.raises(ExpectError) as info:
        compile_matcher({"match": pattern}, ("stdout",))
    message = str(info.value)
    assert construct in message
    assert "RE2 syntax, in linear time" in message
    assert info.value.path == ("stdout", "match")
    assert capfd.readouterr().err == ""  # RE2 logs nothing of its own


def test_match_takes_any_value_as_text():
    assert holds({"match": r"^\d+$"}, 42)
    assert holds({"match": "x"}, "a\udcffx")  # a lone surrogate (from JSON) does not crash
    assert holds({"match": "(?i)CUDA"}, "with cuda 12")


# --- evaluate never raises, whatever the facts ---------------------------------------------


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


HOSTILE_FACTS = [
    {"a": _deep(100_000), "b": 10**5000, "c": "x" * 2_000_000, "d": float("nan")},
    {"a": None, "b": {"x": [1]}, "c": ["\udcff"], "d": object()},
    {1: "int key", "a": 1},
    [1, 2, 3],
    None,
    "text",
]
HOSTILE_EXPECT = {
    "a": {"not": {"match": "x"}},
    "b": {"ge": 1},
    "c": {"contains": "y"},
    "d": {"len": {"gt": 0}},
    "a.0.0": {"eq": [1]},
    "e": {"version": ">=1"},
}


@pytest.mark.parametrize("facts", HOSTILE_FACTS, ids=lambda f: type(f).__name__)
def test_evaluate_never_raises_on_hostile_facts(facts):
    problems = unmet(compile_expect(HOSTILE_EXPECT), facts)
    assert all(isinstance(p, str) and len(p) < 5000 for p in problems)
    assert problems  # nothing here meets every matcher


def test_a_value_too_deep_to_check_fails_even_under_not():
    [problem] = unmet(compile_expect({"a": {"not": {"match": "x"}}}), {"a": _deep(100_000)})
    assert problem.startswith("a could not be checked (RecursionError")


def test_a_long_value_is_cut_short_and_an_unprintable_one_named():
    expectation = compile_expect({"out": {"contains": "ok"}, "n": {"lt": 0}})
    long_line, big_line = unmet(expectation, {"out": "x" * 10_000, "n": 10**5000})
    assert long_line.startswith('out is "xxx')
    assert '… (10002 chars), expected containing "ok"' in long_line
    assert big_line == "n is <int that cannot be shown: ValueError>, expected < 0"


def test_missing_fact_lists_at_most_some_names():
    facts = {f"f{i:03}": i for i in range(100)}
    [problem] = unmet(compile_expect({"x": 1}), facts)
    assert problem.endswith("f029, … 70 more)")


# --- properties --------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates too
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)
OPERANDS = JSON | st.sampled_from(["^(a+)+$", ">=2.5,<3", "1e400", "nan", "(?=x)", "[", "10"])


def _matchers() -> st.SearchStrategy[Any]:
    leaf = st.tuples(
        st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le", "match", "contains", "in", "version"]),
        OPERANDS,
    ).map(lambda pair: {pair[0]: pair[1]})
    return st.recursive(
        leaf | OPERANDS,
        lambda inner: st.one_of(
            inner.map(lambda m: {"not": m}),
            inner.map(lambda m: {"len": m}),
            st.lists(inner, min_size=1, max_size=3).map(lambda ms: {"and": ms}),
            st.lists(inner, min_size=1, max_size=3).map(lambda ms: {"or": ms}),
        ),
        max_leaves=6,
    )


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "a.0", "b.x.1", "c"]), _matchers(), max_size=3), JSON
)
def test_any_expectation_over_any_facts_gives_problems_or_none(spec, facts):
    try:
        expectation = compile_expect(spec)
    except ExpectError:
        return
    problems = unmet(expectation, facts)
    assert isinstance(problems, list)
    assert all(isinstance(problem, str) for problem in problems)
