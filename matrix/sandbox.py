"""A jinja2 sandbox on a budget, for every template matrix renders from untrusted text (specs,
--var values, report templates, alert rules).

A render (or compile) run through `budgeted` has MAX_SECONDS of wall-clock time, MAX_DATA
units of data to make (a character of text, an item of a list or dict; output included),
integers of at most MAX_INT_BITS bits and values nested at most MAX_DEPTH deep; past any of
them it raises OverBudget. Time is checked at every call, operator, filter and loop
iteration; data is charged where it is made (operators, calls, filters, literals, `~`,
output), and an operation that can make far more than it is given (`*`, `**`, formatting
widths, `center`, `replace`, `join`…) is sized before it runs. Values are sized as text would
show them, a shared value once per reference, so a list that holds itself twice, twice over,
cannot grow past the budget either. A leaf: jinja2 only.
"""

from __future__ import annotations

import gc
import math
import operator
import re
import string
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from itertools import chain
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_environment
from jinja2.compiler import CodeGenerator
from jinja2.filters import make_attrgetter
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_SECONDS = 1.0
MAX_DATA = 1 << 22  # 4 Mi: a 1 MiB probe output passes through a few filters and out
MAX_INT_BITS = 4096
MAX_DEPTH = 100  # CPython hashes nested tuples recursively in C: 200k deep crashes it


class OverBudget(Exception):
    """A render went past one of its limits; `render` names the template."""


@dataclass(slots=True)
class _Budget:
    """What the render under way may still spend: time until `deadline`, `left` units."""

    deadline: float
    left: int = MAX_DATA


_BUDGET: ContextVar[_Budget] = ContextVar("template_budget")
_TOO_MUCH = f"would make over {MAX_DATA:,} characters or items of data"


def _need(units: int) -> _Budget:
    """Refuse an operation before it makes `units` of data the budget no longer has, or once
    the render is out of time."""
    budget = _BUDGET.get()
    if units > budget.left:
        raise OverBudget(_TOO_MUCH)
    if time.monotonic() > budget.deadline:
        raise OverBudget(f"took over {MAX_SECONDS:g}s")
    return budget


def _spend(units: int) -> None:
    _need(units).left -= units


def charge(value: Any) -> Any:
    """Count a value the template made against its budget, and pass it on."""
    _spend(_size(value))
    return value


_SCALARS = frozenset({int, float, bool, type(None)})
_EAGER = frozenset({str, list, tuple, dict, Markup, *_SCALARS})


def _size(value: Any) -> int:
    kind = type(value)
    if kind is str:
        return len(value)
    if kind in _SCALARS:
        return _scalar_size(value)
    return _measure(value)[0]


_ITEMS = type({}.items())
_COLLECTIONS = (list, tuple, set, frozenset, type({}.keys()), type({}.values()))


def _measure(value: Any, limit: int = MAX_DATA) -> tuple[int, int]:
    """(units, height) of a value as text would show it: a shared value counts at every
    reference, since printing, comparing or hashing it walks it that many times."""
    return _walk(value, 0, {}, limit)


def _walk(item: Any, depth: int, seen: dict[int, tuple[Any, int, int]], limit: int):
    if isinstance(item, _COLLECTIONS):
        parts: Any = item
    elif isinstance(item, dict):
        parts = chain.from_iterable(item.items())
    elif isinstance(item, _ITEMS):
        parts = chain.from_iterable(item)
    else:
        return (len(item) if isinstance(item, (str, bytes)) else _scalar_size(item)), 0
    if id(item) in seen:
        return seen[id(item)][1:]
    if depth >= MAX_DEPTH:
        raise OverBudget(f"nests values over {MAX_DEPTH} deep")
    seen[id(item)] = (item, 1, 0)  # held, so its id stays its own; inside itself it shows [...]
    units, height = 1, 1
    for part in parts:
        kind = type(part)
        if kind is str:
            units += len(part) + 1
        elif kind in _SCALARS:
            units += _scalar_size(part) + 1
        else:
            part_units, part_height = _walk(part, depth + 1, seen, limit)
            units += part_units + 1
            if part_height >= height:
                height = part_height + 1
        if units > limit:
            raise OverBudget(_TOO_MUCH)
    seen[id(item)] = (item, units, height)
    return units, height


def _scalar_size(value: Any) -> int:
    """Digits of an int, 1 for any other value that is not a collection."""
    return value.bit_length() // 3 + 1 if isinstance(value, int) else 1


def _int_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise OverBudget(f"computes an integer over {MAX_INT_BITS} bits")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _binop_cost(symbol: str, left: Any, right: Any) -> int:
    """Units `left symbol right` will make, checked before Python makes them (an integer
    product is checked after: two integers in budget multiply fast)."""
    if symbol == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _int_bits(right if right > MAX_INT_BITS else int(right * math.log2(abs(left))) + 1)
    elif symbol == "*" and not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
        if isinstance(right, int):
            return _size(left) * max(right, 0)
        if isinstance(left, int):
            return _size(right) * max(left, 0)
    elif symbol == "%" and isinstance(left, str):
        return _percent_cost(left, right)
    return 0


_PERCENT_FIELD = re.compile(r"%(\([^()%]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.?)", re.S)


def _percent_cost(text: str, args: Any) -> int:
    """Units of `text % args`: the text, the args once, each keyed field's value, and every
    width and precision as written."""
    units = len(text) + _size(args)
    for key, width, precision, kind in _PERCENT_FIELD.findall(text):
        if "*" in (width, precision) or kind == "(":
            raise ValueError("templates do not support `*` widths or nested keys in % formats")
        units += int(width or 0) + int(precision or 0)
        if key and isinstance(args, Mapping) and key[1:-1] in args:
            units += _size(args[key[1:-1]])
    return units


def _spec_cost(spec: str) -> int:
    return sum(int(number) for number in re.findall(r"\d+", spec))


def _format_cost(env: SandboxedEnvironment, text: str, args: Any, kwargs: Any) -> int:
    """Units of `text.format(...)`: each field's value (found as the sandbox finds it) and
    the numbers of its spec."""
    fields = SandboxedFormatter(env)
    units, auto = len(text), 0
    for _literal, name, spec, _conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if "{" in (spec or ""):
            raise ValueError("templates do not support a {} field inside a format spec")
        if name == "" or name[0] in ".[":
            name, auto = f"{auto}{name}", auto + 1
        value, _ = fields.get_field(name, args, kwargs)
        units += _size(value) + _spec_cost(spec or "")
    return units


def _widened(value: Any, width: Any = 80, fillchar: str = " ") -> int:
    return _size(value) + max(operator.index(width), 0)


def _replaced(text: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = str(text), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _joined(parts: Any, separator: Any = "", attribute: Any = None) -> int:
    return _size(parts) + _size(separator) * len(parts)


def _indented(text: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    text = str(text)
    pad = len(width) if isinstance(width, str) else max(operator.index(width), 0)
    return len(text) + (text.count("\n") + 1) * pad


def _padded(value: Any, count: Any, fill_with: Any = None) -> int:
    return _size(value) + max(operator.index(count), 0) * (_size(fill_with) + 1)


def _rounded(value: Any, precision: Any = 0, method: str = "common") -> int:
    _int_bits(abs(operator.index(precision)) * 10 // 3)  # rounding computes 10 ** precision
    return 0


def _as_json(value: Any, indent: Any = None) -> int:
    step = len(indent) if isinstance(indent, str) else max(operator.index(indent or 0), 0)
    units, height = _measure(value)
    return units * (1 + step * height) + step


# How much a filter or str method may make, from its arguments, for the few that can make
# far more than they are given. The rest make at most a few times their input.
_FILTER_COSTS: dict[str, Callable[..., int]] = {
    "batch": _padded,
    "center": _widened,
    "format": lambda value, *args, **kwargs: _percent_cost(str(value), kwargs or args),
    "indent": _indented,
    "join": _joined,
    "replace": _replaced,
    "round": _rounded,
    "slice": _padded,
    "tojson": _as_json,
}
_STR_METHOD_COSTS: dict[str, Callable[..., int]] = {
    "center": _widened,
    "ljust": _widened,
    "rjust": _widened,
    "zfill": _widened,
    "expandtabs": lambda text, tabsize=8: len(text) + text.count("\t") * operator.index(tabsize),
    "replace": _replaced,
    "join": lambda separator, parts: _joined(parts, separator),
}
# Filters whose own loops can run for seconds past any check (wordwrap: textwrap takes 12s on
# 1 MB) or whose output is HTML or grows with the nesting of its input (pprint).
_DROPPED_FILTERS = frozenset({"wordwrap", "urlize", "pprint"})
# Methods of built-in values templates may call; others (to_bytes, translate, fromkeys,
# append…) are refused like private attributes: they grow or change data past the budget.
_SAFE_METHODS = frozenset(
    """capitalize casefold center count endswith expandtabs find format format_map index
    isalnum isalpha isascii isdecimal isdigit isidentifier islower isnumeric isprintable
    isspace istitle isupper join ljust lower lstrip partition removeprefix removesuffix replace
    rfind rindex rjust rpartition rsplit rstrip split splitlines startswith strip swapcase
    title upper zfill copy get items keys values bit_length is_integer difference intersection
    isdisjoint issubset issuperset symmetric_difference union""".split()  # noqa: SIM905
)
_BUILTIN_VALUES = (str, bytes, int, float, complex, list, tuple, dict, set, frozenset, range)


@pass_environment
def _sum(environment: SandboxedEnvironment, iterable: Any, attribute: Any = None, start: Any = 0):
    """Jinja's `sum`, with lists and tuples joined in one pass: Python's `sum` copies the
    running total at every item, quadratic in their number."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    total = list(start)
    for item in iterable:
        _need(0)
        total += item
    return type(start)(total)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, with null counted as missing: a fact a probe could not observe is
    null, and `{{ facts.typed | default(vars.workers) }}` must not print None."""
    if value is None or isinstance(value, Undefined) or (boolean and not value):
        return default_value
    return value


def _metered_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the clock, runs only when what it will make fits in what is left
    of the budget (its input's size, or its cost when it can make more than it is given),
    and charges its result; a lazy result is made into a list, so chains of lazy filters
    never nest (consuming 100k nested generators crashes CPython)."""
    cost = _FILTER_COSTS.get(name)
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        _need(_size(args[skip]) if cost is None else cost(*args[skip:], **kwargs))
        result = fn(*args, **kwargs)
        if type(result) not in _EAGER and isinstance(result, Iterator):
            result = list(result)
        return charge(result)

    return run


def _each(iterable: Any, text: str) -> Iterator[Any]:
    """What a `for` loop iterates: charges the literal text of the loop's body (what one pass
    can write besides its expressions, which are charged as they are output) and checks the
    clock, at every item."""
    for item in iterable:
        charge(text)
        yield item


class _ShortNamespace(Namespace):
    """`namespace()` that prints as a name: namespaces nested in namespaces would otherwise
    print their contents once per reference."""

    def __repr__(self) -> str:
        return "<namespace>"


class _MeteredCode(CodeGenerator):
    """Compiles templates so literals, `~`, output values and loop passes are charged (the
    literal text outside loops is bounded by the template's own size)."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in list(node.find_all(nodes.For)):
            text = "".join(data.data for data in loop.find_all(nodes.TemplateData))
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("each"), [loop.iter, nodes.Const(text)], [], None, None
            ).set_lineno(loop.iter.lineno)
        super().visit_Template(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Any, **kwargs: Any) -> None:
        if not isinstance(node.node, nodes.EnvironmentAttribute):  # only ours: `each`
            super().visit_Call(node, frame, **kwargs)
            return
        self.write(f"environment.{node.node.name}(")
        for index, arg in enumerate(node.args):
            self.write(", " if index else "")
            self.visit(arg, frame)
        self.write(")")

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        """Only literal text is output as compiled: a value folded at compile time (`{{ 'x' |
        center(99999) }}`) goes out through `finalize`, charged at every pass of a loop."""
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def _metered(self, visit: Callable[..., None], node: nodes.Node, frame: Any) -> None:
        self.write("environment.charge(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self._metered(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self._metered(super().visit_Dict, node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self._metered(super().visit_Concat, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        if node.ctx == "load":
            self._metered(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)


def _own(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's keyword arguments without those jinja adds inside loops and blocks."""
    return {k: v for k, v in kwargs.items() if k not in ("_loop_vars", "_block_vars")}


class Sandbox(SandboxedEnvironment):
    """The sandbox with the budget's hooks: every operator, call and filter goes through it."""

    code_generator_class = _MeteredCode
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    charge = staticmethod(charge)
    each = staticmethod(_each)

    def __init__(self, finalize: Callable[[Any], Any] = charge, **options: Any):
        """`finalize` sees each `{{ }}` value (it must charge it); `options` are jinja2's, over
        strict undefined names, no autoescaping and the trailing newline kept."""
        defaults = {
            "undefined": StrictUndefined,
            "autoescape": False,
            "keep_trailing_newline": True,
        }
        super().__init__(finalize=finalize, **{**defaults, **options})
        del self.globals["lipsum"]
        self.globals["namespace"] = _ShortNamespace
        self.filters = {
            name: _metered_filter(name, fn)
            for name, fn in {
                **self.filters,
                "sum": _sum,
                "default": _default,
                "d": _default,
            }.items()
            if name not in _DROPPED_FILTERS
        }

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, _BUILTIN_VALUES) and callable(value) and attr not in _SAFE_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Any, symbol: str, left: Any, right: Any) -> Any:
        _need(_binop_cost(symbol, left, right))
        result = self.binop_table[symbol](left, right)
        if _is_int(result):
            _int_bits(result.bit_length())
        return charge(result)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str):  # a str method: it runs when its result fits the budget
            cost = _STR_METHOD_COSTS.get(obj.__name__)
            _need(len(owner) if cost is None else cost(owner, *args, **_own(kwargs)))
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(owner, str) and type(result) in (list, tuple):
            _spend(len(owner) + len(result) + 1)  # split, partition…: pieces of the owner
            return result
        return charge(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format`, sized before it runs: its widths and fields can make far more than
        the text they are written in."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def sized(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if value.__name__ == "format_map" and args else kwargs
            _need(_format_cost(self, value.__self__, args, mapping))
            return charge(wrapped(*args, **kwargs))

        return sized


def budgeted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `fn` on a fresh budget: what it renders or compiles in a Sandbox is bounded. The
    cyclic garbage collector waits until it is done: a collection walks the whole process's
    heap, which in a long-lived process (`matrix serve`, a test session) took a render of a
    million items from 1 s to 3 s, so the clock would measure the host, not the template."""
    token = _BUDGET.set(_Budget(time.monotonic() + MAX_SECONDS))
    collecting = gc.isenabled()
    gc.disable()
    try:
        return fn(*args, **kwargs)
    finally:
        if collecting:
            gc.enable()
        _BUDGET.reset(token)
