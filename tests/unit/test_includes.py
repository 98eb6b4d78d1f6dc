"""`include:` merges phases by id, lets the including spec win, and stays inside its folder."""

from __future__ import annotations

import time

import pytest

from matrix.plan import build_plan
from matrix.spec.load import MAX_INCLUDE_DEPTH, MAX_INCLUDES, load
from matrix.spec.problems import SpecInvalid
from matrix.spec.yaml import MAX_NODES

BASE = """
version: 1
name: base
vars:
  region: us-east-1
  min_free_gb: 100
secrets: [BASE_TOKEN]
phases:
  - id: infra
    weight: 20
    checks:
      - id: base-check
        probe: {kind: command, argv: ["true"]}
  - id: only-in-base
    checks:
      - id: base-only
        probe: {kind: command, argv: ["true"]}
"""


def test_include_merges_phases_by_id_and_appends_checks(write_spec):
    write_spec(BASE, "base.yaml")
    path = write_spec(
        """
        version: 1
        name: mine
        include: [base.yaml]
        vars:
          min_free_gb: 500
        secrets: [MY_TOKEN]
        phases:
          - id: infra
            checks:
              - id: my-check
                probe: {kind: command, argv: ["true"]}
          - id: extra
            checks: []
        """
    )
    spec = load(path).spec
    assert spec.name == "mine"
    assert [p.id for p in spec.phases] == ["infra", "only-in-base", "extra"]
    infra = spec.phases[0]
    assert [c.id for c in infra.checks] == ["base-check", "my-check"]
    assert infra.weight == 20  # the base's value survives where the spec says nothing
    assert spec.vars == {"region": "us-east-1", "min_free_gb": 500}
    assert set(spec.secrets) == {"BASE_TOKEN", "MY_TOKEN"}


def test_error_in_included_file_points_at_that_file(write_spec):
    write_spec(
        """
        version: 1
        name: base
        phases:
          - id: infra
            checks:
              - id: typo
                severty: warning
                probe: {kind: command, argv: ["true"]}
        """,
        "base.yaml",
    )
    path = write_spec("version: 1\nname: mine\ninclude: [base.yaml]\n")
    with pytest.raises(SpecInvalid) as info:
        build_plan(load(path))
    [problem] = info.value.problems
    assert problem.where.file.endswith("base.yaml")
    assert problem.where.line == 7
    assert str(problem).split(":")[0].endswith("base.yaml")
    assert "did you mean 'severity'?" in problem.message


def test_planner_problem_in_included_file_points_at_that_file(write_spec, spec_problems):
    write_spec(
        """
        version: 1
        name: base
        phases:
          - id: infra
            checks:
              - id: typo
                probe: {kind: comand, argv: ["true"]}
        """,
        "base.yaml",
    )
    [problem] = spec_problems("version: 1\nname: mine\ninclude: [base.yaml]\n")
    assert problem.where.file.endswith("base.yaml")
    assert problem.where.line == 7


def test_malformed_included_file_points_at_that_file(write_spec):
    write_spec("version: 1\nname: [unclosed\n", "base.yaml")
    path = write_spec("version: 1\nname: mine\ninclude: [base.yaml]\n")
    with pytest.raises(SpecInvalid) as info:
        build_plan(load(path))
    [problem] = info.value.problems
    assert problem.where.file.endswith("base.yaml")
    assert "malformed YAML" in problem.message


def test_include_outside_the_spec_folder_is_refused(tmp_path, write_spec):
    write_spec("version: 1\nname: outside\nvars: {leaked: 1}\n", "outside.yaml")
    path = write_spec("version: 1\nname: mine\ninclude: [../outside.yaml]\n", "sub/spec.yaml")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert "outside" in problem.message
    assert "--allow-include-outside" in problem.message
    assert problem.where.line == 3
    assert load(path, allow_include_outside=True).spec.vars == {"leaked": 1}


def test_absolute_include_outside_is_refused(tmp_path, write_spec):
    other = write_spec("version: 1\nname: other\n", "elsewhere/other.yaml")
    path = write_spec(f"version: 1\nname: mine\ninclude: ['{other}']\n", "sub/spec.yaml")
    with pytest.raises(SpecInvalid, match="outside"):
        load(path)


def test_include_cycle_is_reported(write_spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec("version: 1\nname: a\ninclude: [b.yaml]\n", "a.yaml")
    write_spec("version: 1\nname: b\ninclude: [a.yaml]\n", "b.yaml")
    path = write_spec("version: 1\nname: top\ninclude: [a.yaml]\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert "include cycle" in problem.message
    assert problem.message.endswith("spec.yaml → a.yaml → b.yaml → a.yaml")
    assert str(problem).startswith("b.yaml:3:")


def test_self_include_is_a_cycle(write_spec):
    path = write_spec("version: 1\nname: me\ninclude: [spec.yaml]\n")
    with pytest.raises(SpecInvalid, match="include cycle"):
        load(path)


def test_missing_include_is_reported(write_spec):
    path = write_spec("version: 1\nname: me\ninclude: [gone.yaml]\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    assert "gone.yaml not found" in str(info.value)
    assert info.value.problems[0].where.line == 3


def test_include_must_be_a_list_of_paths(write_spec):
    path = write_spec("version: 1\nname: me\ninclude: base.yaml\n")
    with pytest.raises(SpecInvalid, match="expected a list of file paths"):
        load(path)


def diamond(write_spec, depth: int) -> None:
    """f0.yaml … f{depth}.yaml, each including the next one twice, each with one check."""
    for i in range(depth + 1):
        include = f"include: [f{i + 1}.yaml, f{i + 1}.yaml]\n" if i < depth else ""
        write_spec(
            f"version: 1\nname: f{i}\n{include}vars: {{v{i}: {i}}}\nphases:\n  - id: p\n"
            f"    checks:\n      - id: c{i}\n        probe: {{kind: command, argv: ['true']}}\n",
            f"f{i}.yaml",
        )


def test_a_diamond_of_includes_reads_each_file_once(write_spec, tmp_path):
    diamond(write_spec, 18)  # 2^18 paths through the includes
    started = time.perf_counter()
    plan = build_plan(load(tmp_path / "f0.yaml"))
    assert time.perf_counter() - started < 5
    assert list(plan.tasks) == [f"c{i}" for i in range(18, -1, -1)]  # each check once
    assert plan.vars == {f"v{i}": i for i in range(19)}


def test_includes_may_nest_only_so_deep(write_spec, tmp_path):
    for i in range(MAX_INCLUDE_DEPTH + 2):
        write_spec(f"version: 1\nname: c\ninclude: [c{i + 1}.yaml]\n", f"c{i}.yaml")
    with pytest.raises(SpecInvalid) as info:
        load(tmp_path / "c0.yaml")
    [problem] = info.value.problems
    assert problem.message == f"includes nested more than {MAX_INCLUDE_DEPTH} files deep"
    assert problem.where.file.endswith(f"c{MAX_INCLUDE_DEPTH}.yaml")


def test_include_entries_are_capped(write_spec):
    write_spec("version: 1\nname: base\n", "base.yaml")
    many = ", ".join(["base.yaml"] * (MAX_INCLUDES + 1))
    path = write_spec(f"version: 1\nname: me\ninclude: [{many}]\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert f"more than {MAX_INCLUDES} include entries" in problem.message
    assert problem.where.col == 11 + 11 * MAX_INCLUDES


def test_includes_share_one_budget_of_values(write_spec):
    values = "[" + "0, " * (MAX_NODES * 3 // 5) + "0]"  # each file alone is within the limit
    write_spec(f"version: 1\nname: base\nvars: {{b: {values}}}\n", "base.yaml")
    path = write_spec(f"version: 1\nname: me\ninclude: [base.yaml]\nvars: {{m: {values}}}\n")
    with pytest.raises(SpecInvalid) as info:
        load(path)
    [problem] = info.value.problems
    assert f"more than {MAX_NODES} values, counting aliases and includes" in problem.message


def test_a_nul_in_an_include_is_a_problem(write_spec):
    path = write_spec('version: 1\nname: me\ninclude: ["a\\0b"]\n')
    with pytest.raises(SpecInvalid, match="is not a file path"):
        load(path)
