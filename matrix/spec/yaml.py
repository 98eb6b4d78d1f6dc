"""Safe YAML with positions: every mapping and list keeps where each key and value was
written, so any problem found later (by pydantic, the template checker or the planner) points
at the exact line the user wrote. Limits on size, nesting, aliases and nodes keep hostile files
cheap: they are enforced on the event stream before anything is built, and again on the built
value (aliases can nest it deeper than its text).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from matrix.spec.problems import Position, Problem, SpecInvalid

MAX_BYTES = 2 * 1024 * 1024
MAX_ALIASES = 200
MAX_NODES = 200_000
MAX_DEPTH = 64
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep; flatten the structure"


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


@dataclass
class Budget:
    """Values a document may still hold once built: one per file by default, or one shared
    by a spec and everything it includes."""

    values: int = MAX_NODES


class _Limit(Exception):
    def __init__(self, where: Position, message: str):
        self.problem = Problem(where, "", message)


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10× faster
_TAG_PREFIX = "tag:yaml.org,2002:"


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe loading that records positions, rejects duplicate and non-string keys, bounds
    alias use, and turns a constructor's failure (`!!float abc`, an int past Python's digit
    limit) into a problem at the value."""

    def __init__(self, stream: str, name: str):
        super().__init__(stream)
        self.name = name
        self.aliases = 0
        self.problems: list[Problem] = []

    def at(self, node: yaml.Node | yaml.Event) -> Position:
        mark = node.start_mark
        return Position(self.name, mark.line + 1, mark.column + 1)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects:  # an alias: the same node used again
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                message = f"more than {MAX_ALIASES} YAML aliases; refusing to expand (alias bomb?)"
                raise _Limit(self.at(node), message)
        try:
            return super().construct_object(node, deep=deep)
        except (_Limit, yaml.YAMLError):
            raise
        except Exception as exc:
            raise _Limit(self.at(node), _unreadable(node, exc)) from None


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    """Why a scalar could not become the value its tag asks for, in the user's terms."""
    tag = node.tag.replace(_TAG_PREFIX, "!!")
    text = node.value if isinstance(node.value, str) else ""
    shown = repr(text if len(text) <= 40 else text[:40] + "…")
    why = f": {str(exc).split(';')[0]}" if isinstance(exc, ValueError) else ""
    return f"{shown} is not a valid {tag} value{why}"


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[YMap]:
    data = YMap(loader.at(node))
    yield data
    # `<<: *base` merges come first after flattening; the map's own keys override them
    own_nodes = {id(key_node) for key_node, _ in node.value}
    own_keys: set[Any] = set()
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            loader.problems.append(Problem(loader.at(key_node), "", _not_a_name(key)))
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


def _not_a_name(key: Any) -> str:
    if isinstance(key, (list, dict)):
        return "keys must be strings (names), not a list or a mapping"
    written = "null" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
    return f"keys must be strings (names), got {written}; quote it: '{written}'"


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


def _unsupported(loader: _Loader, node: yaml.Node) -> None:
    """Sets, ordered maps, pairs and binary have no JSON form and no meaning in a spec: a tag
    asking for one is a problem at the value."""
    tag = node.tag.replace(_TAG_PREFIX, "!!")
    message = f"{tag} values are not supported; write a string, number, list or mapping"
    raise _Limit(loader.at(node), message)


_yaml12_booleans(_Loader)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
for _tag in ("set", "omap", "pairs", "binary"):
    _Loader.add_constructor(_TAG_PREFIX + _tag, _unsupported)


def display_name(path: Path) -> str:
    """Paths as the user thinks of them: relative to the working directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _scan(loader: _Loader) -> Position | None:
    """Walk the event stream (libyaml parses without recursion) and stop at the first event
    past MAX_DEPTH or MAX_NODES, before the composer and constructor recurse into it; returns
    where the document's root node starts."""
    depth = nodes = 0
    root = None
    while (event := loader.get_event()) is not None:
        if isinstance(event, yaml.NodeEvent):
            root = root or loader.at(event)
            nodes += 1
            if nodes > MAX_NODES:
                raise _Limit(loader.at(event), f"document has more than {MAX_NODES} values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Limit(loader.at(event), TOO_DEEP)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return root


def _bound_value(value: Any, where: Position, budget: Budget) -> None:
    """Values and depth of the built document, without recursion: aliases can make it far
    bigger (billion laughs) or deeper (an alias of an alias…) than its text."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        budget.values -= 1
        here = item.at if isinstance(item, (YMap, YList)) else where
        if budget.values < 0:
            message = f"more than {MAX_NODES} values, counting aliases and includes (alias bomb?)"
            raise _Limit(here, message)
        if depth > MAX_DEPTH:
            raise _Limit(here, f"nested more than {MAX_DEPTH} levels deep (through aliases?)")
        if isinstance(item, dict):
            pending += [(child, depth + 1) for child in item.values()]
        elif isinstance(item, list):
            pending += [(child, depth + 1) for child in item]


def _read_bounded(path: Path) -> str:
    """The text of a regular file (symlinks followed) of at most MAX_BYTES. A FIFO, device or
    directory is refused without blocking or reading it, and the size is counted while reading,
    never taken from `stat` (a /proc file or a growing file lies)."""
    start = Position(display_name(path), 1, 1)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecInvalid([Problem(start, "", "file not found")]) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise SpecInvalid([Problem(start, "", f"cannot read file: {why}")]) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            message = f"not a regular file ({_file_kind(mode)}); give a YAML file"
            raise SpecInvalid([Problem(start, "", message)])
        chunks: list[bytes] = []
        left = MAX_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            message = f"file is too large: the limit is {MAX_BYTES} bytes"
            raise SpecInvalid([Problem(start, "", message)])
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecInvalid([Problem(start, "", f"cannot read file: {exc}")]) from None
    except OSError as exc:
        raise SpecInvalid([Problem(start, "", f"cannot read file: {exc.strerror}")]) from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def read_yaml(path: Path, *, mapping: str | None = None, budget: Budget | None = None) -> Any:
    """Parse one YAML file safely; raise SpecInvalid with positions on any problem."""
    return parse_yaml(_read_bounded(path), display_name(path), mapping=mapping, budget=budget)


def parse_yaml(
    text: str, name: str, *, mapping: str | None = None, budget: Budget | None = None
) -> Any:
    """Parse YAML text safely; problems point at `name`:line:col. With `mapping`, a document
    that is not a mapping is that problem, at the document's first node."""
    start = Position(name, 1, 1)
    try:
        scanner = _Loader(text, name)
        try:
            root = _scan(scanner) or start
        finally:
            scanner.dispose()
        loader = _Loader(text, name)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
        _bound_value(data, start, budget or Budget())
    except _Limit as exc:
        raise SpecInvalid([exc.problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(name, mark.line + 1, mark.column + 1) if mark else start
        # libyaml (PyYAML >= 6.0.4) refuses deep nesting itself, reading ahead of our count
        why = (
            TOO_DEEP if "nesting depth" in (exc.problem or "") else f"malformed YAML: {exc.problem}"
        )
        raise SpecInvalid([Problem(where, "", why)]) from None
    except yaml.YAMLError as exc:
        raise SpecInvalid([Problem(start, "", f"malformed YAML: {exc}")]) from None
    if loader.problems:
        raise SpecInvalid(loader.problems)
    if mapping is not None and not isinstance(data, YMap):
        raise SpecInvalid([Problem(root, "", mapping)])
    return data
