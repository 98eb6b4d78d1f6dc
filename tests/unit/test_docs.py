"""docs/: the generated references match the code, every probe kind has an example that plans,
every key of `matrix schema` is described, and links between the pages resolve."""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from matrix.cli import main as matrix_main
from matrix.plan import build_plan
from matrix.probe import registry
from matrix.spec.load import load
from matrix.spec.problems import SpecInvalid

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _generator() -> ModuleType:
    """docs/generate.py, imported by path (docs/ is not a package)."""
    name = "docs_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "generate.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules[name]


generate = _generator()
EXAMPLES = generate.load_examples()


# ── generated files are current ─────────────────────────────────────────────


def _first_difference(old: str, new: str) -> str:
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "on disk", "generated", n=0)
    return "\n".join(list(diff)[2:8])


@pytest.mark.parametrize("name", ["spec-reference.md", "probes.md"])
def test_generated_doc_is_current(name):
    path = DOCS / name
    rendered = generate.render()[path]
    on_disk = path.read_text(encoding="utf-8") if path.exists() else ""
    if on_disk != rendered:
        pytest.fail(
            f"docs/{name} is stale: run python docs/generate.py\n"
            + _first_difference(on_disk, rendered),
            pytrace=False,
        )


def test_generate_check_names_stale_files(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "probes.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "render", lambda: {stale: "new\n"})
    assert generate.main(["--check"]) == 1
    assert "probes.md is stale: run python docs/generate.py" in capsys.readouterr().err
    stale.write_text("new\n", encoding="utf-8")
    assert generate.main(["--check"]) == 0


def test_generated_docs_do_not_depend_on_this_machine():
    text = "".join(generate.render().values())
    for local in (sys.executable, str(Path.home()), str(REPO)):
        assert local not in text
    assert generate.portable(sys.executable) == "<python running matrix>"


def test_spec_reference_covers_every_model_and_key():
    text = generate.spec_reference()
    for model in generate.spec_models_in_order():
        assert f"\n## {model.__name__}\n" in text
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing"


# ── probe examples ──────────────────────────────────────────────────────────


def test_every_builtin_kind_has_exactly_one_example():
    kinds = [e.kind for e in EXAMPLES.checks]
    builtin = set(generate.builtin_kinds())
    missing = sorted(builtin - set(kinds))
    unknown = sorted(set(kinds) - set(registry()))
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    assert not missing, f"docs/probe-examples.yaml has no example of {missing}"
    assert not unknown, f"docs/probe-examples.yaml names unknown kinds {unknown}"
    assert not twice, f"docs/probe-examples.yaml has more than one example of {twice}"


def _spec_text(example: Any) -> str:
    """A one-phase spec around the example, with the vars, secrets and targets it may use."""
    head = {
        "version": 1,
        "name": f"probe-example-{example.kind}",
        "vars": EXAMPLES.vars,
        "secrets": EXAMPLES.secrets,
        "targets": EXAMPLES.targets,
    }
    lines = [f"{key}: {json.dumps(value)}" for key, value in head.items()]
    body = "\n".join("      " + line if line else "" for line in example.text.splitlines())
    return "\n".join([*lines, "phases:", "  - id: examples", "    checks:", body, ""])


@pytest.mark.parametrize("example", EXAMPLES.checks, ids=lambda e: e.kind)
def test_example_plans(example, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(_spec_text(example), encoding="utf-8")
    environ = {name: f"https://hooks.slack.com/services/T0/B0/{name}" for name in EXAMPLES.secrets}
    try:
        plan = build_plan(load(path), environ=environ)
    except SpecInvalid as exc:
        problems = str(exc)
    else:
        problems = ""
    if problems:
        pytest.fail(f"the {example.kind} example in docs/probe-examples.yaml:\n{problems}")
    tasks = [t for t in plan.tasks.values() if t.check.id == example.check["id"]]
    assert tasks and all(t.check.probe.kind == example.kind for t in tasks)
    assert not [t.error for t in tasks if t.error]


@pytest.mark.parametrize("example", EXAMPLES.checks, ids=lambda e: e.kind)
def test_example_reads_only_facts_its_kind_documents(example):
    facts = set(registry()[example.kind].facts)
    expected = {path.split(".")[0] for path in example.check.get("expect") or {}}
    read = set(re.findall(r"\bfacts\.(\w+)", example.text))
    assert expected <= facts, f"expect names undocumented facts {sorted(expected - facts)}"
    assert read <= facts, f"templates read undocumented facts {sorted(read - facts)}"


# ── the JSON schema ─────────────────────────────────────────────────────────


@pytest.fixture
def schema(capsys) -> dict[str, Any]:
    """What `matrix schema` prints."""
    assert matrix_main(["schema"]) == 0
    return json.loads(capsys.readouterr().out)


def _undescribed(node: Any, where: str) -> list[str]:
    """Properties without a description, anywhere under node ($defs, probe params included),
    but for the `if` of a kind's branch, which an editor never shows (it only selects)."""
    found = []
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            if not (isinstance(value, dict) and str(value.get("description", "")).strip()):
                found.append(f"{where}/properties/{name}")
        for key, value in node.items():
            if key != "if":
                found += _undescribed(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _undescribed(value, f"{where}/{i}")
    return found


def test_every_schema_property_has_a_description(schema):
    kinds = {b["then"]["title"] for b in schema["$defs"]["ProbeRef"]["allOf"]}
    assert set(generate.builtin_kinds()) <= kinds  # probe params are walked too
    missing = _undescribed(schema, "#")
    assert not missing, "add an attribute docstring for:\n" + "\n".join(missing)


def test_schema_accepts_every_example_and_shipped_spec(schema):
    """What the editor sees: no false errors on specs that `matrix validate` accepts."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    kinds = set(registry())
    documents = {f"example {e.kind}": generate._parse(_spec_text(e)) for e in EXAMPLES.checks}
    for path in sorted([*REPO.glob("specs/*.yaml"), *REPO.glob("examples/**/*.yaml")]):
        data = generate._parse(path.read_text(encoding="utf-8"))
        used = {
            c.get("probe", {}).get("kind")
            for p in (data or {}).get("phases") or []
            for c in p.get("checks") or []
        }
        if isinstance(data, dict) and "version" in data and used <= kinds:
            documents[str(path.relative_to(REPO))] = data
    problems = [
        f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for name, data in documents.items()
        for e in validator.iter_errors(data)
    ]
    assert not problems, "\n".join(problems)


# ── links between the pages ─────────────────────────────────────────────────


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (code blocks skipped)."""
    anchors: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6} (.+)$", line)):
            slug = generate.anchor(match[1])
            n, unique = 0, slug
            while unique in anchors:
                n += 1
                unique = f"{slug}-{n}"
            anchors.add(unique)
    return anchors


def _links(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s#]*)#([^)\s]+)\)", text)


@pytest.mark.parametrize(
    "page", [*sorted(DOCS.glob("*.md")), REPO / "README.md"], ids=lambda p: p.name
)
def test_links_to_sections_resolve(page):
    broken = []
    for target, anchor in _links(page):
        file = (page.parent / target).resolve() if target else page
        if file.suffix != ".md":
            continue
        if not file.exists() or anchor not in _anchors(file):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.name} links to missing sections: {broken}"
