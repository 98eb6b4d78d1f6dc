"""`matrix run` as a user runs it: exit codes, console output, the JSON report."""

from __future__ import annotations

import itertools
import re

import pytest

PASSING = """
version: 1
name: smoke
phases:
  - id: basics
    title: Basics
    checks:
      - id: echo
        probe: {kind: command, argv: ["echo", "hello"]}
        expect: {stdout: hello}
      - id: shell
        probe: {kind: command, shell: "exit 0"}
"""

FAILING = """
version: 1
name: smoke
vars:
  min_free_gb: 100
phases:
  - id: infra
    title: Infrastructure
    checks:
      - id: disk-space
        category: Storage
        failure: Disk full
        probe: {kind: command, shell: "echo 12"}
        expect: {stdout: {ge: "{{ vars.min_free_gb }}"}}
        diagnostic: "Only {{ facts.stdout }}GB free, need {{ vars.min_free_gb }}GB"
        fix: "Resize the volume to {{ vars.min_free_gb }}GB"
      - id: fine
        probe: {kind: command, argv: ["true"]}
"""


def assert_clean(done) -> None:
    assert "Traceback" not in done.stderr, done.stderr


def test_passing_spec_exits_0_and_says_ready(cli, write_spec):
    write_spec(PASSING)
    done = cli("run", "spec.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✅ READY: 2 passed, 0 skipped" in done.stdout
    assert "🔍 BASICS" in done.stdout
    assert "Readiness score: 100/100" in done.stdout
    assert_clean(done)


def test_critical_failure_blocks_with_diagnostic_and_fix(cli, write_spec):
    write_spec(FAILING)
    done = cli("run", "spec.yaml")
    assert done.returncode == 1
    out = done.stdout
    assert "❌ Disk full" in out
    assert "   Only 12GB free, need 100GB" in out
    assert '   ↳ stdout is "12", expected >= 100' in out
    assert "   Fix: Resize the volume to 100GB" in out
    assert "DEPLOYMENT BLOCKED: 1 critical issue" in out
    assert "1. Disk full: Only 12GB free, need 100GB" in out
    assert "Readiness score: 50/100" in out
    assert_clean(done)


def test_var_override_on_the_command_line_turns_it_green(cli, write_spec):
    write_spec(FAILING)
    done = cli("run", "spec.yaml", "--var", "min_free_gb=10")
    assert done.returncode == 0, done.stdout
    assert "READY" in done.stdout


def test_error_row_is_shown_with_its_cause_and_blocks(cli, write_spec):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: needs-env
                probe: {kind: command, argv: ["echo", "{{ env.MATRIX_E2E_UNSET }}"]}
              - id: ok
                probe: {kind: command, argv: ["true"]}
        """
    )
    done = cli("run", "spec.yaml")
    assert done.returncode == 1
    assert "💥 needs-env" in done.stdout
    assert "export MATRIX_E2E_UNSET=" in done.stdout
    assert "✅ ok" in done.stdout
    assert_clean(done)


NOT_FOUND = """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: missing-tool
        probe: {kind: command, argv: ["matrix-no-such-program-xyz", "-L"]}
"""


def test_command_not_found_blocks(cli, write_spec):
    write_spec(NOT_FOUND)
    done = cli("run", "spec.yaml")
    assert done.returncode == 1
    assert "missing-tool" in done.stdout
    assert "DEPLOYMENT BLOCKED" in done.stdout
    assert_clean(done)


def test_command_not_found_is_an_error_naming_the_program(cli, write_spec, tmp_path, report):
    write_spec(NOT_FOUND)
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 1
    assert "💥 missing-tool" in done.stdout
    result = report(tmp_path / "out.json")["by_id"]["missing-tool"]
    assert result["status"] == "error"
    assert "matrix-no-such-program-xyz" in result["diagnostic"]


WARNING = """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: fine
        probe: {kind: command, argv: ["true"]}
      - id: slow-disk
        severity: warning
        probe: {kind: command, argv: ["false"]}
        diagnostic: "disk is slow"
        fix: "use NVMe"
      - id: trivia
        severity: info
        probe: {kind: command, argv: ["false"]}
"""


def test_warning_only_failure_proceeds_with_caution(cli, write_spec):
    write_spec(WARNING)
    done = cli("run", "spec.yaml")
    assert done.returncode == 0, done.stdout
    assert "🟡 PROCEED WITH CAUTION: 1 warning" in done.stdout
    assert "1. slow-disk (warning): disk is slow" in done.stdout
    assert "Fix: use NVMe" in done.stdout
    assert "trivia:" not in done.stdout  # info failures are not in the fix list


def test_strict_makes_caution_exit_1(cli, write_spec):
    write_spec(WARNING)
    done = cli("run", "spec.yaml", "--strict")
    assert done.returncode == 1
    assert "PROCEED WITH CAUTION" in done.stdout


def test_quiet_prints_nothing_but_still_writes_the_report(cli, write_spec, tmp_path, report):
    write_spec(WARNING)
    done = cli("run", "spec.yaml", "--quiet", "--json", "reports/run.json")
    assert done.returncode == 0
    assert done.stdout == ""
    assert report(tmp_path / "reports" / "run.json")["verdict"] == "CAUTION"


# ── retries ─────────────────────────────────────────────────────────────────


def counting_shell(counter, succeed_at: int) -> str:
    return (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        f"test $n -ge {succeed_at}"
    )


def test_retry_until_success(cli, write_spec, tmp_path, report):
    counter = tmp_path / "count"
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: flaky
                retry: {{attempts: 3, backoff: 0.05s}}
                probe: {{kind: command, shell: "{counting_shell(counter, 3)}"}}
        """
    )
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 0, done.stdout
    result = report(tmp_path / "out.json")["by_id"]["flaky"]
    assert (result["status"], result["attempts"]) == ("pass", 3)
    assert result["duration"] >= 0.05 + 0.1  # backoff doubles: 0.05s, then 0.1s
    assert counter.read_text().strip() == "3"
    assert "(after 3 attempts)" in done.stdout


def test_retry_that_never_succeeds_fails_after_all_attempts(cli, write_spec, tmp_path, report):
    counter = tmp_path / "count"
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: broken
                retry: {{attempts: 3, backoff: 0.05s}}
                probe: {{kind: command, shell: "{counting_shell(counter, 99)}"}}
        """
    )
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 1
    result = report(tmp_path / "out.json")["by_id"]["broken"]
    assert (result["status"], result["attempts"]) == ("fail", 3)
    assert counter.read_text().strip() == "3"


def test_no_retry_means_one_attempt(cli, write_spec, tmp_path, report):
    counter = tmp_path / "count"
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: once
                probe: {{kind: command, shell: "{counting_shell(counter, 2)}"}}
        """
    )
    cli("run", "spec.yaml", "--json", "out.json")
    assert report(tmp_path / "out.json")["by_id"]["once"]["attempts"] == 1
    assert counter.read_text().strip() == "1"


# ── blocked skips ───────────────────────────────────────────────────────────

BLOCKING = """
version: 1
name: t
phases:
  - id: infra
    checks:
      - id: A
        probe: {kind: command, argv: ["false"]}
      - id: B
        needs: [A]
        probe: {kind: command, argv: ["true"]}
      - id: C
        needs: [B]
        probe: {kind: command, argv: ["true"]}
      - id: D
        probe: {kind: command, argv: ["true"]}
  - id: env
    needs: [infra]
    checks:
      - id: E
        probe: {kind: command, argv: ["true"]}
"""


def test_failed_need_blocks_transitively_and_blocks_the_next_phase(
    cli, write_spec, tmp_path, report
):
    write_spec(BLOCKING)
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 1
    results = report(tmp_path / "out.json")["by_id"]
    assert results["A"]["status"] == "fail"
    for task in ("B", "C", "E"):
        assert (results[task]["status"], results[task]["reason"]) == ("skip", "blocked by A")
    assert results["D"]["status"] == "pass"
    assert "⏭  B — blocked by A" in done.stdout
    assert "⏭  C — blocked by A" in done.stdout


WARNED = """
version: 1
name: t
phases:
  - id: infra
    checks:
      - id: A
        severity: warning
        probe: {kind: command, argv: ["false"]}
      - id: B
        needs: [A]
        probe: {kind: command, argv: ["true"]}
      - id: D
        probe: {kind: command, argv: ["true"]}
  - id: env
    needs: [infra]
    checks:
      - id: E
        probe: {kind: command, argv: ["true"]}
"""


def test_warning_failure_does_not_block_the_next_phase(cli, write_spec, tmp_path, report):
    write_spec(WARNED.replace("        needs: [A]\n", ""))
    done = cli("run", "spec.yaml", "--json", "out.json")
    results = report(tmp_path / "out.json")["by_id"]
    assert results["A"]["status"] == "fail"
    assert results["E"]["status"] == "pass"  # phase needs block only on critical failures
    assert done.returncode == 0
    assert "PROCEED WITH CAUTION" in done.stdout


def test_check_needs_must_pass_even_when_the_need_is_a_warning(cli, write_spec, tmp_path, report):
    write_spec(WARNED)
    cli("run", "spec.yaml", "--json", "out.json")
    results = report(tmp_path / "out.json")["by_id"]
    assert (results["B"]["status"], results["B"]["reason"]) == ("skip", "blocked by A")


def test_warning_failure_blocks_no_phase_even_through_a_blocked_check(
    cli, write_spec, tmp_path, report
):
    write_spec(WARNED)
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 0  # the verdict is CAUTION …
    assert report(tmp_path / "out.json")["by_id"]["E"]["status"] == "pass"  # … so env runs


def test_error_in_a_need_blocks_too(cli, write_spec, tmp_path, report):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: slow
                timeout: 0.2s
                probe: {kind: command, argv: ["sleep", "5"]}
              - id: after
                needs: [slow]
                probe: {kind: command, argv: ["true"]}
        """
    )
    cli("run", "spec.yaml", "--json", "out.json")
    results = report(tmp_path / "out.json")["by_id"]
    assert results["slow"]["status"] == "error"
    assert results["after"]["reason"] == "blocked by slow"


# ── when and filters ────────────────────────────────────────────────────────

SELECTABLE = """
version: 1
name: t
vars: {use_gpu: false}
phases:
  - id: infra
    checks:
      - id: ssh-reachable
        tags: [network]
        probe: {kind: command, argv: ["true"]}
      - id: gpu-visible
        when: "{{ vars.use_gpu }}"
        probe: {kind: command, argv: ["false"]}
  - id: env
    checks:
      - id: python-version
        tags: [python, slow]
        probe: {kind: command, argv: ["true"]}
      - id: python-packages
        tags: [python]
        probe: {kind: command, argv: ["true"]}
"""


def statuses(data) -> dict[str, tuple[str, str | None]]:
    return {task: (r["status"], r["reason"]) for task, r in data["by_id"].items()}


def test_when_false_is_a_skip_that_does_not_count(cli, write_spec, tmp_path, report):
    write_spec(SELECTABLE)
    done = cli("run", "spec.yaml", "--json", "out.json")
    assert done.returncode == 0, done.stdout
    data = report(tmp_path / "out.json")
    assert statuses(data)["gpu-visible"] == ("skip", "when: vars.use_gpu is false")
    assert data["score"] == 100.0


def test_when_true_from_var_runs_the_check(cli, write_spec, tmp_path, report):
    write_spec(SELECTABLE)
    done = cli("run", "spec.yaml", "--var", "use_gpu=true", "--json", "out.json")
    assert done.returncode == 1
    assert statuses(report(tmp_path / "out.json"))["gpu-visible"][0] == "fail"


@pytest.mark.parametrize(
    ("args", "selected", "reason"),
    [
        (["--phase", "env"], {"python-version", "python-packages"}, "filtered out by --phase"),
        (["--check", "python-*"], {"python-version", "python-packages"}, "filtered out by --check"),
        (
            ["--check", "ssh-reachable,python-version"],
            {"ssh-reachable", "python-version"},
            "filtered out by --check",
        ),
        (["--tags", "network"], {"ssh-reachable"}, "filtered out by --tags"),
        (
            ["--skip-tags", "slow"],
            {"ssh-reachable", "python-packages"},
            "filtered out by --skip-tags",
        ),
    ],
)
def test_filters_are_reflected_in_the_report(
    cli, write_spec, tmp_path, report, args, selected, reason
):
    write_spec(SELECTABLE)
    done = cli("run", "spec.yaml", *args, "--json", "out.json")
    assert done.returncode == 0, done.stdout + done.stderr
    found = statuses(report(tmp_path / "out.json"))
    for task, (status, why) in found.items():
        if task in selected:
            assert status == "pass", task
        elif task != "gpu-visible":
            assert (status, why) == ("skip", reason), task
    assert "filtered out)" in done.stdout
    assert reason not in done.stdout  # filtered rows are counted, not listed


# ── dry run and fail-fast ───────────────────────────────────────────────────


def test_dry_run_prints_the_plan_and_probes_nothing(cli, write_spec, tmp_path):
    marker = tmp_path / "touched"
    write_spec(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: toucher
                probe: {{kind: command, argv: ["touch", "{marker}"]}}
              - id: after
                needs: [toucher]
                matrix: {{n: [1, 2]}}
                probe: {{kind: command, shell: "touch {marker}"}}
        """
    )
    done = cli("run", "spec.yaml", "--dry-run", "--json", "out.json")
    assert done.returncode == 0
    assert "3 tasks, in dependency order (nothing was probed)" in done.stdout
    assert re.search(r"^toucher\s+p\s+command\s+local\s+—", done.stdout, re.M)
    assert re.search(r"^after\[n=2\]\s+p\s+command\s+local\s+toucher", done.stdout, re.M)
    assert not marker.exists()
    assert not (tmp_path / "out.json").exists()


def test_fail_fast_stops_after_the_first_critical_failure(
    cli, write_spec, tmp_path, report, live_processes
):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: broken
                probe: {kind: command, argv: ["false"]}
              - id: slow-1
                probe: {kind: command, argv: ["sleep", "47.1"]}
              - id: slow-2
                probe: {kind: command, argv: ["sleep", "47.2"]}
        """
    )
    done = cli("run", "spec.yaml", "--fail-fast", "--json", "out.json", timeout=30)
    assert done.returncode == 1
    data = report(tmp_path / "out.json")
    assert data["stopped_early"] == "not run: --fail-fast stopped after broken"
    assert data["duration"] < 10
    for task in ("slow-1", "slow-2"):
        status, reason = statuses(data)[task]
        assert status == "skip"
        assert reason.startswith("not run: --fail-fast")
    assert "--fail-fast: stopped at the first critical failure" in done.stdout
    assert live_processes("sleep 47.") == []


def test_fail_fast_ignores_warning_failures(cli, write_spec, tmp_path, report):
    write_spec(WARNING)
    done = cli("run", "spec.yaml", "--fail-fast", "--json", "out.json")
    data = report(tmp_path / "out.json")
    assert data["stopped_early"] is None
    assert statuses(data)["fine"][0] == "pass"
    assert done.returncode == 0


# ── the JSON report ─────────────────────────────────────────────────────────


def test_json_report_has_the_documented_fields(cli, write_spec, tmp_path, report):
    write_spec(
        """
        version: 1
        name: report-shape
        vars: {token: "{{ secret.MATRIX_E2E_TOKEN }}", plain: 1}
        secrets: [MATRIX_E2E_TOKEN]
        phases:
          - id: infra
            title: Infrastructure
            weight: 20
            checks:
              - id: ok
                probe: {kind: command, argv: ["echo", "fine"]}
              - id: bad
                probe: {kind: command, shell: "echo $MATRIX_E2E_TOKEN; exit 2"}
                diagnostic: "exit {{ facts.exit_code }}: {{ facts.stdout }}"
                fix: "fix it"
          - id: train
            weight: 80
            checks:
              - id: train-step
                matrix: {bs: [8, 16]}
                probe: {kind: command, argv: ["true"]}
        """
    )
    done = cli("run", "spec.yaml", "--json", "out.json", env={"MATRIX_E2E_TOKEN": "tok-9f8e7d6c"})
    assert done.returncode == 1
    text = (tmp_path / "out.json").read_text()
    assert "tok-9f8e7d6c" not in text
    data = report(tmp_path / "out.json")
    assert data["schema_version"] == 2
    assert data["spec"]["name"] == "report-shape"
    assert data["spec"]["path"] == "spec.yaml"
    assert data["vars"] == {"token": "***", "plain": 1}
    assert data["verdict"] == "BLOCKED"
    assert data["score"] == 90.0  # (20 × 1/2 + 80 × 1) / 100
    assert data["counts"] == {"pass": 3, "fail": 1, "error": 0, "skip": 0}
    assert data["interrupted"] is False
    assert isinstance(data["duration"], float) and isinstance(data["started_at"], float)
    phases = {p["id"]: p for p in data["phases"]}
    assert phases["infra"]["weight"] == 20 and phases["infra"]["score"] == 10.0
    assert phases["train"]["weight"] == 80 and phases["train"]["score"] == 80.0
    assert phases["infra"]["title"] == "Infrastructure"
    tasks = ["ok", "bad", "train-step[bs=8]", "train-step[bs=16]"]
    assert [r["task_id"] for r in data["results"]] == tasks
    bad = data["by_id"]["bad"]
    documented = {"task_id", "status", "severity", "duration", "attempts", "facts"}
    assert documented | {"diagnostic", "fix"} <= set(bad)
    assert bad["status"] == "fail" and bad["severity"] == "critical" and bad["attempts"] == 1
    assert bad["facts"]["stdout"] == "***" and bad["facts"]["exit_code"] == 2
    assert bad["diagnostic"] == "exit 2: ***"
    assert bad["fix"] == "fix it"
    assert data["by_id"]["train-step[bs=16]"]["cell"] == {"bs": 16}
    assert data["by_id"]["ok"]["diagnostic"] is None
    # the console tells the same story
    assert "Readiness score: 90/100" in done.stdout
    assert "DEPLOYMENT BLOCKED: 1 critical issue" in done.stdout
    assert "3 passed · 1 failed · 0 errors · 0 skipped" in done.stdout
    assert "tok-9f8e7d6c" not in done.stdout


def test_undeclared_credential_shapes_never_reach_the_report(cli, write_spec, tmp_path):
    write_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: leak
                probe:
                  kind: command
                  argv: ["echo", "AKIAIOSFODNN7EXAMPLE https://hooks.slack.com/services/T0/B0/abcdef"]
                expect: {stdout: "nothing"}
        """
    )
    done = cli("run", "spec.yaml", "--json", "out.json")
    text = (tmp_path / "out.json").read_text() + done.stdout + done.stderr
    assert "AKIAIOSFODNN7EXAMPLE" not in text
    assert "hooks.slack.com" not in text
    assert "***" in text


# ── concurrency ─────────────────────────────────────────────────────────────


def sleepers(count: int, seconds: float) -> str:
    checks = "\n".join(
        f'      - id: s{i}\n        probe: {{kind: command, argv: ["sleep", "{seconds}"]}}'
        for i in range(count)
    )
    return f"version: 1\nname: t\nphases:\n  - id: p\n    checks:\n{checks}\n"


def test_checks_run_concurrently(cli, write_spec, tmp_path, report):
    write_spec(sleepers(20, 0.3))
    done = cli("run", "spec.yaml", "--concurrency", "10", "--json", "out.json")
    assert done.returncode == 0, done.stdout
    data = report(tmp_path / "out.json")
    assert data["counts"]["pass"] == 20
    assert data["duration"] < 3.0


def test_concurrency_1_runs_one_at_a_time(cli, write_spec, tmp_path, report):
    write_spec(sleepers(20, 0.3))
    done = cli("run", "spec.yaml", "--concurrency", "1", "--json", "out.json")
    assert done.returncode == 0, done.stdout
    data = report(tmp_path / "out.json")
    assert data["duration"] >= 20 * 0.3 * 0.9
    starts = sorted((r["started_at"], r["started_at"] + r["duration"]) for r in data["results"])
    for (_, end), (start, _) in itertools.pairwise(starts):
        assert start >= end - 0.05  # no overlap


BUDGETED = """
version: 1
name: budget
phases:
  - id: preflight
    title: Pre-flight
    budget: 200ms
    checks:
      - id: slow
        probe: {kind: command, argv: [sleep, "0.5"]}
"""


def test_a_phase_over_its_budget_is_a_caution_in_every_report(cli, write_spec, tmp_path):
    import json
    import xml.etree.ElementTree as ET

    spec = write_spec(BUDGETED)
    out = tmp_path / "out"
    done = cli(
        "run", spec, "--json", f"{out}.json", "--junit", f"{out}.xml", "--markdown", f"{out}.md"
    )
    assert done.returncode == 0, done.stderr
    assert "⚠️  Pre-flight took 0.5s, over its 0.2s budget" in done.stdout
    assert "PROCEED WITH CAUTION: 1 warning" in done.stdout
    assert "⏱ over its 0.2s budget" in done.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["verdict"] == "CAUTION"
    [phase] = report["phases"]
    assert phase["budget"] == 0.2 and phase["over_budget"] is True
    assert phase["duration"] >= 0.5
    props = {p.get("name"): p.get("value") for p in ET.parse(f"{out}.xml").iter("property")}
    assert props["matrix.phase.over_budget"] == "true"
    assert "over its 0.2s budget" in (tmp_path / "out.md").read_text()
    assert cli("run", spec, "--strict", "--quiet").returncode == 1
    roomy = write_spec(BUDGETED.replace("200ms", "1m"), name="roomy.yaml")
    assert cli("run", roomy, "--strict", "--quiet").returncode == 0


FILTERED = """
version: 1
name: t
phases:
  - id: basics
    checks:
      - {id: disk-space, tags: [storage], probe: {kind: command, argv: ["true"]}}
  - id: toolchain
    checks:
      - {id: python-version, probe: {kind: command, argv: ["true"]}}
"""


@pytest.mark.parametrize(
    ("filters", "said"),
    [
        (
            ["--check", "disk-spce"],
            "--check:1:1: disk-spce: matches no check (did you mean 'disk-space'?)",
        ),
        (
            ["--phase", "nope"],
            "--phase:1:1: nope: matches no phase; the spec has: basics, toolchain",
        ),
        (["--tags", "storag"], "--tags:1:1: storag: matches no tag (did you mean 'storage'?)"),
        (
            ["--skip-tags", "storag"],
            "--skip-tags:1:1: storag: matches no tag (did you mean 'storage'?)",
        ),
        (["--limit", "gpu-*"], "--limit:1:1: gpu-*: the spec has no remote hosts"),
        (
            ["--check", "disk-space", "--phase", "toolchain"],
            "--phase toolchain --check disk-space: these filters together select no task",
        ),
    ],
)
def test_a_selection_that_matches_nothing_is_a_usage_error_not_a_pass(
    cli, write_spec, filters, said
):
    write_spec(FILTERED)
    done = cli("run", "spec.yaml", "--strict", "--json", "out.json", *filters)
    assert done.returncode == 2, done.stdout
    assert said in done.stderr
    assert "READY" not in done.stdout
    assert not (cli.cwd / "out.json").exists()  # nothing was run


def test_a_glob_that_matches_runs_only_what_it_selects(cli, write_spec, report, tmp_path):
    write_spec(FILTERED)
    done = cli("run", "spec.yaml", "--check", "disk-*", "--json", "out.json")
    assert done.returncode == 0, done.stderr
    statuses = {k: r["status"] for k, r in report(tmp_path / "out.json")["by_id"].items()}
    assert statuses == {"disk-space": "pass", "python-version": "skip"}
