"""The matcher language: every operator, readable mismatches, paths into nested facts."""

from __future__ import annotations

import pytest

from matrix.spec.expect import ExpectError, compile_expect, compile_matcher, evaluate, lookup


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
        ({"gt": "many"}, "expected a number, got 'many'"),
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
    problems = evaluate(expectation, {"free_gb": 12.0, "mount": "/mnt/training"})
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
    problems = evaluate(expectation, {"a": 1, "b": 5, "c": [1], "d": "nope", "e": "z"})
    assert problems == [
        "a is 1, expected not (== 1)",
        "b is 5, expected (< 0) or (> 10)",
        "c is [1], expected length >= 2",
        "d is 'nope', expected matching /^ok/",
        "e is 'z', expected one of ['x', 'y']",
    ]


def test_missing_fact_names_what_was_observed():
    problems = evaluate(compile_expect({"free_gb": {"ge": 1}}), {"mount": "/", "total_gb": 3})
    assert problems == ["free_gb was not observed (facts: mount, total_gb)"]
    assert evaluate(compile_expect({"x": 1}), {}) == ["x was not observed (facts: none)"]


def test_all_matchers_hold_means_no_problems():
    expectation = compile_expect({"exit_code": 0, "stdout": {"contains": "ok"}})
    assert evaluate(expectation, {"exit_code": 0, "stdout": "all ok"}) == []


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
    assert evaluate(expectation, facts) == [
        "gpu.devices.5.name was not observed (facts: a, a.b, gpu, json)"
    ]


def test_matcher_never_raises_on_odd_values():
    for spec in ({"ge": 1}, {"len": 1}, {"version": ">=1"}, {"contains": "x"}, {"match": "x"}):
        for value in (None, {"a": 1}, object(), 3, [None]):
            assert compile_matcher(spec)(value) in (True, False)
