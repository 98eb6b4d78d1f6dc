"""YAML → Spec: includes merged, vars and targets overridden from the command line, and the
structure validated — keeping on past what pydantic rejects, so one run reports every problem.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from matrix.spec.locate import locate, source_loc, validation_problems
from matrix.spec.models import Spec
from matrix.spec.problems import Position, Problem, SpecInvalid, did_you_mean
from matrix.spec.yaml import Budget, YList, YMap, display_name, parse_yaml, read_yaml

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
    """Checks of a phase merged from two files; a check object already present came from a
    file included twice (a diamond) and is kept once."""
    if not isinstance(first, YList) or not isinstance(second, YList):
        return None
    seen = {id(item) for item in first}
    extra = [(v, p) for v, p in zip(second, second.items_at) if id(v) not in seen]
    return YList(second.at, [*zip(first, first.items_at), *extra])


SPEC_SHAPE = "a spec must be a YAML mapping with version, name, phases"
MAX_INCLUDES = 256  # include entries in a spec and all it includes
MAX_INCLUDE_DEPTH = 32


@dataclass
class _Includes:
    """What reading one spec's includes shares: `done` holds the merged tree of every file
    read, so a file included from many places is read and merged once (a diamond of includes
    costs its number of files, not its number of paths); `budget` bounds the values of all
    files together; `entries` counts include entries against MAX_INCLUDES."""

    root: Path
    allow_outside: bool
    done: dict[Path, YMap] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)
    entries: int = 0


def _read_tree(
    path: Path, stack: tuple[Path, ...], state: _Includes, text: str | None = None
) -> YMap:
    """One file with its includes merged in, in order, the file itself last."""
    if path in state.done:
        return state.done[path]
    options: dict[str, Any] = {"mapping": SPEC_SHAPE, "budget": state.budget}
    if text is None:
        data = read_yaml(path, **options)
    else:
        data = parse_yaml(text, display_name(path), **options)
    includes = data.pop("include", None)
    if includes is None:
        state.done[path] = data
        return data
    inc_at = data.values_at["include"]
    if not isinstance(includes, YList) or not all(isinstance(i, str) for i in includes):
        raise SpecInvalid([Problem(inc_at, "include", "expected a list of file paths")])
    merged = YMap(data.at)
    for item, at in zip(includes, includes.items_at):
        target = _include_target(path, item, at, stack, state)
        merged = _merge(merged, _read_tree(target, (*stack, target), state))
    state.done[path] = _merge(merged, data)
    return state.done[path]


def _include_target(
    path: Path, item: str, at: Position, stack: tuple[Path, ...], state: _Includes
) -> Path:
    """The file an include entry names, once it is known to be allowed and readable."""
    state.entries += 1
    if state.entries > MAX_INCLUDES:
        message = f"more than {MAX_INCLUDES} include entries in this spec and its includes"
        raise SpecInvalid([Problem(at, "include", message)])
    if len(stack) > MAX_INCLUDE_DEPTH:
        message = f"includes nested more than {MAX_INCLUDE_DEPTH} files deep"
        raise SpecInvalid([Problem(at, "include", message)])
    if "\0" in item:
        raise SpecInvalid([Problem(at, "include", f"{item!r} is not a file path")])
    target = (path.parent / item).resolve()
    if not state.allow_outside and not target.is_relative_to(state.root):
        where = display_name(state.root)
        message = f"{item} is outside {where}; pass --allow-include-outside to allow"
        raise SpecInvalid([Problem(at, "include", message)])
    if target in stack:
        chain = " → ".join(display_name(p) for p in (*stack, target))
        raise SpecInvalid([Problem(at, "include", f"include cycle: {chain}")])
    if not target.is_file():
        missing = f"{item} not found next to {display_name(path)}"
        message = f"{item} is not a regular file" if target.exists() else missing
        raise SpecInvalid([Problem(at, "include", message)])
    return target


# ── vars ────────────────────────────────────────────────────────────────────

_INT = re.compile(r"^[-+]?\d+$")


def parse_var(text: str, index: int = 1) -> tuple[str, Any]:
    """`k=v` from the command line: ints and true/false are typed, `[…]` and `{…}` are YAML
    lists and maps (`packages=[torch>=2.5, peft]`), the rest stays a string — so a version
    such as `2.10` is never read as the number 2.1."""
    key, sep, value = text.partition("=")
    at = Position("--var", index, 1)
    if not sep or not key.strip():
        raise SpecInvalid([Problem(at, text, "expected key=value")])
    if _INT.match(value):
        try:
            return key.strip(), int(value)
        except ValueError as exc:  # past Python's digit limit for int()
            message = f"not a usable integer: {str(exc).split(';')[0]}"
            raise SpecInvalid([Problem(at, key.strip(), message)]) from None
    if value.lower() in ("true", "false"):
        return key.strip(), value.lower() == "true"
    if value.strip().startswith(("[", "{")):
        return key.strip(), parse_yaml(value, f"--var {key.strip()}")
    return key.strip(), value


def _override(
    data: YMap,
    section: str,
    files: Sequence[Path],
    entries: Sequence[tuple[str, Any, Position]],
    *,
    declared_only: bool = False,
) -> None:
    """Command-line overrides of a top-level mapping (`vars`, `targets`): files first, each
    replacing whole entries, then single `--flag` entries; positions point at their source.
    `declared_only`: a name the spec does not declare is a problem (a typo would otherwise be
    ignored, and the spec would run with its default)."""
    current = data.get(section)
    merged = YMap(current.at if isinstance(current, YMap) else data.at)
    if isinstance(current, YMap):
        for key in current:
            merged.copy_from(current, key)
    declared = list(merged)
    unknown: list[Problem] = []
    for path in files:
        extra = read_yaml(path, mapping=f"a {section} file must be a mapping")
        for key in extra:
            merged.copy_from(extra, key)
            unknown += _undeclared(key, extra.keys_at[key], declared) if declared_only else []
    for key, value, at in entries:
        merged.put(key, value, at, at)
        unknown += _undeclared(key, at, declared) if declared_only else []
    if unknown:
        raise SpecInvalid(unknown)
    if merged or section in data:
        data.put(section, merged, data.keys_at.get(section, data.at), merged.at)


def _undeclared(name: Any, at: Position, declared: Sequence[Any]) -> list[Problem]:
    if name in declared:
        return []
    hint = did_you_mean(str(name), map(str, declared)) or (
        f"; its vars: {', '.join(map(str, declared))}" if declared else "; it declares none"
    )
    message = f"the spec has no var '{name}'{hint}; add it under vars: to pass it"
    return [Problem(at, str(name), message)]


def parse_target(text: str, index: int, current: Any) -> tuple[str, Any, Position]:
    """`--target gpu=h1,h2`: the group's hosts (a Slurm group's `nodes`, a hostlist such as
    `gpu-[01-04,07]`); its other options (user, key…) are kept."""
    name, sep, hosts = text.partition("=")
    at = Position("--target", index, 1)
    if not sep or not name.strip() or not hosts.strip():
        raise SpecInvalid([Problem(at, text, "expected NAME=host1,host2")])
    group = YMap(at)
    if isinstance(current, YMap):
        for key in current:
            group.copy_from(current, key)
    if isinstance(current, YMap) and current.get("via") == "slurm":
        group.put("nodes", hosts.strip(), at, at)
    else:
        listed = YList(at, [(h.strip(), at) for h in hosts.split(",") if h.strip()])
        group.put("hosts", listed, at, at)
    return name.strip(), group, at


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
        loc = source_loc(data, error["loc"], missing=error["type"] == "missing")
        kind, row, key = _row_of(loc)
        if kind == "spec":
            if key in PLACEHOLDERS:
                data.put(key, PLACEHOLDERS[key], data.at, data.at)
            elif key in data:
                del data[key]
        elif key is None or key in REQUIRED[kind] or not isinstance(_node(data, row), dict):
            rows.add(row)
        elif key in _node(data, row):
            del _node(data, row)[key]
    # resolved before anything is removed: an aliased list can sit at two rows' paths
    doomed = [(row[-1], _node(data, row[:-1]), _node(data, row)) for row in rows]
    for name, parent, item in doomed:
        if isinstance(item, dict):
            dropped.add(str(item.get("id", name)))
            checks = item.get("checks")
            if isinstance(checks, list):
                dropped.update(str(c.get("id")) for c in checks if isinstance(c, dict))
        _remove(parent, name, item)


def _remove(parent: YMap | YList, name: Any, item: Any) -> None:
    """Take a row out of `parent` with its position: a map's by name, a list's by identity
    (it is gone already when the same list was reached through another path)."""
    if isinstance(parent, YMap):
        parent.pop(name, None)
        return
    index = next((i for i, v in enumerate(parent) if v is item), None)
    if index is not None:
        del parent[index]
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
    text: str | None = None,
) -> Loaded:
    """Read, merge, override and validate the structure; the planner checks the rest. With
    `text`, that is the spec's content (made in memory) and `path` only names it and the
    folder its includes are relative to."""
    path = Path(path).resolve()
    data = _read_tree(path, (path,), _Includes(path.parent, allow_include_outside), text)
    var_entries = [
        (*parse_var(text, i), Position("--var", i, 1)) for i, text in enumerate(var_args, 1)
    ]
    _override(data, "vars", [Path(p) for p in vars_files], var_entries, declared_only=True)
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
