"""Generate the reference pages of docs/ from the code, so they cannot drift from it.

    python docs/generate.py            # write docs/spec-reference.md and docs/probes.md
    python docs/generate.py --check    # exit 1 naming the files that are stale

- docs/spec-reference.md: every model reachable from `Spec` in matrix/spec/models.py, its docstring
  and a table of its keys (type, default, required, meaning from the attribute docstrings).
- docs/probes.md: every built-in probe kind (the kinds in `probes.builtin.KINDS`;
  installed plugins are left out, so the page does not depend on the machine), with its
  params, facts, default expectation and an example check from docs/probe-examples.yaml.

The output is deterministic: kinds sorted, no timestamps, and a default that depends on the
machine (the path of the running python, the home directory, the working directory) is shown
as a placeholder such as `<python running matrix>`. tests/unit/test_docs.py calls `render()`
and fails when a file on disk differs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python docs/generate.py` from a checkout without an install
    sys.path.insert(0, str(ROOT))

import annotated_types  # noqa: E402  (pydantic's constraint types)
import yaml  # noqa: E402
from pydantic import BaseModel, BeforeValidator  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402

from matrix.probe import ProbeClass, registry  # noqa: E402
from matrix.spec import models as spec_models  # noqa: E402
from matrix.spec.docstrings import field_docs  # noqa: E402
from matrix.spec.yaml import _yaml12_booleans  # noqa: E402
from probes.builtin import KINDS  # noqa: E402

DOCS = ROOT / "docs"
SPEC_REFERENCE = DOCS / "spec-reference.md"
PROBES = DOCS / "probes.md"
EXAMPLES = DOCS / "probe-examples.yaml"
COMMAND = "python docs/generate.py"


def notice(source: str) -> str:
    return f"<!-- Generated from {source} by docs/generate.py: do not edit; run `{COMMAND}`. -->"


# Links from a key of the reference to the guide section that explains it (docs/spec.md).
# tests/unit/test_docs.py checks that every anchor exists.
GUIDE: dict[tuple[str, str], tuple[str, str]] = {
    ("Spec", "include"): ("Includes", "includes"),
    ("Spec", "vars"): ("Vars overrides", "vars-overrides"),
    ("Spec", "secrets"): ("Secrets and redaction", "secrets-and-redaction"),
    ("Spec", "targets"): ("Targets", "targets"),
    ("Phase", "weight"): ("Verdict and score", "verdict-and-score"),
    ("Phase", "needs"): ("needs", "needs"),
    ("Phase", "budget"): ("Phase budget", "phase-budget"),
    ("Check", "title"): ("Templates", "templates"),
    ("Check", "severity"): ("Verdict and score", "verdict-and-score"),
    ("Check", "expect"): ("Matchers", "matchers"),
    ("Check", "diagnostic"): ("Templates", "templates"),
    ("Check", "needs"): ("needs", "needs"),
    ("Check", "on"): ("Targets", "targets"),
    ("Check", "when"): ("when", "when"),
    ("Check", "matrix"): ("matrix axes", "matrix-axes-and-task-ids"),
    ("Check", "weight"): ("Verdict and score", "verdict-and-score"),
    ("TargetSpec", "via"): ("Targets", "targets"),
}

SCALARS = {str: "string", int: "integer", float: "number", bool: "bool", dict: "mapping"}


# ── shared helpers ──────────────────────────────────────────────────────────


def cell(text: object) -> str:
    """One markdown table cell: whitespace folded, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def doc(obj: object) -> str:
    """An object's own docstring, dedented (never one inherited from a base class)."""
    text = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    return inspect.cleandoc(text) if text else ""


def paragraphs(text: str) -> str:
    """A docstring as markdown: each paragraph's lines joined into one."""
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())


def portable(value: Any) -> Any:
    """A default without traces of this machine: its python, home and working directory."""
    if isinstance(value, str):
        if value == sys.executable:
            return "<python running matrix>"
        for path, placeholder in ((os.getcwd(), "<working directory>"), (Path.home(), "~")):
            if str(path) not in ("", "/") and value.startswith(str(path)):
                return placeholder + value[len(str(path)) :]
        return value
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    return value


def literal(value: Any) -> str:
    """A value as it would be written in a spec, inline: `null`, `[]`, `"read"`, `60`."""
    value = portable(value)
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def code(text: str) -> str:
    """Inline code that survives backticks inside it."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


# ── types ───────────────────────────────────────────────────────────────────


def _is_duration(metadata: list[Any]) -> bool:
    return any(
        isinstance(m, BeforeValidator) and m.func is spec_models.parse_duration for m in metadata
    )


def _is_id(metadata: list[Any]) -> bool:
    return any(getattr(m, "pattern", None) == spec_models.ID_PATTERN for m in _flat(metadata))


def _flat(metadata: list[Any]) -> Iterator[Any]:
    for item in metadata:
        if isinstance(item, FieldInfo):
            yield from _flat(item.metadata)
        else:
            yield item


def _bounds(metadata: list[Any]) -> str:
    found: dict[str, Any] = {}
    for item in _flat(metadata):
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(item, name)
    low = ("ge", found["ge"]) if "ge" in found else ("gt", found["gt"]) if "gt" in found else None
    high = ("le", found["le"]) if "le" in found else ("lt", found["lt"]) if "lt" in found else None
    if low and high and low[0] == "ge" and high[0] == "le":
        return f" {literal(low[1])}–{literal(high[1])}"
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    return "".join(f" {signs[bound[0]]} {literal(bound[1])}" for bound in (low, high) if bound)


def type_text(annotation: Any, metadata: list[Any] | None = None, link: bool = True) -> str:
    """A type as a reader of the spec thinks of it: `list of string`, `duration`, `1–100`."""
    metadata = list(metadata or [])
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        return type_text(inner, [*metadata, *extra], link)
    if _is_duration(metadata):
        return "[duration](#durations)" if link else "duration"
    if _is_id(metadata):
        return "[id](#ids)" if link else "id"
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(type_text(a, metadata, link) for a in options)
    if origin is Literal:
        return " or ".join(code(literal(a).strip('"')) for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(code(str(m.value)) for m in annotation)
    if origin in (list, tuple, dict) or annotation in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Any]
        inner = [_grouped(type_text(a, [], link)) for a in args]
        if origin is list:
            return "list of " + inner[0] if inner else "list"
        if origin is tuple:
            return "[" + ", ".join(inner) + "]"
        if len(inner) == 2:
            return f"mapping {inner[0]} → {inner[1]}"
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{anchor(annotation.__name__)})" if link else "mapping"
    if annotation is Any or annotation is typing.Any:
        return "any"
    name = SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return name + _bounds(metadata)


def _grouped(text: str) -> str:
    """A union inside a container, in parentheses: `list of (number or string)`."""
    return f"({text})" if " or " in text else text


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "—"
    return code(literal(info.get_default(call_default_factory=True)))


# ── docs/spec-reference.md ──────────────────────────────────────────────────


def _models_of(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in get_args(annotation):
        yield from _models_of(arg)


def spec_models_in_order() -> list[type[BaseModel]]:
    """Spec and every model reachable from it, breadth first in field order."""
    seen: list[type[BaseModel]] = [spec_models.Spec]
    for model in seen:
        for info in model.model_fields.values():
            for found in _models_of(info.annotation):
                if found not in seen:
                    seen.append(found)
    return seen


def _duration_keys(models: list[type[BaseModel]]) -> list[str]:
    keys = []
    for model in models:
        for name, info in model.model_fields.items():
            if type_text(info.annotation, info.metadata, link=False) == "duration":
                keys.append(f"{model.__name__}.{name}")
    return keys


def _id_keys(models: list[type[BaseModel]]) -> list[str]:
    keys = []
    for model in models:
        for name, info in model.model_fields.items():
            text = type_text(info.annotation, info.metadata, link=False)
            if text == "id" or text.startswith("mapping id"):
                keys.append(f"{model.__name__}.{name}")
    return keys


def model_section(model: type[BaseModel]) -> list[str]:
    out = [f"## {model.__name__}", "", paragraphs(doc(model)), ""]
    out += ["| key | type | default | required | meaning |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        meaning = field_docs(model).get(name, "")
        guide = GUIDE.get((model.__name__, name))
        if guide:
            meaning += f" Guide: [{guide[0]}](spec.md#{guide[1]})."
        out.append(
            f"| `{name}` | {cell(type_text(info.annotation, info.metadata))} "
            f"| {cell(default_text(info))} | {'yes' if info.is_required() else 'no'} "
            f"| {cell(meaning)} |"
        )
    if model.model_config.get("extra") == "allow":
        out.append(
            "| *any other key* | per kind | per kind | per kind "
            "| A param of the probe kind: see [probes.md](probes.md). |"
        )
    out.append("")
    return out


def spec_reference() -> str:
    models = spec_models_in_order()
    contents = " · ".join(f"[{m.__name__}](#{anchor(m.__name__)})" for m in models)
    durations = ", ".join(f"`{k}`" for k in _duration_keys(models))
    ids = ", ".join(f"`{k}`" for k in _id_keys(models))
    out = [
        "# Spec reference",
        "",
        notice("matrix/spec/models.py"),
        "",
        "Every key a spec may hold, generated from the pydantic models in "
        "[matrix/spec/models.py](../matrix/spec/models.py), which are also the source of "
        "`matrix schema`. "
        "The guide, with examples and the rules behind these keys (templates, `when`, "
        "`needs`, includes, secrets, matchers, the verdict and score), is "
        "[spec.md](spec.md); the params and facts of every probe kind are in "
        "[probes.md](probes.md).",
        "",
        'Unknown keys are errors (with a "did you mean"), except inside `probe:`, where they '
        "are the kind's params, and inside `vars:`, `expect:` and `matrix:`, which are yours.",
        "",
        f"Contents: {contents} · [Durations](#durations) · [Ids](#ids)",
        "",
    ]
    for model in models:
        out += model_section(model)
    pattern = spec_models._DURATION.pattern
    out += [
        "## Durations",
        "",
        f"{durations}: a number of seconds (`90`, `0.5`) or a string with a unit, `ms`, `s`, "
        f"`m` or `h`: `500ms`, `10s`, `2m`, `1h`. The string must match `{pattern}`.",
        "",
        "## Ids",
        "",
        f"{ids}: an id matches `{spec_models.ID_PATTERN}`. Ids are unique across the whole "
        "spec, after includes: phases and checks share one namespace, and `needs` refers to "
        "either.",
        "",
    ]
    return "\n".join(out)


# ── docs/probes.md ──────────────────────────────────────────────────────────


class _Yaml12(yaml.SafeLoader):
    """YAML read as matrix reads it: only true/false are booleans, so `on:` stays a key."""


_yaml12_booleans(_Yaml12)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12)  # a SafeLoader


@dataclass
class Example:
    """One check of docs/probe-examples.yaml, parsed and as written."""

    kind: str
    check: dict[str, Any]
    text: str


@dataclass
class Examples:
    """docs/probe-examples.yaml: the checks plus the vars, secrets and targets they use."""

    vars: dict[str, Any] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    checks: list[Example] = field(default_factory=list)

    def by_kind(self) -> dict[str, Example]:
        return {e.kind: e for e in self.checks}


def load_examples(path: Path = EXAMPLES) -> Examples:
    """Parse the examples file and cut the text of each check out of it, as written."""
    text = path.read_text(encoding="utf-8")
    data = _parse(text)
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^  - ", line)]
    body_end = len(lines)
    checks = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else body_end
        chunk = lines[start:end]
        while chunk and (not chunk[-1].strip() or chunk[-1].lstrip().startswith("#")):
            chunk.pop()  # trailing blank lines and the next entry's leading comments
        snippet = textwrap.dedent("\n".join(chunk))
        parsed = _parse(snippet)[0]
        if parsed != data["checks"][n]:
            raise ValueError(f"{path}: cannot cut check {n + 1} out of the file as written")
        checks.append(Example(parsed["probe"]["kind"], parsed, snippet))
    if len(checks) != len(data.get("checks") or []):
        raise ValueError(f"{path}: each check must start with '  - ' under checks:")
    return Examples(
        data.get("vars") or {}, data.get("secrets") or [], data.get("targets") or {}, checks
    )


def builtin_kinds() -> dict[str, ProbeClass]:
    """The registry's kinds defined by matrix's own probe modules, sorted by kind."""
    builtin = set(KINDS.values())
    return {kind: cls for kind, cls in sorted(registry().items()) if cls.__module__ in builtin}


def _uses(text: str, root: str) -> list[str]:
    return sorted(set(re.findall(rf"\b{root}\.(\w+)", text)))


def _flow(key: str, value: Any) -> str:
    """`key: value` in YAML flow style, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return f"`{key}: {text.strip()}`"


def _example_block(example: Example, examples: Examples) -> list[str]:
    """The check as written, after the top-level keys it needs besides `phases`."""
    needs = []
    if names := _uses(example.text, "vars"):
        needs.append(_flow("vars", {n: examples.vars.get(n) for n in names}))
    if names := _uses(example.text, "secret"):
        needs.append(_flow("secrets", names))
    if (on := example.check.get("on")) in examples.targets:
        needs.append(_flow("targets", {on: examples.targets[on]}))
    out = ["**Example**", ""]
    if needs:
        out += ["It needs these top-level keys in the spec: " + ", ".join(needs) + ".", ""]
    return [*out, "```yaml", example.text, "```", ""]


def probe_section(kind: str, cls: ProbeClass, example: Example | None, ex: Examples) -> list[str]:
    where = (
        "the controller (the machine running matrix), whatever the check's `on` says"
        if cls.runs_on == "controller"
        else "the target: each host of the check's `on` group"
    )
    out = [f"## `{kind}`", "", paragraphs(doc(cls)), "", f"**Runs on:** {where}."]
    if cls.exclusive:
        out[-1] += (
            " Exclusive: it takes turns with the other exclusive probes on its target, so "
            "timings and memory peaks are its own."
        )
    if cls.secret_fields:
        names = ", ".join(f"`{n}`" for n in cls.secret_fields)
        verb = "takes" if len(cls.secret_fields) == 1 else "take"
        out[-1] += f" {names} {verb} only a `{{{{ secret.NAME }}}}` reference."
    out += ["", "**Params**", ""]
    if cls.model_fields:
        out += ["| param | type | default | meaning |", "|---|---|---|---|"]
        for name, info in cls.model_fields.items():
            default = "*required*" if info.is_required() else default_text(info)
            out.append(
                f"| `{name}` | {cell(type_text(info.annotation, info.metadata, link=False))} "
                f"| {cell(default)} | {cell(field_docs(cls).get(name, ''))} |"
            )
    else:
        out.append("None: `probe: {kind: " + kind + "}`.")
    out += ["", "**Facts**", ""]
    if cls.facts:
        out += ["| fact | meaning |", "|---|---|"]
        out += [f"| `{name}` | {cell(meaning)} |" for name, meaning in cls.facts.items()]
    else:
        out.append("None documented.")
    out += ["", "**Default expectation**", ""]
    if cls.default_expect:
        dumped = yaml.safe_dump(
            {"expect": cls.default_expect}, sort_keys=False, default_flow_style=False
        )
        out += ["```yaml", dumped.rstrip(), "```"]
    else:
        out.append(
            "None: the check passes whenever the probe observed without error, so give `expect`."
        )
    out.append("")
    if example:
        out += _example_block(example, ex)
    return out


def probe_catalogue(examples: Examples | None = None) -> str:
    examples = examples or load_examples()
    kinds = builtin_kinds()
    by_kind = examples.by_kind()
    rows = [
        f"| [`{kind}`](#{anchor(kind)}) | {cls.runs_on} "
        f"| {cell(paragraphs(doc(cls)).split(chr(10))[0])} |"
        for kind, cls in kinds.items()
    ]
    out = [
        "# Probe kinds",
        "",
        notice("the probe registry and docs/probe-examples.yaml"),
        "",
        "Every built-in probe kind: what it observes, where it runs, its params (the keys "
        "of `probe:` besides `kind`), the facts it returns, the expectation used when a check "
        "gives no `expect`, and an example check. Param values are templates rendered per "
        "task; a given `expect` replaces the default expectation completely. How a probe "
        "that cannot observe becomes an `error`, and what `{{ error }}` holds, is in "
        "[spec.md](spec.md#probe-kinds); the keys around `probe:` are in "
        "[spec-reference.md](spec-reference.md#check).",
        "",
        "Kinds installed by plugins are not listed here: `matrix list --probes` shows every "
        "installed kind, and `matrix explain SPEC CHECK` one check's probe, expectation and "
        "facts.",
        "",
        "| kind | runs on | what it observes |",
        "|---|---|---|",
        *rows,
        "",
    ]
    for kind, cls in kinds.items():
        out += probe_section(kind, cls, by_kind.get(kind), examples)
    return "\n".join(out).rstrip("\n") + "\n"


# ── entry point ─────────────────────────────────────────────────────────────


def render() -> dict[Path, str]:
    """Each generated file and the text it should hold."""
    return {SPEC_REFERENCE: spec_reference().rstrip("\n") + "\n", PROBES: probe_catalogue()}


def stale(rendered: dict[Path, str] | None = None) -> list[Path]:
    """The generated files whose text on disk differs from what the code gives now."""
    rendered = render() if rendered is None else rendered
    return [
        path
        for path, text in rendered.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        old = stale(rendered)
        for path in old:
            print(f"{path.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if old else 0
    for path, text in rendered.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
