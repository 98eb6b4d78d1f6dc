"""Print the probe reference of docs/spec.md from the live registry.

    python docs/probe_table.py > /tmp/probes.md   # then paste under "Probe kinds"

Built-in kinds and every plugin installed in the `matrix.probes` entry-point group.
"""

from __future__ import annotations

import json
import sys

from matrix.probe import registry


def cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def type_name(annotation: object) -> str:
    if getattr(annotation, "__args__", None) is None and hasattr(annotation, "__name__"):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def main() -> int:
    out = []
    for kind, cls in sorted(registry().items()):
        out.append(f"### `{kind}`\n\n{cell(cls.__doc__ or '')} Runs on: {cls.runs_on}.\n")
        out += ["| param | type | default | meaning |", "|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            default = (
                "*required*"
                if field.is_required()
                else f"`{json.dumps(field.get_default(call_default_factory=True))}`"
            )
            out.append(
                f"| `{name}` | `{cell(type_name(field.annotation))}` | {default} "
                f"| {cell(field.description or '')} |"
            )
        if not cls.model_fields:
            out.append("| — | | | no params |")
        out += ["", "| fact | meaning |", "|---|---|"]
        out += [f"| `{name}` | {cell(meaning)} |" for name, meaning in cls.facts.items()]
        if cls.default_expect:
            out.append(f"\nDefault expectation: `{json.dumps(cls.default_expect)}`\n")
        else:
            out.append(
                "\nDefault expectation: none — passes whenever the probe observed without "
                "error, so give `expect`.\n"
            )
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
