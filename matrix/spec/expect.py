"""The matcher language over facts, in Goss's vocabulary.

`{free_gb: {ge: 100}, exit_code: 0}`: keys are fact paths (dotted for nesting), values are a
literal (equality) or a mapping of operators. Compiling is separate from testing so `validate`
reports a bad operator before anything runs.

Facts are a probe's output, so hostile: evaluating never raises, whatever their shape. Regexes
run on RE2 (linear time, so no pattern stalls a run on a long output) and numbers compare
exactly, integers of any size included.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import re2
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version


class ExpectError(ValueError):
    """An expectation is malformed; `path` says where inside `expect`."""

    def __init__(self, path: tuple[Any, ...], message: str):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Matcher:
    """A test over one value with a human description of what it expects."""

    test: Callable[[Any], bool]
    text: str

    def __call__(self, value: Any) -> bool:
        """False for a value of a kind the matcher does not compare (text for `ge`, a number
        for `len`, an invalid version); anything else that goes wrong propagates, so `not`
        cannot turn it into a pass."""
        try:
            return self.test(value)
        except (TypeError, ValueError):  # packaging's InvalidVersion is a ValueError
            return False


def _number(value: Any) -> int | float:
    """An int stays an int, compared exactly at any size (Python compares an int with a float
    exactly too); numeric text becomes a number; booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"not a number: {type(value).__name__}")
    if not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        return float(value)  # "1.5", "1e400" (inf), "nan"; else ValueError


SHOWN_CHARS = 1000  # of a value in a problem line: a 1 MiB output would drown the report


def _shown(value: Any) -> str:
    """A value as the spec would write it (`true`, `null`, `"abc"`, `["a", "b"]`: JSON, which
    YAML reads), cut short; a value JSON cannot show (nested past the recursion limit, an int
    past Python's 4300 digits) is named by its type."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except Exception as exc:
        return f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text)} chars)"


def _same(actual: Any, expected: Any) -> bool:
    """Equality that forgives '100' vs 100 and 'true' vs true (vars from --var and command
    output arrive as strings)."""
    if actual == expected:
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    try:
        return _number(actual) == _number(expected)
    except (TypeError, ValueError):
        return False


def _contains(actual: Any, expected: Any) -> bool:
    wanted = expected if isinstance(expected, list) else [expected]
    if isinstance(actual, str):
        return all(str(item) in actual for item in wanted)
    return all(item in actual for item in wanted)


def _compare(symbol: str, fn: Callable[[float, float], bool]) -> Callable[..., Matcher]:
    def build(expected: Any, path: tuple[Any, ...]) -> Matcher:
        try:
            bound = _number(expected)
        except (TypeError, ValueError):
            bound = math.nan
        if bound != bound:  # nan: no value would ever compare
            raise ExpectError(path, f"expected a number, got {_shown(expected)}")
        return Matcher(lambda v: fn(_number(v), bound), f"{symbol} {expected}")

    return build


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # RE2 would print each bad pattern to stderr itself
# What RE2's error says → the construct it does not support, by name.
_UNSUPPORTED = [
    (re.compile(pattern), name)
    for pattern, name in [
        (r"\(\?=", "lookahead (?=…)"),
        (r"\(\?!", "negative lookahead (?!…)"),
        (r"\(\?<=", "lookbehind (?<=…)"),
        (r"\(\?<!", "negative lookbehind (?<!…)"),
        (r"\(\?>", "atomic group (?>…)"),
        (r"\(\?P(=|$)|escape sequence: \\[1-9]", "backreference"),
        (r"repetition operator: [*+?}]\+", "possessive quantifier"),
        (r"\(\?#", "comment group (?#…)"),
        (r"\(\?[a-z]*x", "verbose flag x"),
        (r"escape sequence: \\Z", "\\Z (RE2 writes \\z)"),
        (r"repetition size", "repetition count over 1000 (nested counts multiply)"),
        (r"too large", "pattern this large"),
    ]
]


def _match(expected: Any, path: tuple[Any, ...]) -> Matcher:
    """RE2, not `re`: a pattern that backtracks (`^(a+)+$`) would run for minutes on a long
    output, deaf to timeouts and signals, so one RE2 rejects is a spec error, never `re`."""
    try:
        pattern = re2.compile(str(expected).encode("utf-8", "surrogatepass"), _RE2_OPTIONS)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args else "unsupported"
        names = [name for hint, name in _UNSUPPORTED if hint.search(why)]
        detail = f"{names[0]} is not supported ({why})" if names else why
        raise ExpectError(
            path,
            f"invalid regular expression /{expected}/: {detail}; matrix matches with RE2 "
            "syntax, in linear time",
        ) from None
    return Matcher(
        lambda v: pattern.search(str(v).encode("utf-8", "surrogatepass")) is not None,
        f"matching /{expected}/",
    )


def _version(expected: Any, path: tuple[Any, ...]) -> Matcher:
    try:
        spec = SpecifierSet(str(expected))
    except InvalidSpecifier:
        raise ExpectError(
            path, f"expected a PEP 440 specifier like '>=2.5,<3', got {_shown(expected)}"
        ) from None
    if not str(spec):
        raise ExpectError(path, "expected a PEP 440 specifier like '>=2.5,<3', got nothing")
    return Matcher(lambda v: spec.contains(Version(str(v)), prereleases=True), f"version {spec}")


def _in(expected: Any, path: tuple[Any, ...]) -> Matcher:
    if not isinstance(expected, list):
        raise ExpectError(path, f"`in` takes a list of allowed values, got {_shown(expected)}")
    return Matcher(lambda v: any(_same(v, e) for e in expected), f"one of {_shown(expected)}")


def _len(expected: Any, path: tuple[Any, ...]) -> Matcher:
    inner = compile_matcher(expected, path)
    return Matcher(lambda v: inner(len(v)), f"length {inner.text}")


def _not(expected: Any, path: tuple[Any, ...]) -> Matcher:
    inner = compile_matcher(expected, path)
    return Matcher(lambda v: not inner(v), f"not ({inner.text})")


def _group(name: str, combine: Callable[..., bool]) -> Callable[..., Matcher]:
    def build(expected: Any, path: tuple[Any, ...]) -> Matcher:
        if not isinstance(expected, list) or not expected:
            raise ExpectError(path, f"`{name}` takes a non-empty list of matchers")
        parts = [compile_matcher(e, (*path, i)) for i, e in enumerate(expected)]
        return Matcher(
            lambda v: combine(p(v) for p in parts), f" {name} ".join(f"({p.text})" for p in parts)
        )

    return build


OPERATORS: dict[str, Callable[[Any, tuple[Any, ...]], Matcher]] = {
    "eq": lambda e, _: Matcher(lambda v: _same(v, e), f"== {_shown(e)}"),
    "ne": lambda e, _: Matcher(lambda v: not _same(v, e), f"!= {_shown(e)}"),
    "gt": _compare(">", operator.gt),
    "ge": _compare(">=", operator.ge),
    "lt": _compare("<", operator.lt),
    "le": _compare("<=", operator.le),
    "match": _match,
    "contains": lambda e, _: Matcher(lambda v: _contains(v, e), f"containing {_shown(e)}"),
    "in": _in,
    "len": _len,
    "version": _version,
    "not": _not,
    "and": _group("and", all),
    "or": _group("or", any),
}


def compile_matcher(spec: Any, path: tuple[Any, ...] = ()) -> Matcher:
    """A literal means equality; a mapping is operators that must all hold."""
    if not isinstance(spec, Mapping):
        return OPERATORS["eq"](spec, path)
    if not spec:
        raise ExpectError(path, "empty matcher: give a value or an operator like {ge: 1}")
    parts = []
    for name, arg in spec.items():
        if name not in OPERATORS:
            hint = difflib.get_close_matches(str(name), OPERATORS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ExpectError(
                (*path, name),
                f"unknown matcher '{name}'{suggestion}; expected one of {', '.join(OPERATORS)}",
            )
        parts.append(OPERATORS[name](arg, (*path, name)))
    if len(parts) == 1:
        return parts[0]
    return Matcher(lambda v: all(p(v) for p in parts), ", ".join(p.text for p in parts))


Expectation = dict[str, Matcher]


def compile_expect(spec: Mapping[str, Any]) -> Expectation:
    return {str(path): compile_matcher(m, (path,)) for path, m in spec.items()}


MISSING = object()  # what `lookup` gives for a path the facts do not have


def lookup(facts: Mapping[str, Any], path: str) -> Any:
    """A fact by dotted path; a literal key with dots wins over nesting."""
    if isinstance(facts, Mapping) and path in facts:
        return facts[path]
    value: Any = facts
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdecimal() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


SHOWN_NAMES = 30  # fact names listed when an expected one is missing


def _names(facts: Any) -> str:
    if not isinstance(facts, Mapping):
        return f"a {type(facts).__name__}, not a mapping"
    names = sorted(map(str, facts))
    more = f", … {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more or "none"


def evaluate(expectation: Expectation, facts: Mapping[str, Any]) -> dict[str, str]:
    """{fact path: a readable line} for each unmet matcher, in the expectation's order; empty
    means the check passes. Never raises: a value no matcher can take (nested too deep to
    compare…) is a problem too."""
    problems = {}
    for path, matcher in expectation.items():
        value = lookup(facts, path)
        if value is MISSING:
            problems[path] = f"{path} was not observed (facts: {_names(facts)})"
            continue
        try:
            held = matcher(value)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            problems[path] = f"{path} could not be checked ({why}), expected {matcher.text}"
            continue
        if not held:
            problems[path] = f"{path} is {_shown(value)}, expected {matcher.text}"
    return problems


def unread(expectation: Expectation, facts: Mapping[str, Any]) -> str | None:
    """Why the expectation cannot be judged on these facts: it reads a fact the probe could
    not read whole, as the probe said in its `incomplete` fact ({fact: why}, e.g. a body cut
    at max_bytes). A part is no evidence of the whole, so such a check is an error, never a
    pass or a fail. An entry of a partial mapping that was kept is whole (a header, one
    sample's value) and is judged; one that is absent may have been left out, and is not."""
    marked = facts.get("incomplete")
    if not isinstance(marked, Mapping) or not marked:
        return None
    for path in expectation:
        parts = path.split(".")
        for end in range(1, len(parts) + 1):
            why = marked.get(".".join(parts[:end]))
            if not (isinstance(why, str) and why):
                continue
            if end == len(parts) or lookup(facts, path) is MISSING:
                return f"expect reads {path}, but {why}"
    return None
