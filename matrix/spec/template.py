"""Jinja2 sandbox for every templated string in a spec.

Strict undefined variables catch typos; a string that is one `{{ expression }}` renders to the
expression's native value so `ge: "{{ vars.min_free_gb }}"` stays a number; in `shell:` strings
every expression is shell-quoted so vars can never inject commands.

Every render runs on the budget of matrix/sandbox.py, because a spec (or a var from the
command line) is untrusted input and templates run for every param of every task; a render
past a limit is a RenderError that names the template.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.runtime import Undefined

from matrix import redact
from matrix.sandbox import OverBudget, Sandbox, budgeted, charge

CONTEXT_NAMES = frozenset(
    {"vars", "env", "target", "facts", "error", "check", "secret", "matrix", "reason"}
)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


class RenderError(Exception):
    """A template could not be rendered; the message says which name or why."""


class NotConfigured(RenderError):
    """An environment variable or secret a template needs is not set on this machine."""


NO_VALUE = "(no value)"  # what a null reads as in text for people: not Python's None
_PLAIN = Sandbox(finalize=lambda value: charge(NO_VALUE if value is None else value))
_SHELL = Sandbox(finalize=lambda value: shlex.quote(str(charge("" if value is None else value))))


def is_template(text: Any) -> bool:
    return isinstance(text, str) and ("{{" in text or "{%" in text)


@lru_cache(maxsize=4096)
def _compile(text: str, shell: bool) -> Any:
    """Compiled on a budget of its own (filters of constants run while compiling), so every
    render of a template, first or cached, has the same budget; parsed (and its nesting
    checked) first, since compiling walks the tree recursively."""
    try:
        _parsed(text)
    except RenderError as exc:
        raise RenderError(f"{exc} in {_shown(text)}") from None
    single = None if shell else _SINGLE.match(text)
    env = _SHELL if shell else _PLAIN
    if single and "{{" not in single["expr"]:
        return budgeted(env.compile_expression, single["expr"], undefined_to_none=False)
    return budgeted(env.from_string, text).render


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 200 else repr(text[:200]) + "…"


def render(text: Any, context: Mapping[str, Any], *, shell: bool = False) -> Any:
    """Render one value on a fresh budget; non-strings and plain strings pass through."""
    if not is_template(text):
        return text
    try:
        value = budgeted(_compile(text, shell), **context)
        if isinstance(value, Undefined):
            str(value)  # raises UndefinedError with the missing name
    except RenderError:
        raise
    except OverBudget as exc:
        raise RenderError(
            f"template exceeds a rendering limit: it {exc}; the template must do less: "
            f"{_shown(text)}"
        ) from None
    except TemplateError as exc:
        raise RenderError(f"{exc.message or type(exc).__name__} in {_shown(text)}") from None
    except Exception as exc:
        raise RenderError(f"{type(exc).__name__}: {exc} in {_shown(text)}") from None
    return value


def render_text(text: Any, context: Mapping[str, Any]) -> str:
    """Render a value to the text a person reads (a title, a diagnostic, a host name): a
    template that is one `{{ expression }}` of null reads as NO_VALUE too."""
    value = render(text, context)
    return NO_VALUE if value is None else str(value)


def render_tree(value: Any, context: Mapping[str, Any], *, shell_keys: frozenset = frozenset()):
    """Render every string in nested dicts/lists; keys in shell_keys render shell-quoted."""
    if isinstance(value, Mapping):
        return {
            k: (
                render(v, context, shell=True)
                if k in shell_keys and isinstance(v, str)
                else render_tree(v, context)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_tree(v, context) for v in value]
    return render(value, context)


def truthy(value: Any) -> bool:
    """`when` semantics: YAML-ish strings like 'false', 'no', '0', '' are false."""
    if isinstance(value, str):
        return value.strip().lower() not in {"", "false", "no", "off", "0", "none"}
    return bool(value)


MAX_NESTING = 100  # what a person writes stays far below; Python's stack holds about 200
_TOO_DEEP = (
    f"template nests too deeply: operators, filters, brackets or blocks inside one another, "
    f"at most {MAX_NESTING} levels (fewer for brackets); split it into several vars"
)


@lru_cache(maxsize=4096)
def _parsed(text: str) -> nodes.Template:
    """The template's tree, at most MAX_NESTING deep, so no later walk of it (reading its
    names, compiling, rendering) can run out of stack. Raises RenderError."""
    try:
        tree = _PLAIN.parse(text)
    except TemplateError as exc:
        raise RenderError(f"template syntax error: {exc.message}") from None
    except RecursionError:  # the parser recurses on brackets and blocks
        raise RenderError(_TOO_DEEP) from None
    except MemoryError:
        raise RenderError("template too large to parse") from None
    level: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while level:  # iterative: the tree may be thousands deep (`1 + 1 + …`)
        node, depth = level.pop()
        if depth > MAX_NESTING:
            raise RenderError(_TOO_DEEP)
        level.extend((child, depth + 1) for child in node.iter_child_nodes())
    return tree


@lru_cache(maxsize=4096)
def references(text: str) -> tuple[tuple[str, str | None], ...]:
    """(name, attribute) pairs a template reads, e.g. ('vars', 'gpu_host'); the name is ''
    when the attribute is read off an expression. Raises RenderError on a syntax error."""
    tree = _parsed(text)
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    read = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    found: list[tuple[str, str | None]] = [(name, None) for name in sorted(read - bound)]
    for node in tree.find_all(nodes.Getattr):
        found.append(((node.node.name if isinstance(node.node, nodes.Name) else ""), node.attr))
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.node, nodes.Name) and isinstance(node.arg, nodes.Const):
            found.append((node.node.name, str(node.arg.value)))
    return tuple(found)


def is_known_global(name: str) -> bool:
    return name in CONTEXT_NAMES or name in _PLAIN.globals


class EnvView(Mapping[str, str]):
    """`env` / `secret` in templates: a missing variable says exactly what to export; a
    secret read is remembered for redaction, so any text that quotes it is masked."""

    def __init__(self, source: Mapping[str, str], label: str, allowed: frozenset | None = None):
        self._source = source
        self._label = label
        self._allowed = allowed

    def _read(self, value: str) -> str:
        if self._label == "secret":
            redact.remember(value)
        return value

    def __getitem__(self, name: str) -> str:
        if self._allowed is not None and name not in self._allowed:
            raise RenderError(f"{name} is not listed under `secrets:` in the spec")
        if name not in self._source:
            raise NotConfigured(f"{self._label} {name} is not set: export {name}=… and re-run")
        return self._read(self._source[name])

    def get(self, name: str, default: Any = None) -> Any:
        """Like `name in self`, an unlisted secret reads as not set."""
        return self._read(self._source[name]) if name in self else default

    def __contains__(self, name: object) -> bool:
        """`'SLACK_WEBHOOK' in secret` asks whether it is set, never raises."""
        allowed = self._allowed is None or name in self._allowed
        return allowed and name in self._source

    def __iter__(self) -> Iterator[str]:
        return iter(self._allowed if self._allowed is not None else self._source)

    def __len__(self) -> int:
        return len(self._allowed if self._allowed is not None else self._source)
