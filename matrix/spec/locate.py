"""Where in the source a problem is: a location (keys and indexes) → file:line:col and a
readable key path; pydantic's errors and unknown template names as Problems at their lines."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from matrix.spec import template
from matrix.spec.models import Spec
from matrix.spec.problems import Position, Problem, did_you_mean
from matrix.spec.yaml import YList, YMap


def locate(data: Any, loc: Sequence[Any], *, key: bool = False) -> tuple[Position, str]:
    """Position and readable key path (ids instead of indexes) of a location in the source."""
    where = data.at if isinstance(data, (YMap, YList)) else Position("<spec>", 1, 1)
    names: list[str] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, YMap) and part in node:
            where = node.keys_at[part] if (last and key) else node.values_at[part]
            names.append(str(part))
            node = node[part]
        elif isinstance(node, YMap) and last and key:
            names.append(str(part))
        elif isinstance(node, YList) and isinstance(part, int) and part < len(node):
            where = node.items_at[part]
            item = node[part]
            ident = item.get("id") if isinstance(item, dict) else None
            names[-1:] = [f"{names[-1] if names else ''}[{ident if ident else part}]"]
            node = item
        else:
            break
    return where, ".".join(names)


def source_loc(data: Any, loc: Sequence[Any], *, missing: bool = False) -> list[Any]:
    """The parts of a pydantic error location that name keys and indexes in the source; the
    others are pydantic's own (union members, `[key]`). A user's key may hold any character,
    so the source decides, not the part's spelling. `missing`: the last part is the key that
    is absent, kept."""
    node, kept = data, []
    for part in loc[:-1] if missing else loc:
        named = isinstance(node, dict) and isinstance(part, str) and part in node
        if named or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
            kept.append(part)
    return [*kept, loc[-1]] if missing and loc else kept


def _model_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the model found at `loc` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def validation_problems(
    exc: ValidationError, data: Any, model: type[BaseModel], *, only_keys: bool = False
) -> list[Problem]:
    """Pydantic's errors as Problems at their spec lines; `only_keys`: unknown keys only."""
    problems = []
    for error in exc.errors(include_url=False):
        if only_keys and error["type"] != "extra_forbidden":
            continue
        loc = source_loc(data, error["loc"], missing=error["type"] == "missing")
        if error["type"] == "extra_forbidden":
            where, name = locate(data, loc, key=True)
            choices = _model_fields(model, loc[:-1])
            message = f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), choices)}"
            if choices:
                message += f"; expected one of: {', '.join(choices)}"
        else:
            where, name = locate(data, loc)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                where, _ = locate(data, loc[:-1])
                message = f"required key '{loc[-1]}' is missing"
            elif error["type"] == "literal_error":
                message = f"expected {error['ctx']['expected']}, got {error['input']!r}"
        problems.append(Problem(where, name, message))
    return problems


# ── template references ─────────────────────────────────────────────────────


def _strings(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*loc, i))


def template_problems(spec: Spec, data: YMap) -> list[tuple[tuple, Problem]]:
    """Unknown names in templates (`vars.gpu_hst`) with their locations, before anything runs."""
    problems: list[tuple[tuple, Problem]] = []
    known = {"vars": set(spec.vars), "secret": set(spec.secrets)}
    for p, phase in enumerate(spec.phases):
        for c, check in enumerate(phase.checks):
            scope = {**known, "matrix": set(check.matrix)}
            base = ("phases", p, "checks", c)
            for loc, text in _strings(data["phases"][p]["checks"][c], base):
                problems += [(loc, found) for found in _check_references(text, scope, data, loc)]
    for loc, text in _strings(data.get("targets", {}), ("targets",)):
        problems += [(loc, found) for found in _check_references(text, known, data, loc)]
    return problems


def _check_references(
    text: str, scope: Mapping[str, set[str]], data: YMap, loc: tuple
) -> list[Problem]:
    if not template.is_template(text):
        return []
    where, name = locate(data, loc)
    try:
        refs = list(template.references(text))
    except template.RenderError as exc:
        return [Problem(where, name, str(exc))]
    private = [attr for _, attr in refs if attr and attr.startswith("_")]
    if private:
        return [Problem(where, name, f"templates may not read private attributes ({private[0]})")]
    problems = []
    for root, attr in refs:
        if attr is None and not template.is_known_global(root):
            message = f"undefined name '{root}'{did_you_mean(root, template.CONTEXT_NAMES)}"
            problems.append(
                Problem(
                    where,
                    name,
                    message + "; templates see " + ", ".join(sorted(template.CONTEXT_NAMES)),
                )
            )
        elif attr is not None and root in scope and attr not in scope[root]:
            hint = did_you_mean(attr, scope[root])
            section = {"vars": "vars:", "secret": "secrets:", "matrix": "this check's matrix:"}[
                root
            ]
            problems.append(
                Problem(
                    where,
                    name,
                    f"undefined variable {root}.{attr}{hint}; declare it under {section}",
                )
            )
    return problems
