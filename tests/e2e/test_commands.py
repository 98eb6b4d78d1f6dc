"""`matrix validate | list | schema | explain`, usage errors, and a light start-up."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
version: 1
name: good
vars: {min_free_gb: 100}
phases:
  - id: infra
    title: Infrastructure
    weight: 20
    checks:
      - id: disk-space
        category: Storage
        failure: Disk full
        severity: warning
        probe: {kind: command, shell: "df -k ."}
        expect: {exit_code: 0, stdout: {contains: Filesystem}}
        diagnostic: "Only {{ facts.stdout }}GB free, need {{ vars.min_free_gb }}GB"
        fix: "Resize EBS"
        timeout: 5s
        retry: {attempts: 2, backoff: 1s}
      - id: ssh-reachable
        probe: {kind: command, argv: ["true"]}
  - id: env
    needs: [infra]
    checks:
      - id: python-version
        needs: [ssh-reachable]
        probe: {kind: command, argv: ["python3", "--version"]}
"""

BAD = """
version: 1
name: bad
phases:
  - id: infra
    checks:
      - id: disk-space
        severty: warning
        probe: {kind: command, argv: ["true"]}
      - id: other
        needs: [disk-spaec]
        probe: {kind: comand}
"""

LOCATED = re.compile(r"^spec\.yaml:(\d+):(\d+): ", re.M)


def test_validate_good_spec(cli, write_spec):
    write_spec(GOOD)
    done = cli("validate", "spec.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "spec.yaml: valid — 2 phases, 3 checks, 3 tasks"
    assert done.stderr == ""


def test_validate_bad_spec_lists_located_problems(cli, write_spec):
    write_spec(BAD)
    done = cli("validate", "spec.yaml")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if LOCATED.match(line)]
    assert lines, done.stderr
    assert any("spec.yaml:7:9:" in line and "did you mean 'severity'?" in line for line in lines)
    assert "nothing was run" in done.stderr
    assert done.stdout == ""


def test_validate_reports_planner_problems_together(cli, write_spec):
    write_spec(BAD.replace("        severty: warning\n", ""))
    done = cli("validate", "spec.yaml")
    assert done.returncode == 2
    located = LOCATED.findall(done.stderr)
    assert [int(line) for line, _ in located] == [9, 10]
    assert "unknown check or phase 'disk-spaec' (did you mean 'disk-space'?)" in done.stderr
    assert "unknown probe kind 'comand' (did you mean 'command'?)" in done.stderr
    assert "matrix: 2 problems found; nothing was run" in done.stderr


def test_one_problem_at_many_places_is_one_line_that_counts_them(cli, write_spec):
    """A group with no hosts that 12 checks run on is one thing to fix: one line at the
    first place, the others by line, and a count."""
    checks = "".join(
        f'      - {{id: c{i}, on: gpu, probe: {{kind: command, argv: ["true"]}}}}\n'
        for i in range(12)
    )
    write_spec(
        "version: 1\nname: t\ntargets:\n  gpu: {hosts: []}\n"
        "phases:\n  - id: p\n    checks:\n" + checks
    )
    done = cli("validate", "spec.yaml")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("spec.yaml:8:")
    assert "target group 'gpu' has no hosts" in lines[0]
    assert lines[0].endswith("(and 11 more places: lines 9, 10, 11, 12, 13, 14, 15, …, 19)")
    assert lines[1] == "matrix: 1 problem found at 12 places; nothing was run"


def test_run_on_a_bad_spec_exits_2_and_runs_nothing(cli, write_spec, tmp_path):
    marker = tmp_path / "ran"
    write_spec(
        f"""
        version: 1
        name: bad
        phases:
          - id: p
            checks:
              - id: would-run
                probe: {{kind: command, argv: ["touch", "{marker}"]}}
              - id: broken
                probe: {{kind: command, argv: ["echo", "{{{{ vars.nope }}}}"]}}
        """
    )
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert LOCATED.search(done.stderr)
    assert not marker.exists()
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("command", ["validate", "run", "list"])
def test_missing_spec_file(cli, command):
    done = cli(command, "nope.yaml")
    assert done.returncode == 2
    assert "nope.yaml:1:1: file not found" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["run"],
        ["run", "spec.yaml", "--concurrency", "many"],
        ["run", "spec.yaml", "--var", "novalue"],
    ],
)
def test_usage_errors_exit_2_without_traceback(cli, write_spec, args):
    write_spec(GOOD)
    done = cli(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip()


def test_bad_vars_file_exits_2(cli, write_spec):
    write_spec(GOOD)
    write_spec("- not\n- a mapping\n", "vars.yaml")
    done = cli("validate", "spec.yaml", "--vars", "vars.yaml")
    assert done.returncode == 2
    assert "vars.yaml:1:1: a vars file must be a mapping" in done.stderr


def test_list_shows_phases_checks_and_targets(cli, write_spec):
    write_spec(GOOD)
    done = cli("list", "spec.yaml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("good: spec.yaml")
    assert re.search(r"^infra\s+Infrastructure\s+20\s+—\s+2$", out, re.M)
    assert re.search(r"^env\s+env\s+10\s+infra\s+1$", out, re.M) or re.search(
        r"^env\s+10\s+infra\s+1$", out, re.M
    )
    assert re.search(r"^infra\s+disk-space\s+warning\s+command\s+local\s+—$", out, re.M)
    assert re.search(
        r"^env\s+python-version\s+critical\s+command\s+local\s+ssh-reachable$", out, re.M
    )
    assert re.search(r"^local\s+local\s+localhost$", out, re.M)


def test_list_probes(cli):
    done = cli("list", "--probes")
    assert done.returncode == 0
    assert re.search(r"^command\s+target\s+Run a program", done.stdout, re.M)


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_list_probes_wraps_whole_sentences_to_the_terminal(cli, columns):
    from matrix.probe import registry

    lines = cli("list", "--probes", env={"COLUMNS": str(columns)}).stdout.splitlines()[2:]
    assert max(len(line) for line in lines) <= columns
    start = lines[0].index(lines[0].split()[2])  # where the description column begins
    said: dict[str, str] = {}
    kind = ""
    for line in lines:
        kind = line[:start].split()[0] if line[:start].strip() else kind
        said[kind] = (said.get(kind, "") + " " + line[start:]).strip()
    for kind, cls in registry().items():
        doc = " ".join((cls.__doc__ or "").split())
        assert doc.startswith(said[kind]) and said[kind][-1] in ".!?", (kind, said[kind])


def test_schema_is_json_schema_with_a_command_probe(cli):
    done = cli("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert "$defs" in schema
    assert schema["$schema"].startswith("https://json-schema.org/")
    branches = schema["$defs"]["ProbeRef"]["allOf"]
    command = next(
        b["then"] for b in branches if b["if"]["properties"]["kind"]["const"] == "command"
    )
    assert {"argv", "shell", "stdin"} <= set(command["properties"])
    assert command["additionalProperties"] is False
    assert {"version", "name"} <= set(schema["required"])
    assert "phases" in schema["properties"]


def test_schema_completes_every_kind_and_blames_the_right_one(cli, write_spec):
    """What an editor offers under `kind:` is every registered kind, and a real JSON Schema
    validator accepts the shipped specs and pins a bad param on the probe's own kind."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from matrix.probe import registry
    from matrix.spec.yaml import parse_yaml, read_yaml

    schema = json.loads(cli("schema").stdout)
    assert schema["$defs"]["ProbeRef"]["properties"]["kind"]["enum"] == sorted(registry())
    validator = Draft202012Validator(schema)
    for shipped in (
        "specs/pipeline.yaml",
        "specs/training-readiness.yaml",
        "examples/quickstart.yaml",
    ):
        document = read_yaml(Path(__file__).parents[2] / shipped)  # YAML 1.2, as editors read
        assert not list(validator.iter_errors(document)), shipped
    bad = parse_yaml(
        "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n"
        "      - id: c\n        probe: {kind: port, port: 22, mode: opne}\n",
        "bad.yaml",
    )
    error = best_match(validator.iter_errors(bad))
    assert list(error.absolute_path) == ["phases", 0, "checks", 0, "probe", "mode"]
    assert any("'opne' is not one of ['open', 'free']" in e.message for e in error.context)


def test_explain_shows_probe_expectation_diagnostic_and_fix(cli, write_spec):
    write_spec(GOOD)
    done = cli("explain", "spec.yaml", "disk-space")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("disk-space — Disk full")
    assert "severity:   warning" in out
    assert 'probe:      command {"shell": "df -k ."}' in out
    assert "expects (declared):" in out
    assert "exit_code == 0" in out
    assert 'stdout containing "Filesystem"' in out
    assert "diagnostic: Only {{ facts.stdout }}GB free, need {{ vars.min_free_gb }}GB" in out
    assert "fix:        Resize EBS" in out
    assert "timeout:    5s, retry 2× from 1s" in out


def test_explain_default_expectation(cli, write_spec):
    write_spec(GOOD)
    done = cli("explain", "spec.yaml", "python-version")
    assert "expects (default for this probe):" in done.stdout
    assert "exit_code == 0" in done.stdout
    assert "needs:      ssh-reachable, infra" in done.stdout


def test_explain_unknown_check_suggests_one(cli, write_spec):
    write_spec(GOOD)
    done = cli("explain", "spec.yaml", "disk-spac")
    assert done.returncode == 2
    assert "no check 'disk-spac'" in done.stderr
    assert "did you mean 'disk-space'?" in done.stderr
    assert "Traceback" not in done.stderr


HEAVY = ("torch", "aioboto3", "boto3", "botocore", "asyncssh", "opentelemetry", "rich", "anyio")

PROBE = """
import json, sys
from matrix.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print("\\nIMPORTED=" + json.dumps({{
    "code": code,
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}),
}}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["validate", "spec.yaml"],
        ["list", "spec.yaml"],
        ["list", "--probes"],
        ["schema"],
        ["explain", "spec.yaml", "disk-space"],
    ],
)
def test_fast_start_imports_nothing_heavy(cli, write_spec, tmp_path, argv):
    write_spec(GOOD)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli.env(),
        timeout=60,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED="))
    found = json.loads(line.removeprefix("IMPORTED="))
    assert found["code"] == 0, done.stdout + done.stderr
    assert found["heavy"] == [], found


def test_run_imports_no_optional_heavy_library(cli, write_spec, tmp_path):
    write_spec(GOOD)
    heavy = ("torch", "aioboto3", "boto3", "asyncssh", "opentelemetry")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=["run", "spec.yaml", "--quiet"], heavy=heavy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli.env(),
        timeout=60,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("IMPORTED="))
    assert json.loads(line.removeprefix("IMPORTED="))["heavy"] == []


def test_explain_renders_the_title_with_vars_and_names_default_params(cli) -> None:
    spec = Path(__file__).resolve().parents[2] / "specs" / "pipeline.yaml"
    done = cli("explain", spec, "disk-space", "--var", "min_free_gb=250")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("disk-space — 250GB+ free on /mnt/training\n")
    memory = cli("explain", spec, "python-version")
    assert "  probe:      python (defaults)" in memory.stdout


def test_version_names_matrix_and_its_python(cli):
    from matrix import __version__

    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"matrix {__version__} (Python 3.")
