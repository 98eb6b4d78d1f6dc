"""Validate and plan stay bounded on hostile specs: fan-out is counted before it is made, only
regular files are read (and never past the size limit), and long chains of needs, host ranges
and nesting are walked without recursion — each ends in a located problem, fast."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from matrix.plan import expand
from matrix.plan.expand import MAX_TASKS
from matrix.spec.load import load
from matrix.spec.problems import SpecInvalid
from matrix.spec.yaml import MAX_BYTES
from matrix.transport.base import MANY_HOSTS, expand_hosts, host_count

CHECK = '        probe: {kind: command, argv: ["true"]}\n'
SPEC = "version: 1\nname: t\nphases:\n  - id: p\n    checks:\n      - id: a\n" + CHECK


def fleet(hosts: str, checks: int = 1, phase_needs: bool = False) -> str:
    """A spec with a `fleet` group and `checks` checks on it in each of two phases."""
    lines = ["version: 1", "name: t", "targets:", f"  fleet: {{hosts: ['{hosts}']}}", "phases:"]
    for p in range(2):
        lines.append(f"  - id: p{p}")
        if phase_needs and p:
            lines.append("    needs: [p0]")
        lines.append("    checks:")
        for c in range(checks):
            lines += [f"      - id: c{p}-{c}", "        on: fleet", CHECK.rstrip("\n")]
    return "\n".join(lines) + "\n"


# ── fan-out ─────────────────────────────────────────────────────────────────


def test_a_matrix_past_the_cap_is_refused_before_it_is_made(spec_problems):
    started = time.perf_counter()
    [problem] = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                matrix: {x: "{{ range(100) | list }}", y: "{{ range(100) | list }}",
                         z: "{{ range(100) | list }}"}
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert time.perf_counter() - started < 5
    assert (problem.where.line, problem.key) == (7, "phases[p].checks[a].matrix")
    assert "1 host × 100 x × 100 y × 100 z = 1,000,000 tasks" in problem.message
    assert f"at most {MAX_TASKS:,} tasks" in problem.message


def test_a_host_range_past_the_cap_is_refused_before_it_is_listed(spec_problems):
    started = time.perf_counter()
    [problem] = spec_problems(fleet("h[0-99999999]"))
    assert time.perf_counter() - started < 5
    assert (problem.where.line, problem.key) == (4, "targets.fleet.hosts[0]")
    assert "'h[0-99999999]' names 100,000,000 hosts" in problem.message
    assert f"at most {MAX_TASKS:,} tasks" in problem.message  # and no "has no hosts" after it


def test_a_host_range_from_the_command_line_is_counted_too(spec_problems):
    [problem] = spec_problems(fleet("h1"), target_args=["fleet=gpu-[0-9999999]"])
    assert str(problem.where) == "--target:1:1"
    assert "names 10,000,000 hosts" in problem.message


def test_tasks_that_cross_the_cap_together_are_reported_once(spec_problems, monkeypatch):
    monkeypatch.setattr(expand, "MAX_TASKS", 50_000)  # the rule, not the cap, on a small fleet
    half = 50_000 // 2 + 1
    [problem] = spec_problems(fleet(f"h[1-{half}]", checks=3))
    assert problem.key == "phases[p0].checks[c0-1].on"
    assert f"{half:,} hosts = {half:,} tasks on top of the {half:,} before it" in problem.message


def test_a_fleet_of_a_thousand_hosts_and_thirty_checks_plans(plan_spec):
    started = time.perf_counter()
    plan = plan_spec(fleet("gpu-[0001-1000]", checks=15))
    assert len(plan.tasks) == 1000 + 30 * 1000  # a connection gate per host, then the checks
    assert time.perf_counter() - started < 30


def test_a_fleet_whose_phases_need_each_other_plans_in_linear_time(plan_spec):
    """A guard against quadratic planning coming back (2,000 hosts, a phase need between
    phases of 10,000 tasks each: 100 million links before groups); not a benchmark."""
    started = time.perf_counter()
    plan = plan_spec(fleet("h[0001-2000]", checks=5, phase_needs=True))
    assert len(plan.tasks) == 2000 + 2 * 5 * 2000
    assert sum(len(task.needs) for task in plan.tasks.values()) <= 2 * len(plan.tasks)
    assert time.perf_counter() - started < 60


def test_a_phase_need_is_one_link_a_task_however_big_the_phase(plan_spec):
    """Links grow with tasks, not tasks × tasks: each task of p1 holds one Need on p0's
    group (plus its host's gate), and the group lists p0's tasks once."""
    plan = plan_spec(fleet("h[1-300]", checks=2, phase_needs=True))
    first, second = plan.tasks["c1-0@h1"].needs, plan.tasks["c1-1@h7"].needs
    assert [n.task_id for n in first] == ["phase:p0", "ssh-connect@h1"]
    assert first[0] is second[0]  # one Need per group, shared
    assert len(plan.groups["phase:p0"]) == 300 * 2 + 300  # its checks and the hosts' gates
    assert sum(len(t.needs) for t in plan.tasks.values()) <= 2 * len(plan.tasks)


@pytest.mark.parametrize(
    ("hosts", "said"),
    [
        (["m1", "n[5-1]"], "'n[5-1]' has the range 5-1, which runs backwards: write 1-5"),
        (["n[5-1]"], "'n[5-1]' has the range 5-1, which runs backwards"),
        (["n[1-3]x[9-4]"], "has the range 9-4, which runs backwards"),
        (["m1", "n[1-2"], "'n[1-2' opens a bracket it never closes (at 2)"),
        (["n1-2]"], "'n1-2]' closes a bracket it never opened (at 5)"),
        (["n[[1-2]]"], "opens a bracket inside another (at 3)"),
        (["n[a-c]"], "has [a-c], not a list of numbers and ranges: write them like [1-3,7"),
        (["n[]"], "has [], not a list of numbers and ranges"),
    ],
)
def test_a_host_pattern_that_is_not_a_hostlist_is_a_problem_at_its_place(
    spec_problems, hosts, said
):
    """Never dropped, never taken as a literal name, never only "the group has no hosts"."""
    listed = ", ".join(f"'{host}'" for host in hosts)
    [problem] = spec_problems(fleet("X").replace("['X']", f"[{listed}]"))
    bad = len(hosts) - 1
    assert (problem.where.line, problem.key) == (4, f"targets.fleet.hosts[{bad}]")
    assert said in problem.message and "has no hosts" not in problem.message


def test_a_bad_host_pattern_from_the_command_line_is_refused_too(spec_problems):
    problems = spec_problems(fleet("h1"), target_args=["fleet=gpu[1-2,gpu[9-3]"])
    assert {str(problem.where) for problem in problems} == {"--target:1:1"}
    assert [problem.message.split(": ")[0] for problem in problems] == [
        "host pattern 'gpu[1-2' opens a bracket it never closes (at 4)",
        "host pattern 'gpu[9-3]' has the range 9-3, which runs backwards",
    ]


@pytest.mark.parametrize("host", ["[::1]:2222", "[fe80::1%eth0]", "gpu-[01-16]", "n[1-3,7]"])
def test_ipv6_addresses_and_hostlists_are_not_bracket_problems(plan_spec, host):
    assert plan_spec(fleet(host)).tasks


def test_host_ranges_are_counted_without_listing():
    assert host_count("gpu-[01-16]") == 16
    assert host_count("n[8-10].dc[1-2]") == 6
    assert host_count("h[0-99999999]") == 100_000_000
    assert host_count("h" + "[1-2]" * 100) == MANY_HOSTS  # saturates, still a printable number
    assert host_count("h[0-" + "9" * 5000 + "]") == MANY_HOSTS  # past int() digit limits
    assert host_count("h[3-1]") == 0
    assert host_count("") == 0


def test_a_pattern_of_thousands_of_ranges_expands_without_recursion():
    assert expand_hosts("h" + "[1-1]" * 3000) == ["h" + "1" * 3000]
    assert expand_hosts("n[8-10].dc[1-2]:2222")[:3] == ["n8.dc1:2222", "n8.dc2:2222", "n9.dc1:2222"]


# ── recursion ───────────────────────────────────────────────────────────────


def chain(n: int, *, loop: bool = False) -> str:
    lines = ["version: 1", "name: t", "phases:", "  - id: p", "    checks:"]
    for i in range(n):
        lines.append(f"      - id: c{i}")
        if i or loop:
            lines.append(f"        needs: [c{(i - 1) % n}]")
        lines.append(CHECK.rstrip("\n"))
    return "\n".join(lines) + "\n"


def test_a_chain_of_1500_needs_plans_in_order(plan_spec):
    plan = plan_spec(chain(1500))
    assert plan.order[:2] == ["c0", "c1"] and plan.order[-1] == "c1499"


def test_a_cycle_of_1500_needs_is_reported_shortened(spec_problems):
    [problem] = spec_problems(chain(1500, loop=True))
    assert problem.message.startswith("dependency cycle: check c0 → check c1499 → ")
    assert "… 1490 more → " in problem.message
    assert problem.message.endswith("check c1 → check c0")


def test_a_chain_of_1500_phases_plans(plan_spec):
    lines = ["version: 1", "name: t", "phases:"]
    for i in range(1500):
        lines += [f"  - id: p{i}", f"    needs: [p{i - 1}]" if i else "", "    checks:"]
        lines += [f"      - id: c{i}", CHECK.rstrip("\n")]
    plan = plan_spec("\n".join(line for line in lines if line) + "\n")
    assert plan.order[-1] == "c1499"


# ── only regular files, never read past the limit ───────────────────────────


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    return path


def problem_of(path: Path | str, **options) -> str:
    started = time.perf_counter()
    with pytest.raises(SpecInvalid) as info:
        load(path, **options)
    assert time.perf_counter() - started < 2
    [problem] = info.value.problems
    return str(problem)


def test_a_fifo_spec_is_refused_without_blocking(fifo):
    expected = "pipe.yaml:1:1: not a regular file (a FIFO); give a YAML file"
    assert problem_of(fifo).endswith(expected)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_spec_is_refused_without_reading(device):
    expected = "not a regular file (a character device); give a YAML file"
    assert problem_of(device) == f"{device}:1:1: {expected}"


def test_a_symlink_to_a_device_is_refused(tmp_path):
    (tmp_path / "spec.yaml").symlink_to("/dev/zero")
    assert "not a regular file (a character device)" in problem_of(tmp_path / "spec.yaml")


def test_a_directory_is_refused(tmp_path):
    assert "not a regular file (a directory)" in problem_of(tmp_path)


@pytest.mark.parametrize("option", ["vars_files", "inventories"])
def test_vars_and_inventories_must_be_regular_files(write_spec, fifo, option):
    path = write_spec(SPEC)
    assert "pipe.yaml:1:1: not a regular file (a FIFO)" in problem_of(path, **{option: [fifo]})
    assert "/dev/zero:1:1: not a regular file" in problem_of(path, **{option: ["/dev/zero"]})


def test_an_include_of_a_fifo_is_refused_at_the_include(write_spec, fifo):
    path = write_spec("version: 1\nname: t\ninclude: [pipe.yaml]\n")
    assert problem_of(path).endswith("spec.yaml:3:11: include: pipe.yaml is not a regular file")


def test_the_size_limit_is_counted_while_reading(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    assert problem_of(path).endswith(f"file is too large: the limit is {MAX_BYTES} bytes")
    path.write_bytes(b"version: 1\nname: t\nphases: []\n#" + b"x" * (MAX_BYTES - 40))
    assert load(path).spec.name == "t"


def test_a_proc_file_that_stat_calls_empty_is_read():
    assert os.stat("/proc/self/status").st_size == 0
    problems = load("/proc/self/status").problems  # read as text: it is just not a spec
    assert any(problem.message.startswith("unknown key 'Umask'") for problem in problems)


def test_a_cycle_through_inherited_phase_needs_is_spelled_out(spec_problems):
    [problem] = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: infra
            checks:
              - id: x
                needs: [y]
                probe: {kind: command, argv: ["true"]}
          - id: env
            needs: [infra]
            checks:
              - id: y
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert problem.message == "dependency cycle: phase infra → check x → check y → phase infra"


def test_many_checks_under_many_phase_needs_plan_fast(plan_spec):
    phases = [f"  - {{id: q{i}, checks: [{{id: k{i}, {CHECK.strip()}}}]}}" for i in range(300)]
    needs = ", ".join(f"q{i}" for i in range(300))
    checks = [f"      - {{id: c{i}, {CHECK.strip()}}}" for i in range(3000)]
    text = "\n".join(["version: 1", "name: t", "phases:", *phases, "  - id: big"])
    started = time.perf_counter()
    plan = plan_spec(f"{text}\n    needs: [{needs}]\n    checks:\n" + "\n".join(checks) + "\n")
    assert time.perf_counter() - started < 20
    assert len(plan.tasks["c2999"].needs) == 300
    assert plan.tasks["c0"].needs is not plan.tasks["c1"].needs


def test_an_integer_var_past_the_digit_limit_is_a_problem(spec_problems):
    [problem] = spec_problems(
        SPEC.replace("name: t", "name: t\nvars: {n: 1}"), var_args=["n=" + "9" * 5000]
    )
    assert str(problem.where) == "--var:1:1"
    assert problem.message.startswith("not a usable integer: Exceeds the limit (4300 digits)")
