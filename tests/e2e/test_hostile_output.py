"""Reports are always written, whatever a probe prints: huge numbers, NaN, lone surrogates,
file names that are not UTF-8, control characters and escape sequences. Text is made safe
where it enters the run, and one reporter that fails does not cost the others theirs."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

HUGE = "9" * 400
# A reply holding what no format takes as is: a 400-digit integer, NaN, -Infinity, a lone
# surrogate, a bell, a screen-clearing escape and a NUL.
REPLY = (
    '{"n": ' + HUGE + ', "nan": NaN, "inf": -Infinity, "lone": "a\\udcffb", '
    '"bell": "ring\\u0007 \\u001b[2Jcleared \\u0000nul"}'
)
SPEC = f"""
version: 1
name: hostile
phases:
  - id: p
    checks:
      - id: numbers
        probe: {{kind: command, argv: [cat, REPLY]}}
        expect: {{json.n: {{ge: 1{HUGE}}}, json.nan: {{lt: 1}}}}
        diagnostic: "got {{{{ facts.json }}}}"
      - id: names
        probe: {{kind: dir, path: DIR}}
        expect: {{entries: 0}}
        diagnostic: "found {{{{ facts.files }}}}"
"""


def strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def hostile(write_spec, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "plain.txt").write_text("x")
    with open(os.path.join(os.fsencode(folder), b"bad\xff\xfename"), "w") as stream:
        stream.write("x")
    reply = tmp_path / "reply.json"
    reply.write_text(REPLY)
    return write_spec(SPEC.replace("DIR", str(folder)).replace("REPLY", str(reply)))


@pytest.mark.parametrize("quiet", [[], ["--quiet"]], ids=["console", "quiet"])
def test_hostile_probe_output_still_gives_every_report(cli, hostile, tmp_path, quiet):
    reports = ["--json", "r.json", "--junit", "r.xml", "--markdown", "r.md", "--otel", "t.json"]
    done = cli("run", hostile, *reports, *quiet, env={"PYTHONIOENCODING": "ascii"})
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr  # both checks fail, nothing else
    data = strict_json((tmp_path / "r.json").read_text(encoding="utf-8"))
    numbers = {r["check_id"]: r for r in data["results"]}["numbers"]
    assert numbers["facts"]["json"]["n"] == int(HUGE)  # exact, and below the expectation
    assert numbers["facts"]["json"]["nan"] == "nan"
    assert numbers["facts"]["json"]["lone"] == "a\ufffdb"
    names = {r["check_id"]: r for r in data["results"]}["names"]
    assert "bad\ufffd\ufffdname" in names["facts"]["files"]
    ET.parse(tmp_path / "r.xml")
    assert "bad" in (tmp_path / "r.md").read_text(encoding="utf-8")
    strict_json((tmp_path / "t.json").read_text(encoding="utf-8"))
    if not quiet:
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", done.stdout), done.stdout
        assert "cleared" in done.stdout and "ring" in done.stdout


def test_a_failing_reporter_costs_only_its_own_report(cli, hostile, tmp_path):
    (tmp_path / "taken").mkdir()
    done = cli("run", hostile, "--json", "r.json", "--junit", "taken", "--markdown", "r.md")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "JunitReporter could not write its report" in done.stderr
    assert strict_json((tmp_path / "r.json").read_text())["verdict"] == "BLOCKED"
    assert (tmp_path / "r.md").exists()
