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


# Lines a CI log reader obeys: GitHub's workflow commands (one that stops all further
# commands among them), its older form, Azure's and TeamCity's service messages.
CI_COMMANDS = [
    "::error file=evil.py,line=1::pwned",
    "::stop-commands::tok",
    "  ::add-mask::visible",
    "::set-output name=a::b",
    "##[error]old form",
    "done ##vso[task.setvariable variable=deploy]yes",
    "##teamcity[buildStatus text='green']",
]


def obeyed(log: str) -> list[str]:
    """The lines of `log` a runner would take as commands, by its own rules: GitHub's runner
    trims a line's start and looks for `::` there, and `##[` anywhere; Azure and TeamCity look
    for their prefixes anywhere; a line ends at \\r, \\n or both."""
    found = []
    for line in re.split(r"\r\n|\r|\n", log):
        if line.lstrip().startswith("::") or re.search(r"##(vso|teamcity)?\[", line):
            found.append(line)
    return found


@pytest.mark.parametrize("ci", [{"GITHUB_ACTIONS": "true"}, {}], ids=["github", "plain"])
def test_no_line_of_probe_text_acts_on_a_ci_log(cli, write_spec, tmp_path, ci):
    """In a failed row's diagnostic, reason and facts, split by \\n or \\r, in the console
    and in stderr: every command is shown (with a zero-width space inside its opening) and
    none is one."""
    said = tmp_path / "said.txt"
    said.write_text("\n".join(CI_COMMANDS) + "\r::error::after a carriage return")
    rows = [
        {"id": "loud", "probe": {"kind": "command", "argv": ["cat", str(said)]},
         "expect": {"exit_code": 1}, "diagnostic": "said: {{ facts.stdout }}"},
        {"id": "to-stderr", "probe": {"kind": "command", "shell": f"cat '{said}' >&2; exit 3"}},
    ]  # fmt: skip
    checks = "".join(f"      - {json.dumps(row)}\n" for row in rows)
    write_spec(f"version: 1\nname: ci\nphases:\n  - id: p\n    checks:\n{checks}")

    done = cli("run", "spec.yaml", env=ci)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "pwned" in done.stdout and "deploy]yes" in done.stdout  # shown, not hidden
    assert obeyed(done.stdout) == [] and obeyed(done.stderr) == []
