"""matrix/consistency.py: a fact compared across hosts, outliers named against the majority."""

from __future__ import annotations

from typing import Any

from matrix.consistency import compare
from matrix.results import Result, Status


def result(host: str, facts: dict[str, Any], status: Status = Status.passed) -> Result:
    return Result(
        task_id=f"c@{host}", check_id="c", phase_id="p", target=host, host=host, cell={},
        status=status, severity="critical", title="c", facts=facts,
    )  # fmt: skip


def test_the_outliers_are_named_with_the_value_the_majority_has() -> None:
    hosts = [result(f"gpu-{i:02d}", {"torch": "2.5.1", "gpus": 8}) for i in range(1, 16)]
    hosts.insert(6, result("gpu-07", {"torch": "2.4.0", "gpus": 8}))

    status, facts, reason = compare(["torch", "gpus"], hosts)

    assert status is Status.failed
    assert reason == 'torch "2.4.0" on gpu-07; "2.5.1" on the other 15 hosts'
    assert facts["outliers"] == {"torch": ["gpu-07"], "gpus": []}
    assert facts["faulty_hosts"] == ["gpu-07"]
    assert facts["hosts"] == 16 and facts["not_observed"] == []


def test_many_outliers_are_counted_past_five_and_a_missing_fact_is_a_value() -> None:
    hosts = [result(f"h{i}", {"model": "H100"}) for i in range(10)]
    hosts += [result(f"a{i}", {"model": "A100"}) for i in range(7)]
    hosts.append(result("x", {}))

    status, _, reason = compare(["model"], hosts)

    assert status is Status.failed
    assert reason == (
        'model (missing) on x; "A100" on a0, a1, a2, a3, a4 and 2 more; "H100" on the other '
        "10 hosts"
    )


def test_hosts_that_did_not_observe_are_listed_not_compared() -> None:
    hosts = [
        result("a", {"v": 1}),
        result("b", {"v": 1}, Status.failed),  # observed: its own expectation failed
        result("c", {}, Status.error),
        result("d", {}, Status.skipped),
    ]

    assert compare(["v"], hosts)[:2] == (
        Status.passed,
        {"hosts": 2, "not_observed": ["c", "d"], "values": {"v": {"1": ["a", "b"]}},
         "outliers": {"v": []}, "faulty_hosts": []},
    )  # fmt: skip
    assert compare(["v"], hosts[2:])[0] is Status.error
    assert compare(["v"], hosts[2:])[2] == "no host observed the facts to compare"


def test_a_number_and_its_text_differ() -> None:
    status, _, reason = compare(
        ["n"], [result("a", {"n": 2}), result("b", {"n": "2"}), result("c", {"n": 2})]
    )

    assert status is Status.failed and reason == 'n "2" on b; 2 on the other 2 hosts'


def test_a_tie_blames_no_host() -> None:
    pair = [result("n1", {"v": "2.5.1", "n": 8}), result("n3", {"v": "2.4.0", "n": 8})]
    four = [result(h, {"v": v}) for h, v in (("a", 1), ("b", 2), ("c", 1), ("d", 2))]

    status, facts, reason = compare(["v", "n"], pair)
    four_status, four_facts, four_reason = compare(["v"], four)

    assert status is Status.failed
    assert reason == (
        'v differs with no majority to tell the odd host (a tie): "2.5.1" on n1; "2.4.0" on n3'
    )
    assert facts["outliers"] == {"v": [], "n": []} and facts["faulty_hosts"] == []
    assert four_status is Status.failed and four_facts["faulty_hosts"] == []
    assert (
        four_reason
        == "v differs with no majority to tell the odd host (a tie): 1 on a, c; 2 on b, d"
    )


def test_a_tie_on_one_fact_still_names_the_outlier_of_another() -> None:
    hosts = [
        result(h, {"v": v, "n": n})
        for h, v, n in (("a", 1, 8), ("b", 2, 8), ("c", 1, 8), ("d", 2, 7))
    ]

    _, facts, reason = compare(["v", "n"], hosts)

    assert facts["faulty_hosts"] == ["d"] and facts["outliers"] == {"v": [], "n": ["d"]}
    assert reason.endswith("; n 7 on d; 8 on the other 3 hosts")
