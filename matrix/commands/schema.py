"""`matrix schema`: the JSON Schema of specs for YAML editors, with each probe kind's params
spelled out: `kind` is an enum of every kind, and each kind's params hang off an if/then on
it. The models are imported when the schema is built, not with the parser."""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%", "description": "a Jinja2 template"}


def _templatable(schema: dict[str, Any]) -> dict[str, Any]:
    """Any param, and any item inside one, may be a template string that renders to the
    declared type (`batch_sizes: [1, "{{ vars.batch_size }}"]`)."""
    schema = dict(schema)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _templatable(schema[key])
    for key in ("prefixItems", "anyOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [_templatable(s) for s in schema[key]]
    if schema.get("type") == "string" and not {"enum", "const", "pattern"} & schema.keys():
        return schema
    return {"anyOf": [schema, TEMPLATE], **{k: schema[k] for k in ("description",) if k in schema}}


def arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the schema covers every installed probe kind."""


def main(_: argparse.Namespace) -> int:
    print(json.dumps(spec_schema(), indent=2))
    return 0


def probe_schema(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    properties = {name: _templatable(value) for name, value in params.get("properties", {}).items()}
    return {
        "type": "object",
        "title": kind,
        "description": params.get("description", ""),
        "properties": {
            "kind": {"const": kind, "description": _kind_doc()},
            **properties,
        },
        "required": ["kind", *params.get("required", [])],
        "additionalProperties": False,
    }


def _kind_is(kind: str) -> dict[str, Any]:
    return {"properties": {"kind": {"const": kind}}, "required": ["kind"]}


def _kind_choice(kinds: list[str]) -> dict[str, Any]:
    """`kind` offers every kind to complete, and a spec's kind picks the one branch (if/then,
    not oneOf) whose params are checked: an editor completes all kinds, and an error about a
    param comes from that kind alone."""
    return {"enum": kinds, "description": _kind_doc()}


def _kind_doc() -> str:
    from matrix.spec.docstrings import field_docs
    from matrix.spec.models import ProbeRef

    return field_docs(ProbeRef).get("kind", "")


def spec_schema() -> dict[str, Any]:
    from matrix.probe import registry
    from matrix.spec.docstrings import describe
    from matrix.spec.models import Spec

    schema = copy.deepcopy(Spec.model_json_schema())
    describe(schema, Spec)
    defs = schema.setdefault("$defs", {})
    branches = []
    for kind, cls in sorted(registry().items()):
        params = cls.model_json_schema(ref_template="#/$defs/{model}")
        describe(params, cls)
        defs.update(params.pop("$defs", {}))
        branches.append({"if": _kind_is(kind), "then": probe_schema(kind, params)})
    defs["ProbeRef"] = {
        "description": defs["ProbeRef"].get("description", ""),
        "type": "object",
        "properties": {"kind": _kind_choice(sorted(registry()))},
        "required": ["kind"],
        "allOf": branches,
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "matrix spec"
    return schema
