"""The Markdown reporter through the CLI: banner, tables, fixes, escaping, budget, step summary.

Markdown is read back with a real CommonMark parser (markdown-it-py with GFM tables), so a
broken table or injected HTML shows up the way GitHub would show it.
"""

from __future__ import annotations

import math
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

BLOCKED = """
version: 1
name: training | pipeline
phases:
  - id: training
    title: Training
    weight: 70
    needs: [infra]
    checks:
      - id: gpu-driver
        failure: GPU driver missing
        probe: {kind: command, shell: "echo 'driver: none'"}
        expect: {stdout: {contains: "driver: 5"}}
        diagnostic: "No driver: {{ facts.stdout }}"
        fix: Install the NVIDIA driver
      - id: notes
        when: "{{ false }}"
        probe: {kind: command, argv: ["true"]}
      - id: smoke
        needs: [gpu-driver]
        probe: {kind: command, argv: ["true"]}
      - id: loader
        probe: {kind: command, argv: ["true"]}
  - id: infra
    title: Infrastructure
    weight: 30
    checks:
      - id: clock
        failure: Clock skew
        severity: warning
        probe: {kind: command, shell: "echo 9"}
        expect: {stdout: {le: 1}}
        diagnostic: "Clock is {{ facts.stdout }}s off"
        fix: Restart chronyd
      - id: disk
        failure: Disk full
        probe: {kind: command, argv: ["true"]}
"""


def parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table")


def tables(text: str) -> list[list[list[str]]]:
    """Every table as rows of cell contents (header row first), as a GFM parser splits them."""
    found: list[list[list[str]]] = []
    row: list[str] | None = None
    tokens = parser().parse(text)
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            found.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            assert row is not None
            row.append(tokens[i + 1].content if tokens[i + 1].type == "inline" else "")
        elif token.type == "tr_close":
            found[-1].append(row or [])
    return found


def fix_list(text: str) -> list[str]:
    """The numbered items of "What to fix", in order."""
    section = text.split("### What to fix", 1)[1].split("### Full results", 1)[0]
    return re.findall(r"^\d+\. (.+)$", section, flags=re.M)


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> bool:
    """Read stdout on a thread until a line holds `text` (the pipe never fills up)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if line is None:
            return False
        if text in line:
            return True
    return False


def size(path: Path) -> int:
    return len(path.read_bytes())


def test_blocked_report_has_banner_tables_fixes_details_and_the_json_numbers(
    cli, write_spec, tmp_path, report
):
    write_spec(BLOCKED)
    done = cli("run", "spec.yaml", "--markdown", "out.md", "--json", "out.json")
    assert done.returncode == 1, done.stdout + done.stderr
    text = (tmp_path / "out.md").read_text(encoding="utf-8")
    data = report(tmp_path / "out.json")
    assert data["verdict"] == "BLOCKED"

    assert text.startswith("## 🔴 DEPLOYMENT BLOCKED: 1 critical issue, 1 warning\n")
    score = re.search(r"\*\*Readiness score: (\d+)/100\*\*", text)
    assert score and abs(int(score[1]) - data["score"]) <= 0.5
    counts = data["counts"]
    assert (
        f"{counts['pass']} passed · {counts['fail']} failed · {counts['error']} errors · "
        f"{counts['skip']} skipped · {data['duration']:.1f}s"
    ) in text
    assert "training \\| pipeline" in text  # the spec name, escaped

    phase_rows = {row[0].split(" ", 1)[1]: row for row in tables(text)[0][1:]}
    assert tables(text)[0][0] == ["Phase", "Passed", "Score", "Time"]
    for phase in data["phases"]:
        row = phase_rows[phase["title"]]
        assert row[1] == f"{phase['passed']}/{phase['total']}"
        assert row[2].startswith(f"{math.floor(phase['score'] + 0.5)}/{phase['weight']:g}")
        assert row[3] == f"{phase['duration']:.1f}s"
    assert phase_rows["Training"][1:3] == ["1/3", "23/70 - 1 critical issue, 1 blocked task"]
    assert phase_rows["Infrastructure"][1:3] == ["1/2", "15/30 - 1 warning"]
    assert phase_rows["Training"][0].startswith("❌")  # it holds the critical failure
    assert phase_rows["Infrastructure"][0].startswith("⚠️")

    # What to fix: criticals first, then warnings, each in dependency order.
    items = fix_list(text)
    assert len(items) == 2
    assert items[0].startswith("❌ **GPU driver missing**")
    assert items[1].startswith("⚠️ **Clock skew** (warning)")
    section = text.split("### What to fix", 1)[1].split("### Full results", 1)[0]
    assert section.index("No driver: driver: none") < section.index(
        "**Fix:** Install the NVIDIA driver"
    )
    assert section.index("Install the NVIDIA driver") < section.index("Clock is 9s off")
    assert section.index("Clock is 9s off") < section.index("Restart chronyd")

    # Full results: one collapsible block per phase, a row per task that was not filtered.
    blocks = re.findall(r"<details><summary><b>(.+?)</b> — (\S+) passed", text)
    assert blocks == [("Training", "1/3"), ("Infrastructure", "1/2")]
    assert text.count("</details>") == 2
    details = [t for t in tables(text) if t[0][1] == "Check"]
    assert [len(t) - 1 for t in details] == [4, 2]
    by_title = {row[1]: row for t in details for row in t[1:]}
    for title, task_id, mark in [
        ("GPU driver missing", "gpu-driver", "❌"),
        ("Clock skew", "clock", "⚠️"),
        ("disk", "disk", "✅"),
        ("smoke", "smoke", "⏭"),
        ("loader", "loader", "✅"),
        ("notes", "notes", "⏭"),
    ]:
        row = by_title[title]
        result = data["by_id"][task_id]
        assert row[0] == mark
        assert row[2] == result["severity"]
        # the JSON rounds to 0.1 ms, the table to 10 ms: compare the numbers, not the text
        assert abs(float(row[3].removesuffix("s")) - result["duration"]) <= 0.005 + 1e-4
    assert by_title["smoke"][4] == "blocked by gpu-driver"
    assert "No driver: driver: none" in by_title["GPU driver missing"][4]
    assert "**Fix:** Install the NVIDIA driver" in by_title["GPU driver missing"][4]
    assert by_title["disk"][4] == ""
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    ("severity", "code", "banner"),
    [
        ("warning", 0, "## 🟡 PROCEED WITH CAUTION: 1 warning"),
        ("critical", 0, "## 🟢 READY: 2 passed, 0 skipped"),
    ],
)
def test_caution_and_ready_banners(cli, write_spec, tmp_path, severity, code, banner):
    fails = "exit 1" if severity == "warning" else "exit 0"
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: maybe
                severity: {severity}
                probe: {{kind: command, shell: "{fails}"}}
                fix: Look at it
              - id: fine
                probe: {{kind: command, argv: ["true"]}}
        """
    )
    done = cli("run", "spec.yaml", "--markdown", "out.md")
    assert done.returncode == code, done.stdout + done.stderr
    text = (tmp_path / "out.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == banner
    if severity == "warning":
        assert "**Readiness score: 50/100**" in text
        assert fix_list(text) == ["⚠️ **maybe** (warning)"]
        assert "**Fix:** Look at it" in text
    else:
        assert "**Readiness score: 100/100**" in text
        assert fix_list(text) == []
        assert "Nothing: every critical and warning check passed." in text


def test_pipes_newlines_and_html_in_probe_output_stay_inside_their_cell(cli, write_spec, tmp_path):
    write_spec(
        r"""
        version: 1
        name: t
        phases:
          - id: p
            title: Pipes | and <i>tags</i>
            checks:
              - id: noisy
                failure: "Noisy | output"
                probe:
                  kind: command
                  shell: >-
                    printf 'a | b\nc\\|d <script>alert(1)</script> & <img src=x>
                    [link](http://x) @here #1 __init__'
                expect: {stdout: ok}
                diagnostic: "Got {{ facts.stdout }}"
                fix: "Run `grep a|b` & retry"
              - id: fine
                probe: {kind: command, argv: ["true"]}
              - id: listy
                probe:
                  kind: command
                  shell: "printf '# of GPUs: 0\\n- missing: torch\\n1. done'"
                expect: {stdout: ok}
                diagnostic: "{{ facts.stdout }}"
                fix: "\e[31m```red```\e[0m"
        """
    )
    done = cli("run", "spec.yaml", "--markdown", "out.md")
    assert done.returncode == 1, done.stdout + done.stderr
    text = (tmp_path / "out.md").read_text(encoding="utf-8")
    for table in tables(text):
        widths = {len(row) for row in table}
        assert len(widths) == 1, table  # every row has as many cells as the header
    phases = tables(text)[0]
    assert len(phases[0]) == 4
    assert phases[1][0] == "❌ Pipes | and &lt;i&gt;tags&lt;/i&gt;"
    details = tables(text)[1]
    assert len(details[0]) == 5
    row = next(r for r in details[1:] if r[1] == "Noisy | output")
    assert row[4].startswith(r"Got a | b<br>c&#92;|d &lt;script&gt;alert(1)&lt;/script&gt; &amp; ")
    assert "**Fix:** Run \\`grep a|b\\` &amp; retry" in row[4]

    html = parser().render(text)
    assert "<script>" not in html and "<img" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert r"c\|d" in html  # the user's backslash survives, and the pipe with it
    # Text from the spec and from probes is shown as typed: no code, link, bold or mention.
    assert "Run `grep a|b` &amp; retry" in html
    assert "<code>" not in html and "<a " not in html and "<strong>init" not in html
    assert "[link](http://x) @\u200bhere #\u200b1 __init__" in html
    assert "<summary><b>Pipes | and &lt;i&gt;tags&lt;/i&gt;</b>" in html
    # Probe text that starts like a heading or a list stays text in the fix list.
    assert "<h1>" not in html
    assert "<li># of GPUs: 0<br>- missing: torch<br>1. done</li>" in html
    assert "<li><strong>Fix:</strong> ```red```</li>" in html


@pytest.mark.parametrize(
    "how", [["--markdown"], ["--github-summary"], ["--markdown", "out.md", "--github-summary"]]
)
def test_github_step_summary_is_appended_to(cli, write_spec, tmp_path, how):
    write_spec(BLOCKED)
    summary = tmp_path / "summary.md"
    summary.write_text("## Build\n\nearlier step output\n", encoding="utf-8")
    done = cli("run", "spec.yaml", *how, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1, done.stdout + done.stderr
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## Build\n\nearlier step output\n\n## 🔴 DEPLOYMENT BLOCKED")
    assert text.count("DEPLOYMENT BLOCKED") == 1
    assert len(fix_list(text)) == 2
    if "out.md" in how:
        assert (tmp_path / "out.md").read_text(encoding="utf-8") == text.split(
            "earlier step output\n\n", 1
        )[1]


@pytest.mark.parametrize("how", [["--markdown"], ["--github-summary"]])
def test_step_summary_without_the_variable_is_a_usage_error_before_the_run(
    cli, write_spec, tmp_path, how
):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: leaves-a-mark
                probe: {kind: command, argv: ["touch", "probed"]}
        """
    )
    done = cli("run", "spec.yaml", *how, env={"GITHUB_STEP_SUMMARY": ""})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "GITHUB_STEP_SUMMARY" in done.stderr and "pass a path" in done.stderr
    assert not (tmp_path / "probed").exists()


def big_spec(passing: int, diagnostic: str = "", fix: str = "") -> str:
    checks = "\n".join(
        f"""      - id: pass-{i:03d}
        title: "Passing check number {i:03d} with a long and descriptive title, padded {"." * 120}"
        probe: {{kind: command, argv: ["true"]}}"""
        for i in range(passing)
    )
    return f"""
version: 1
name: big
phases:
  - id: many
    title: Many
    checks:
      - id: first-bad
        failure: First broken thing
        probe: {{kind: command, shell: "exit 1"}}
        diagnostic: "first went wrong {diagnostic}"
        fix: "Fix the first thing {fix}"
      - id: second-bad
        failure: Second broken thing
        severity: warning
        probe: {{kind: command, shell: "exit 1"}}
        diagnostic: "second went wrong {diagnostic}"
        fix: Fix the second thing
      - id: blocked
        needs: [first-bad]
        probe: {{kind: command, argv: ["true"]}}
{checks}
"""


def assert_verdict_and_fixes(text: str) -> None:
    assert text.startswith("## 🔴 DEPLOYMENT BLOCKED: 1 critical issue, 1 warning\n")
    items = fix_list(text)
    assert [item.split("**")[1] for item in items] == [
        "First broken thing",
        "Second broken thing",
    ]
    assert "**Fix:** Fix the first thing" in text
    assert "**Fix:** Fix the second thing" in text


def test_budget_drops_passing_detail_first(cli, write_spec, tmp_path):
    write_spec(big_spec(300))
    done = cli("run", "spec.yaml", "--markdown", "full.md", timeout=100)
    assert done.returncode == 1, done.stdout + done.stderr
    assert size(tmp_path / "full.md") > 65536  # the test means something
    done = cli("run", "spec.yaml", "--markdown", "out.md", "--markdown-max-chars", "65536")
    assert done.returncode == 1, done.stdout + done.stderr
    out = tmp_path / "out.md"
    assert size(out) <= 65536
    text = out.read_text(encoding="utf-8")
    assert_verdict_and_fixes(text)
    assert "> ⚠️ Report trimmed to 65536 bytes: 300 passing rows left out of the details" in text
    details = tables(text)[1]
    assert [row[0] for row in details[1:]] == ["❌", "⚠️", "⏭"]  # failing and skipped kept
    assert "Passing check number" not in text
    assert "_Left out to fit the report's size budget: 300 passing, 0 skipped, 0 failing._" in text
    assert parser().render(text).count("<details>") == 1


@pytest.mark.parametrize(
    ("budget", "note"),
    [
        (3000, "> ⚠️ Report trimmed to 3000 bytes: 300 passing rows left out of the details."),
        (
            700,
            "> ⚠️ Report trimmed to 700 bytes: 300 passing, 1 skipped and 2 failing rows left "
            "out of the details; the end cut off.",
        ),
    ],
)
def test_tiny_budget_keeps_verdict_and_fixes_with_a_note(cli, write_spec, tmp_path, budget, note):
    write_spec(big_spec(300))
    done = cli("run", "spec.yaml", "--markdown", "out.md", "--markdown-max-chars", str(budget))
    assert done.returncode == 1, done.stdout + done.stderr
    out = tmp_path / "out.md"
    assert size(out) <= budget
    text = out.read_text(encoding="utf-8")
    assert_verdict_and_fixes(text)
    assert "first went wrong" in text and "second went wrong" in text
    assert note in text
    assert "Passing check number" not in text
    assert text.count("<details>") == text.count("</details>")


def test_every_budget_is_kept_once_the_verdict_and_fixes_fit(run_spec, tmp_path):
    from reporters.markdown import MarkdownReporter

    run = run_spec(big_spec(40, diagnostic="ü|<b>" * 50, fix="| x"))
    reporter = MarkdownReporter(str(tmp_path / "out.md"))
    full = len(reporter.render(run, 10**9).encode())
    smallest = len(reporter.render(run, 1).encode())  # only the banner, fixes and the note
    assert smallest < 1000 < full
    for budget in range(smallest + 8, full + 50, 97):
        text = reporter.render(run, budget)
        assert len(text.encode()) <= budget, budget
        assert_verdict_and_fixes(text)
        assert text.count("<details>") == text.count("</details>"), budget
        assert text.count("Report trimmed") == (budget < full), budget
        for table in tables(text):
            assert len({len(row) for row in table}) == 1, (budget, table)


def test_fix_diagnostics_are_shortened_when_even_the_fixes_are_over_budget(
    cli, write_spec, tmp_path
):
    write_spec(big_spec(20, diagnostic="é" * 3000))
    done = cli("run", "spec.yaml", "--markdown", "out.md", "--markdown-max-chars", "3000")
    assert done.returncode == 1, done.stdout + done.stderr
    out = tmp_path / "out.md"
    assert size(out) <= 3000
    text = out.read_text(encoding="utf-8")
    assert_verdict_and_fixes(text)
    assert "; fix diagnostics shortened; the end cut off." in text
    assert re.search(r"first went wrong é+ …", text)


def test_custom_template_gets_the_same_context(cli, write_spec, tmp_path, report):
    write_spec(BLOCKED)
    (tmp_path / "my.md.j2").write_text(
        "# {{ spec_name|cell }}: {{ verdict }} {{ '%.1f'|format(score) }}\n"
        "{{ banner }}\n"
        "{% for r in fixes %}- {{ r.title|cell }}{{ r|where }}: {{ r.fix|cell }}\n{% endfor %}"
        "{% for d in results_by_phase %}{{ d.phase.id }}={{ d.rows|length }} {% endfor %}\n\n"
        "{% for p in phases %}{{ p.title }} {{ p.passed }}/{{ p.total }};{% endfor %}\n\n"
        "{{ counts.pass }}/{{ run.results|length }} complete={{ complete }}"
        " warnings={{ warnings|length }} note={{ budget_note }} budget={{ max_chars }}\n",
        encoding="utf-8",
    )
    done = cli(
        "run", "spec.yaml", "--markdown", "out.md", "--markdown-template", "my.md.j2",
        "--json", "out.json",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    data = report(tmp_path / "out.json")
    assert (tmp_path / "out.md").read_text(encoding="utf-8") == (
        f"# training \\| pipeline: BLOCKED {data['score']:.1f}\n"
        "🔴 DEPLOYMENT BLOCKED: 1 critical issue, 1 warning\n"
        "- GPU driver missing: Install the NVIDIA driver\n"
        "- Clock skew: Restart chronyd\n"
        "training=4 infra=2 \n"
        "Training 1/3;Infrastructure 1/2;\n"
        "2/6 complete=True warnings=0 note=None budget=1000000\n"
    )


@pytest.mark.parametrize(
    ("template", "message", "code"),
    [
        ("{% for x in %}", "invalid Markdown template", 2),  # refused before anything runs
        ("{{ run.results.append(1) }}", "the Markdown template failed", 3),  # at the end
        ("{{ run.__class__.__mro__ }}", "the Markdown template failed", 3),
        ("{{ no_such_thing }}", "'no_such_thing' is undefined", 3),
    ],
)
def test_bad_or_unsafe_templates_are_refused_cleanly(
    cli, write_spec, tmp_path, template, message, code
):
    """A template that does not compile is a usage error (2, nothing run); one that fails
    while rendering costs only its report (3, the run happened)."""
    write_spec(BLOCKED)
    (tmp_path / "bad.md.j2").write_text(template, encoding="utf-8")
    done = cli("run", "spec.yaml", "--markdown", "out.md", "--markdown-template", "bad.md.j2")
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.md").exists()


def test_interrupted_run_still_writes_the_markdown_with_a_notice(cli, write_spec, tmp_path):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: quick
                probe: {kind: command, argv: ["true"]}
              - id: sleeper
                probe: {kind: command, shell: "sleep 30"}
        """
    )
    proc = cli.popen("run", "spec.yaml", "--markdown", "out.md")
    try:
        assert wait_for_line(proc, "quick", timeout=20)
        time.sleep(0.5)  # the sleeper has started by now
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, proc.stderr.read() if proc.stderr else ""
    text = (tmp_path / "out.md").read_text(encoding="utf-8")
    assert text.startswith("## ⛔ INCOMPLETE: no verdict\n")
    assert "READY" not in text
    assert "> ⛔ **Interrupted**: 1 of 2 tasks finished; partial results." in text
    assert "the run is incomplete: no verdict" in text
    assert "Nothing among the tasks that finished." in text
    rows = {row[1]: row for row in tables(text)[1][1:]}
    assert rows["quick"][0] == "✅"
    assert rows["sleeper"][0] == "⏭"
    assert rows["sleeper"][4].startswith("interrupted")


def test_fail_fast_run_says_it_stopped_early(cli, write_spec, tmp_path):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: broken
                probe: {kind: command, shell: "exit 1"}
              - id: slow
                probe: {kind: command, shell: "sleep 30"}
        """
    )
    started = time.monotonic()
    done = cli("run", "spec.yaml", "--fail-fast", "--markdown", "out.md", "--phase", "p")
    assert time.monotonic() - started < 20
    assert done.returncode == 1, done.stdout + done.stderr
    text = (tmp_path / "out.md").read_text(encoding="utf-8")
    assert text.startswith("## 🔴 DEPLOYMENT BLOCKED: 1 critical issue\n")
    assert (
        "> ⏹ **--fail-fast**: stopped at the first critical failure (1 of 2 tasks finished)."
        in (text)
    )
    rows = {row[1]: row for row in tables(text)[1][1:]}
    assert rows["slow"][4].startswith("not run: --fail-fast stopped after broken")
