"""The docstrings written under model fields (`name: str` then `\"\"\"What it is.\"\"\"`), read
from source only when a schema or the docs are made: pydantic's use_attribute_docstrings
would read and compile every model's source file at import, on every `matrix validate`."""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import cache
from typing import Any, get_args

from pydantic import BaseModel


@cache
def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """{field: its docstring} for a model and the models it inherits from, nearest first."""
    found: dict[str, str] = {}
    for cls in model.__mro__:
        if cls is BaseModel or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        for name, text in _own(cls).items():
            found.setdefault(name, text)
    return {name: found[name] for name in model.model_fields if name in found}


def _own(cls: type) -> dict[str, str]:
    """The docstrings in one class body, from its source (none when the source is gone)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    if not isinstance(body, ast.ClassDef):
        return {}
    docs = {}
    for field, after in zip(body.body, body.body[1:]):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = inspect.cleandoc(after.value.value)
    return docs


def describe(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Put field docstrings into a JSON schema made from `model`: its own properties and
    those of every model it holds (its `$defs`, by class name), where none is set."""
    by_name = {cls.__name__: cls for cls in _held(model)}
    for name, part in [("", schema), *schema.get("$defs", {}).items()]:
        cls = model if not name else by_name.get(name)
        properties = part.get("properties", {}) if cls is not None else {}
        for field, text in (field_docs(cls) if cls is not None else {}).items():
            if field in properties:
                properties[field].setdefault("description", text)


def _held(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models a model's fields hold, at any depth (list[Phase], dict[str, TargetSpec]…)."""
    found: dict[type[BaseModel], None] = {}
    pending: list[Any] = [info.annotation for info in model.model_fields.values()]
    while pending:
        kind = pending.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in found:
            found[kind] = None
            pending += [info.annotation for info in kind.model_fields.values()]
        pending += get_args(kind)
    return list(found)
