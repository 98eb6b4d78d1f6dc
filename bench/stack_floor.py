"""What the chosen stack costs for the work `matrix validate specs/pipeline.yaml` does, with
none of matrix: parse the spec with libyaml, build 41 pydantic models and validate one
instance of each, compile 72 templates in jinja2's sandbox (the counts a profile of that
validate shows: 41 model classes completed, 72 templates compiled). Run by bench_startup.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2.sandbox
import pydantic
import yaml

MODELS = 41
TEMPLATES = 72
FIELDS = {"a": int, "b": str, "c": float | None, "d": list[str], "e": dict[str, int]}


def main(spec: Path) -> int:
    with spec.open("rb") as handle:
        yaml.load(handle, Loader=yaml.CSafeLoader)
    for index in range(MODELS):
        namespace = {"__annotations__": FIELDS, "b": "x", "c": None, "d": [], "e": {}}
        model = type(f"Model{index}", (pydantic.BaseModel,), namespace)
        model.model_validate({"a": index, "d": ["x"], "e": {"k": 1}})
    environment = jinja2.sandbox.SandboxedEnvironment()
    for index in range(TEMPLATES):
        environment.from_string(f"{{{{ vars.x{index} }}}} on {{{{ target.host | default('h') }}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
