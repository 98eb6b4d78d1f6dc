"""YAML → Spec: safe parse with limits, includes, vars overrides, problems with file:line:col.

Every mapping and list keeps the position of each key and value, so any problem found later
(by pydantic, the template checker or the planner) points at the exact line the user wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from matrix import template
from matrix.problems import Position, Problem, SpecInvalid, did_you_mean
from matrix.spec import Spec

MAX_BYTES = 2 * 1024 * 1024
MAX_ALIASES = 200
MAX_NODES = 200_000


class YMap(dict):
    """A YAML mapping that remembers where each key and value was written."""

    at: Position

    def __init__(self, at: Position):
        super().__init__()
        self.at = at
        self.keys_at: dict[Any, Position] = {}
        self.values_at: dict[Any, Position] = {}

    def put(self, key: Any, value: Any, key_at: Position, value_at: Position) -> None:
        self[key] = value
        self.keys_at[key] = key_at
        self.values_at[key] = value_at

    def copy_from(self, other: YMap, key: Any, value: Any = None) -> None:
        self.put(
            key, other[key] if value is None else value, other.keys_at[key], other.values_at[key]
        )


class YList(list):
    """A YAML sequence that remembers where each item was written."""

    def __init__(self, at: Position, items: Sequence[tuple[Any, Position]] = ()):
        super().__init__(item for item, _ in items)
        self.at = at
        self.items_at = [pos for _, pos in items]


class _Limit(Exception):
    def __init__(self, where: Position, message: str):
        self.problem = Problem(where, "", message)


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10× faster


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe loading that records positions, rejects duplicate keys and bounds alias use."""

    def __init__(self, stream: str, name: str):
        super().__init__(stream)
        self.name = name
        self.aliases = 0
        self.problems: list[Problem] = []

    def at(self, node: yaml.Node) -> Position:
        mark = node.start_mark
        return Position(self.name, mark.line + 1, mark.column + 1)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects:  # an alias: the same node used again
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                message = f"more than {MAX_ALIASES} YAML aliases; refusing to expand (alias bomb?)"
                raise _Limit(self.at(node), message)
        return super().construct_object(node, deep=deep)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[YMap]:
    data = YMap(loader.at(node))
    yield data
    # `<<: *base` merges come first after flattening; the map's own keys override them
    own_nodes = {id(key_node) for key_node, _ in node.value}
    own_keys: set[Any] = set()
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            loader.problems.append(
                Problem(loader.at(key_node), "", "mapping keys must be plain scalars")
            )
            continue
        own = id(key_node) in own_nodes
        if own and key in own_keys:
            first = data.keys_at[key]
            loader.problems.append(
                Problem(
                    loader.at(key_node), str(key), f"duplicate key (first at line {first.line})"
                )
            )
        if own:
            own_keys.add(key)
        value = loader.construct_object(value_node, deep=True)
        data.put(key, value, loader.at(key_node), loader.at(value_node))


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[YList]:
    data = YList(loader.at(node))
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.items_at.append(loader.at(item))


def _yaml12_booleans(loader: type[yaml.resolver.Resolver]) -> None:
    """Only true/false are booleans (YAML 1.2): `on:` and `needs: [no]` must stay strings."""
    loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )


_yaml12_booleans(_Loader)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def display_name(path: Path) -> str:
    """Paths as the user thinks of them: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _count_nodes(value: Any, budget: list[int], where: Position) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Limit(where, f"document expands to more than {MAX_NODES} values (alias bomb?)")
    if isinstance(value, dict):
        for item in value.values():
            _count_nodes(item, budget, where)
    elif isinstance(value, list):
        for item in value:
            _count_nodes(item, budget, where)


def read_yaml(path: Path) -> Any:
    """Parse one YAML file safely; raise SpecInvalid with positions on any problem."""
    name = display_name(path)
    start = Position(name, 1, 1)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecInvalid(
                [Problem(start, "", f"file is {size} bytes; the limit is {MAX_BYTES}")]
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecInvalid([Problem(start, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecInvalid([Problem(start, "", f"cannot read file: {exc}")]) from None
    loader = _Loader(text, name)
    try:
        data = loader.get_single_data()
        _count_nodes(data, [MAX_NODES], start)
    except _Limit as exc:
        raise SpecInvalid([exc.problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(name, mark.line + 1, mark.column + 1) if mark else start
        raise SpecInvalid([Problem(where, "", f"malformed YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise SpecInvalid([Problem(start, "", f"malformed YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise SpecInvalid(loader.problems)
    return data


# ── includes ────────────────────────────────────────────────────────────────


def _merge(base: YMap, over: YMap) -> YMap:
    """`over` wins per key; vars/targets merge by name, secrets union, phases merge by id."""
    merged = YMap(over.at)
    for key in base:
        merged.copy_from(base, key)
    for key, value in over.items():
        if (
            key in ("vars", "targets")
            and isinstance(value, dict)
            and isinstance(base.get(key), dict)
        ):
            inner = YMap(value.at)
            for name in base[key]:
                inner.copy_from(base[key], name)
            for name in value:
                inner.copy_from(value, name)
            merged.copy_from(over, key, inner)
        elif (
            key in ("secrets", "phases")
            and isinstance(value, list)
            and isinstance(base.get(key), list)
        ):
            combine = _union if key == "secrets" else _merge_phases
            merged.copy_from(over, key, combine(base[key], value))
        else:
            merged.copy_from(over, key)
    return merged


def _union(base: YList, over: YList) -> YList:
    pairs = list(zip(base, base.items_at))
    pairs += [(v, p) for v, p in zip(over, over.items_at) if v not in base]
    return YList(over.at, pairs)


def _merge_phases(base: YList, over: YList) -> YList:
    pairs = list(zip(base, base.items_at))
    index = {p.get("id"): i for i, (p, _) in enumerate(pairs) if isinstance(p, dict)}
    for phase, at in zip(over, over.items_at):
        found = index.get(phase.get("id")) if isinstance(phase, dict) else None
        if found is None:
            pairs.append((phase, at))
            continue
        old = pairs[found][0]
        checks = _concat(old.get("checks"), phase.get("checks"))
        merged = _merge(old, phase)
        if checks is not None:
            merged.put("checks", checks, merged.keys_at["checks"], merged.values_at["checks"])
        pairs[found] = (merged, pairs[found][1])
    return YList(over.at, pairs)


def _concat(first: Any, second: Any) -> YList | None:
    if not isinstance(first, YList) or not isinstance(second, YList):
        return None
    return YList(second.at, [*zip(first, first.items_at), *zip(second, second.items_at)])


def _read_tree(path: Path, root: Path, allow_outside: bool, stack: tuple[Path, ...]) -> YMap:
    data = read_yaml(path)
    if not isinstance(data, YMap):
        where = Position(display_name(path), 1, 1)
        raise SpecInvalid(
            [Problem(where, "", "a spec must be a YAML mapping with version, name, phases")]
        )
    includes = data.pop("include", None)
    if includes is None:
        return data
    inc_at = data.values_at["include"]
    if not isinstance(includes, YList) or not all(isinstance(i, str) for i in includes):
        raise SpecInvalid([Problem(inc_at, "include", "expected a list of file paths")])
    merged = YMap(data.at)
    for item, at in zip(includes, includes.items_at):
        target = (path.parent / item).resolve()
        if not allow_outside and not target.is_relative_to(root):
            message = (
                f"{item} is outside {display_name(root)}; pass --allow-include-outside to allow"
            )
            raise SpecInvalid([Problem(at, "include", message)])
        if target in stack:
            chain = " → ".join(display_name(p) for p in (*stack, target))
            raise SpecInvalid([Problem(at, "include", f"include cycle: {chain}")])
        if not target.is_file():
            raise SpecInvalid(
                [Problem(at, "include", f"{item} not found next to {display_name(path)}")]
            )
        merged = _merge(merged, _read_tree(target, root, allow_outside, (*stack, target)))
    return _merge(merged, data)


# ── vars ────────────────────────────────────────────────────────────────────

_INT = re.compile(r"^[-+]?\d+$")


def parse_var(text: str) -> tuple[str, Any]:
    """`k=v` from the command line: ints and true/false are typed, the rest stays a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecInvalid([Problem(Position("--var", 1, 1), text, "expected key=value")])
    if _INT.match(value):
        return key.strip(), int(value)
    if value.lower() in ("true", "false"):
        return key.strip(), value.lower() == "true"
    return key.strip(), value


def _override(
    data: YMap, section: str, files: Sequence[Path], entries: Sequence[tuple[str, Any, Position]]
) -> None:
    """Command-line overrides of a top-level mapping (`vars`, `targets`): files first, each
    replacing whole entries, then single `--flag` entries; positions point at their source."""
    current = data.get(section)
    merged = YMap(current.at if isinstance(current, YMap) else data.at)
    if isinstance(current, YMap):
        for key in current:
            merged.copy_from(current, key)
    for path in files:
        extra = read_yaml(path)
        if not isinstance(extra, YMap):
            where = Position(display_name(path), 1, 1)
            raise SpecInvalid([Problem(where, "", f"a {section} file must be a mapping")])
        for key in extra:
            merged.copy_from(extra, key)
    for key, value, at in entries:
        merged.put(key, value, at, at)
    if merged or section in data:
        data.put(section, merged, data.keys_at.get(section, data.at), merged.at)


def parse_target(text: str, index: int, current: Any) -> tuple[str, Any, Position]:
    """`--target gpu=h1,h2`: the group's hosts; its other options (user, key…) are kept."""
    name, sep, hosts = text.partition("=")
    at = Position("--target", index, 1)
    if not sep or not name.strip() or not hosts.strip():
        raise SpecInvalid([Problem(at, text, "expected NAME=host1,host2")])
    group = YMap(at)
    if isinstance(current, YMap):
        for key in current:
            group.copy_from(current, key)
    listed = YList(at, [(h.strip(), at) for h in hosts.split(",") if h.strip()])
    group.put("hosts", listed, at, at)
    return name.strip(), group, at


# ── locating problems ───────────────────────────────────────────────────────


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
    from typing import get_args

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
        loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
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


# ── entry point ─────────────────────────────────────────────────────────────


# ── validation that keeps going ──────────────────────────────────────────────

REQUIRED = {"check": {"id", "probe"}, "phase": {"id", "checks"}, "target": set()}
PLACEHOLDERS = {"version": 1, "name": "?"}
MAX_ROUNDS = 5


def _row_of(loc: Sequence[Any]) -> tuple[str, tuple, Any]:
    """(row kind, row location, key under the row) for a problem location."""
    if len(loc) >= 4 and loc[0] == "phases" and loc[2] == "checks" and isinstance(loc[3], int):
        return "check", tuple(loc[:4]), loc[4] if len(loc) > 4 else None
    if len(loc) >= 2 and loc[0] == "phases" and isinstance(loc[1], int):
        return "phase", tuple(loc[:2]), loc[2] if len(loc) > 2 else None
    if len(loc) >= 2 and loc[0] == "targets":
        return "target", tuple(loc[:2]), loc[2] if len(loc) > 2 else None
    return "spec", (), loc[0] if loc else None


def _node(data: Any, loc: Sequence[Any]) -> Any:
    for part in loc:
        data = data[part]
    return data


def _set_aside(data: YMap, errors: list[dict[str, Any]], dropped: set[str]) -> None:
    """Remove what pydantic rejected so the rest can be validated and planned: a bad key
    falls back to its default; a row whose required key is bad is dropped whole."""
    rows: set[tuple] = set()
    for error in errors:
        kind, row, key = _row_of([p for p in error["loc"] if not (isinstance(p, str) and "[" in p)])
        if kind == "spec":
            if key in PLACEHOLDERS:
                data.put(key, PLACEHOLDERS[key], data.at, data.at)
            elif key in data:
                del data[key]
        elif key is None or key in REQUIRED[kind] or not isinstance(_node(data, row), dict):
            rows.add(row)
        elif key in _node(data, row):
            del _node(data, row)[key]
    for row in sorted(rows, key=lambda r: [str(p) for p in r], reverse=True):
        parent, index = _node(data, row[:-1]), row[-1]
        item = parent[index]
        if isinstance(item, dict):
            dropped.add(str(item.get("id", index)))
            checks = item.get("checks") or []
            dropped.update(str(c.get("id")) for c in checks if isinstance(c, dict))
        del parent[index]
        if isinstance(parent, YList):
            del parent.items_at[index]


@dataclass
class Loaded:
    """A validated spec plus its positioned source, for the planner's own problems.

    `problems` holds what was already wrong with the structure and `dropped` the ids of rows
    set aside for it, so the planner reports its findings on the rest in the same breath.
    """

    spec: Spec
    source: YMap
    path: Path
    problems: list[Problem]
    dropped: set[str]

    def where(self, loc: Sequence[Any], *, key: bool = False) -> tuple[Position, str]:
        return locate(self.source, loc, key=key)


def load(
    path: str | Path,
    *,
    vars_files: Sequence[str | Path] = (),
    var_args: Sequence[str] = (),
    inventories: Sequence[str | Path] = (),
    target_args: Sequence[str] = (),
    allow_include_outside: bool = False,
) -> Loaded:
    """Read, merge, override and validate the structure; the planner checks the rest."""
    path = Path(path).resolve()
    data = _read_tree(path, path.parent, allow_include_outside, (path,))
    var_entries = [
        (*parse_var(text), Position("--var", i, 1)) for i, text in enumerate(var_args, 1)
    ]
    _override(data, "vars", [Path(p) for p in vars_files], var_entries)
    _override(data, "targets", [Path(p) for p in inventories], [])
    targets = data.get("targets") or {}
    target_entries = [
        parse_target(text, i, targets.get(text.partition("=")[0].strip()))
        for i, text in enumerate(target_args, 1)
    ]
    _override(data, "targets", [], target_entries)
    problems: list[Problem] = []
    dropped: set[str] = set()
    for _ in range(MAX_ROUNDS):
        try:
            return Loaded(Spec.model_validate(data), data, path, problems, dropped)
        except ValidationError as exc:
            problems += validation_problems(exc, data, Spec)
            _set_aside(data, exc.errors(include_url=False), dropped)
    raise SpecInvalid(problems)
