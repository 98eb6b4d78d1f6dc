"""Verdict, readiness score and exit codes over hand-built results."""

from __future__ import annotations

import pytest

from matrix.results import (
    PhaseInfo,
    Result,
    Run,
    Skip,
    SkipKind,
    Status,
    Verdict,
    verdict,
    whole,
)

PASS, FAIL, ERROR, SKIP = Status.passed, Status.failed, Status.error, Status.skipped


def result(
    check: str,
    status: Status = PASS,
    severity: str = "critical",
    phase: str = "p",
    reason: str | None = None,
    task: str | None = None,
    skip: Skip | None = None,
) -> Result:
    return Result(
        task_id=task or check,
        check_id=check,
        phase_id=phase,
        target="local",
        host="localhost",
        cell={},
        status=status,
        severity=severity,
        title=check,
        reason=reason,
        skip=skip,
    )


def make_run(results: list[Result], phases: list[PhaseInfo] | None = None, **extra) -> Run:
    if phases is None:
        ids = dict.fromkeys(r.phase_id for r in results)
        phases = [
            PhaseInfo(p, p, 10.0, {r.check_id: 1.0 for r in results if r.phase_id == p})
            for p in ids
        ]
    return Run(
        spec_name="t",
        spec_path="spec.yaml",
        vars={},
        phases=phases,
        results=results,
        order=[r.task_id for r in results],
        started_at=0.0,
        duration=1.0,
        **extra,
    )


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], Verdict.ready),
        ([result("a"), result("b", SKIP, skip=Skip(SkipKind.not_applicable, "x"))], Verdict.ready),
        ([result("a", FAIL)], Verdict.blocked),
        ([result("a", ERROR)], Verdict.blocked),
        ([result("a", FAIL, "warning"), result("b", ERROR, "critical")], Verdict.blocked),
        ([result("a", FAIL, "warning")], Verdict.caution),
        ([result("a", ERROR, "warning"), result("b")], Verdict.caution),
        ([result("a", FAIL, "info"), result("b", ERROR, "info")], Verdict.ready),
        ([result("a", FAIL, "info"), result("b", FAIL, "warning")], Verdict.caution),
        ([result("a", SKIP, skip=Skip(SkipKind.blocked, "x"))], Verdict.ready),
    ],
)
def test_verdict(results, expected):
    assert verdict(results) is expected
    assert make_run(results).verdict is expected


def test_score_weights_phases_by_passed_share():
    phases = [
        PhaseInfo("infra", "Infra", 20, {"a": 1, "b": 1}),
        PhaseInfo("train", "Train", 80, {"c": 1, "d": 1}),
    ]
    run = make_run(
        [
            result("a", phase="infra"),
            result("b", phase="infra"),
            result("c", phase="train"),
            result("d", FAIL, phase="train"),
        ],
        phases,
    )
    assert run.score == pytest.approx(60.0)
    scores = {s.id: s for s in run.phase_scores()}
    assert scores["infra"].score == pytest.approx(20.0)
    assert scores["train"].score == pytest.approx(40.0)
    assert (scores["train"].passed, scores["train"].total) == (1, 2)
    assert run.to_dict()["score"] == 60.0


def test_all_passing_scores_100_and_nothing_passing_scores_0():
    assert make_run([result("a"), result("b")]).score == pytest.approx(100.0)
    assert make_run([result("a", FAIL), result("b", ERROR)]).score == pytest.approx(0.0)


def test_check_weight_is_respected():
    phases = [PhaseInfo("p", "P", 10, {"heavy": 3, "light": 1})]
    run = make_run([result("heavy"), result("light", FAIL)], phases)
    assert run.score == pytest.approx(75.0)
    run = make_run([result("heavy", FAIL), result("light")], phases)
    assert run.score == pytest.approx(25.0)


def test_skipped_by_when_or_filter_is_left_out_of_the_denominator():
    run = make_run(
        [
            result("a"),
            result("b", SKIP, skip=Skip(SkipKind.not_applicable, "vars.gpu")),
            result("c", SKIP, skip=Skip(SkipKind.filtered, "--tags")),
        ]
    )
    assert run.score == pytest.approx(100.0)


@pytest.mark.parametrize(
    "skip",
    [
        Skip(SkipKind.blocked, "a"),
        Skip(SkipKind.interrupted),
        Skip(SkipKind.stopped, "a"),
        Skip(SkipKind.not_run),
    ],
)
def test_blocked_interrupted_and_not_run_count_as_not_passed(skip):
    run = make_run([result("a"), result("b", SKIP, skip=skip)])
    assert run.score == pytest.approx(50.0)


def test_a_phase_with_nothing_applicable_drops_out_of_the_total():
    phases = [PhaseInfo("gpu", "GPU", 50, {"g": 1}), PhaseInfo("cpu", "CPU", 50, {"c": 1})]
    run = make_run(
        [
            result("g", SKIP, "critical", "gpu", skip=Skip(SkipKind.not_applicable, "false")),
            result("c", phase="cpu"),
        ],
        phases,
    )
    assert run.score == pytest.approx(100.0)
    assert {s.id: s.weight for s in run.phase_scores()} == {"gpu": 0.0, "cpu": 50}


def test_tasks_of_one_check_share_its_weight():
    phases = [PhaseInfo("p", "P", 10, {"fan": 1, "single": 1})]
    run = make_run(
        [
            result("fan", task="fan@h1"),
            result("fan", FAIL, task="fan@h2"),
            result("fan", task="fan@h3"),
            result("fan", task="fan@h4"),
            result("single"),
        ],
        phases,
    )
    assert run.score == pytest.approx(100 * (0.75 + 1) / 2)


def test_info_failure_lowers_the_score_but_not_the_verdict():
    run = make_run([result("a"), result("b", FAIL, "info")])
    assert run.verdict is Verdict.ready
    assert run.score == pytest.approx(50.0)
    assert run.fixes() == []


@pytest.mark.parametrize(
    ("results", "strict", "code"),
    [
        ([result("a")], False, 0),
        ([result("a")], True, 0),
        ([result("a", FAIL, "warning")], False, 0),
        ([result("a", FAIL, "warning")], True, 1),
        ([result("a", FAIL)], False, 1),
        ([result("a", ERROR)], True, 1),
        ([result("a", FAIL, "info")], True, 0),
    ],
)
def test_exit_codes(results, strict, code):
    assert make_run(results).exit_code(strict=strict) == code


def test_interrupted_run_exits_130_whatever_the_verdict():
    assert make_run([result("a")], interrupted=True).exit_code() == 130
    assert make_run([result("a", FAIL)], interrupted=True).exit_code(strict=True) == 130


def test_fixes_put_criticals_first_then_warnings_each_in_dependency_order():
    results = [
        result("late", FAIL),
        result("early", ERROR, "warning"),
        result("noise", FAIL, "info"),
        result("fine"),
        result("first", FAIL),
        result("last", FAIL, "warning"),
    ]
    run = make_run(results)
    run.order = ["early", "first", "fine", "late", "noise", "last"]
    assert [r.task_id for r in run.fixes()] == ["first", "late", "early", "last"]


@pytest.mark.parametrize(
    ("score", "shown"),
    [(12.5, 13), (37.5, 38), (0.5, 1), (2.5, 3), (12.49, 12), (99.5, 100), (0.0, 0)],
)
def test_scores_round_half_up(score, shown):
    assert whole(score) == shown


def test_a_phase_score_of_one_half_shows_as_one_like_the_total_rounds():
    info = PhaseInfo("p", "p", 1.0, {"a": 1500.0, "b": 1500.0})
    run = make_run([result("a"), result("b", FAIL)], [info])
    (phase,) = run.phase_scores()
    assert (phase.score, whole(phase.score), whole(run.score)) == (0.5, 1, 50)


def test_a_phase_counts_what_went_wrong_by_severity_and_blocked_tasks():
    blocked = Skip(SkipKind.blocked, "blocked by a")
    run = make_run(
        [
            result("a", FAIL),
            result("b", FAIL, "warning"),
            result("c", ERROR, "warning"),
            result("d", SKIP, skip=blocked),
            result("e", FAIL, "info"),
            result("f"),
        ]
    )
    (phase,) = run.phase_scores()
    assert (phase.critical, phase.warnings, phase.blocked) == (1, 2, 1)


def test_counts_and_json_shape():
    run = make_run(
        [result("a"), result("b", FAIL), result("c", SKIP, skip=Skip(SkipKind.blocked, "b"))]
    )
    data = run.to_dict()
    assert data["counts"] == {"pass": 1, "fail": 1, "error": 0, "skip": 1}
    assert data["verdict"] == "BLOCKED"
    assert data["schema_version"] == 2
    assert data["results"][1]["status"] == "fail"
    assert data["results"][2]["reason"] == "blocked by b"
    assert data["results"][2]["skip"] == {"kind": "blocked", "detail": "b"}
    assert data["phases"][0]["score"] == pytest.approx(10 / 3, abs=0.01)


@pytest.mark.parametrize(
    ("reason", "diagnostic", "shown"),
    [
        ("free_gb is 12, expected >= 100", "Only 12GB free, need 100GB", True),
        (
            "AccessDenied: no (ok is false, expected == true)",
            "Cannot read: AccessDenied: no",
            False,
        ),
        ("timed out after 5s", "timed out after 5s", False),
        ("AccessDenied: no (ok is false, expected == true)", "Cannot read data", True),
    ],
)
def test_reason_is_shown_only_when_it_adds_to_the_diagnostic(reason, diagnostic, shown):
    from dataclasses import replace

    from reporters.base import further_reason

    bad = replace(result("c", FAIL, reason=reason), diagnostic=diagnostic)
    assert (further_reason(bad) == reason) is shown


def test_a_phase_over_its_budget_turns_ready_into_caution_and_says_by_how_much():
    phases = [PhaseInfo("data", "Data", 10.0, {"c": 1.0}, budget=60.0)]
    slow = replace_result(result("c", phase="data"), started_at=0.0, duration=125.0)
    run = make_run([slow], phases)
    [over] = run.over_budget()
    assert run.verdict is Verdict.caution
    assert over.budget_warning().startswith("Data took 2m05s, over its 1m budget")
    fast = make_run([replace_result(slow, duration=59.0)], phases)
    assert fast.verdict is Verdict.ready and not fast.over_budget()
    failed = make_run([replace_result(slow, status=FAIL)], phases)
    assert failed.verdict is Verdict.blocked


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.24, "4.2s"), (60, "1m"), (125, "2m05s"), (3720, "1h02m")]
)
def test_span_reads_like_a_person_says_it(seconds, text):
    from matrix.results import span

    assert span(seconds) == text


def replace_result(found: Result, **changes) -> Result:
    from dataclasses import replace

    return replace(found, **changes)


@pytest.mark.parametrize(
    ("extra", "cut", "expected", "code"),
    [
        ({"interrupted": True}, Skip(SkipKind.interrupted), Verdict.incomplete, 130),
        ({"stopped_early": "stopped"}, Skip(SkipKind.stopped, "a"), Verdict.incomplete, 1),
        ({}, Skip(SkipKind.not_run), Verdict.incomplete, 1),
    ],
)
def test_a_run_cut_short_before_any_failure_has_no_passing_verdict(extra, cut, expected, code):
    run = make_run([result("a"), result("b", SKIP, skip=cut)], **extra)
    assert (run.verdict, run.exit_code(), run.to_dict()["verdict"]) == (
        expected,
        code,
        "INCOMPLETE",
    )


def test_a_run_cut_short_after_a_critical_failure_is_blocked():
    cut = Skip(SkipKind.interrupted)
    run = make_run([result("a", FAIL), result("b", SKIP, skip=cut)], interrupted=True)
    assert (run.verdict, run.exit_code()) == (Verdict.blocked, 130)
