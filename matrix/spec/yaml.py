"""Safe YAML with positions: every mapping and list keeps where each key and value was
written, so any problem found later (by pydantic, the template checker or the planner) points
at the exact line the user wrote. Limits on size, aliases and nodes keep hostile files cheap.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from matrix.spec.problems import Position, Problem, SpecInvalid

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
    start = Position(display_name(path), 1, 1)
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
    return parse_yaml(text, start.file)


def parse_yaml(text: str, name: str) -> Any:
    """Parse YAML text safely; problems point at `name`:line:col."""
    start = Position(name, 1, 1)
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
