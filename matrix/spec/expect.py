"""The matcher language over facts, in Goss's vocabulary.

`{free_gb: {ge: 100}, exit_code: 0}`: keys are fact paths (dotted for nesting), values are a
literal (equality) or a mapping of operators. Compiling is separate from testing so `validate`
reports a bad operator before anything runs.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version


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
        try:
            return self.test(value)
        except (TypeError, ValueError, InvalidVersion):
            return False


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    return float(value)


def _same(actual: Any, expected: Any) -> bool:
    """Equality that forgives '100' vs 100 and 'true' vs true (vars from --var and command
    output arrive as strings)."""
    if actual == expected:
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    if isinstance(actual, (int, float, str)) and isinstance(expected, (int, float, str)):
        try:
            return _number(actual) == _number(expected)
        except ValueError:
            return False
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
            raise ExpectError(path, f"expected a number, got {expected!r}") from None
        return Matcher(lambda v: fn(_number(v), bound), f"{symbol} {expected}")

    return build


def _match(expected: Any, path: tuple[Any, ...]) -> Matcher:
    try:
        pattern = re.compile(str(expected))
    except re.error as exc:
        raise ExpectError(path, f"invalid regular expression {expected!r}: {exc}") from None
    return Matcher(lambda v: pattern.search(str(v)) is not None, f"matching /{expected}/")


def _version(expected: Any, path: tuple[Any, ...]) -> Matcher:
    try:
        spec = SpecifierSet(str(expected))
    except InvalidSpecifier:
        raise ExpectError(
            path, f"expected a PEP 440 specifier like '>=2.5,<3', got {expected!r}"
        ) from None
    if not str(spec):
        raise ExpectError(path, "expected a PEP 440 specifier like '>=2.5,<3', got nothing")
    return Matcher(lambda v: spec.contains(Version(str(v)), prereleases=True), f"version {spec}")


def _in(expected: Any, path: tuple[Any, ...]) -> Matcher:
    if not isinstance(expected, list):
        raise ExpectError(path, f"`in` takes a list of allowed values, got {expected!r}")
    return Matcher(lambda v: any(_same(v, e) for e in expected), f"one of {expected}")


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
    "eq": lambda e, _: Matcher(lambda v: _same(v, e), f"== {e!r}"),
    "ne": lambda e, _: Matcher(lambda v: not _same(v, e), f"!= {e!r}"),
    "gt": _compare(">", operator.gt),
    "ge": _compare(">=", operator.ge),
    "lt": _compare("<", operator.lt),
    "le": _compare("<=", operator.le),
    "match": _match,
    "contains": lambda e, _: Matcher(lambda v: _contains(v, e), f"containing {e!r}"),
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


_MISSING = object()


def lookup(facts: Mapping[str, Any], path: str) -> Any:
    """A fact by dotted path; a literal key with dots wins over nesting."""
    if path in facts:
        return facts[path]
    value: Any = facts
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def evaluate(expectation: Expectation, facts: Mapping[str, Any]) -> list[str]:
    """One readable line per unmet matcher; empty means the check passes."""
    problems = []
    for path, matcher in expectation.items():
        value = lookup(facts, path)
        if value is _MISSING:
            seen = ", ".join(sorted(facts)) or "none"
            problems.append(f"{path} was not observed (facts: {seen})")
        elif not matcher(value):
            problems.append(f"{path} is {value!r}, expected {matcher.text}")
    return problems
