"""Spec → Plan: matrix and target expansion, dependencies, `when`, filters."""

from __future__ import annotations

import sys

import pytest

from matrix.plan import Filters, Need
from matrix.results import Status
from matrix.spec.problems import SpecInvalid
from matrix.transport.base import expand_hosts

MATRIX = """
version: 1
name: t
phases:
  - id: p
    checks:
      - id: check
        matrix: {batch_size: [8, 16]}
        probe: {kind: command, argv: ["echo", "{{ matrix.batch_size }}"]}
        diagnostic: "batch {{ matrix.batch_size }} failed"
"""


def test_matrix_axes_expand_into_one_task_per_cell(plan_spec):
    plan = plan_spec(MATRIX.replace('"{{ matrix.batch_size }}"', '"bs={{ matrix.batch_size }}"'))
    assert list(plan.tasks) == ["check[batch_size=8]", "check[batch_size=16]"]
    assert plan.tasks["check[batch_size=16]"].params.argv == ["echo", "bs=16"]
    assert plan.tasks["check[batch_size=8]"].cell == {"batch_size": 8}


def test_numeric_value_in_a_string_param_is_accepted(plan_spec):
    plan = plan_spec(MATRIX)
    assert plan.tasks["check[batch_size=16]"].params.argv == ["echo", "16"]


def test_two_axes_expand_to_their_product(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: train
                matrix: {bs: [8, 16], dtype: [fp16, bf16]}
                probe: {kind: command, argv: ["echo", "{{ matrix.bs }}-{{ matrix.dtype }}"]}
        """
    )
    assert list(plan.tasks) == [
        "train[bs=8,dtype=fp16]",
        "train[bs=8,dtype=bf16]",
        "train[bs=16,dtype=fp16]",
        "train[bs=16,dtype=bf16]",
    ]
    assert plan.tasks["train[bs=16,dtype=bf16]"].params.argv == ["echo", "16-bf16"]


def test_matrix_values_can_come_from_vars(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {small: 1, big: 3}
        phases:
          - id: p
            checks:
              - id: c
                matrix: {n: ["{{ vars.small }}", 2, "{{ vars.big }}"]}
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert list(plan.tasks) == ["c[n=1]", "c[n=2]", "c[n=3]"]


def test_matrix_reference_to_an_undeclared_axis_is_a_problem(spec_problems):
    [problem] = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: c
                matrix: {bs: [1]}
                probe: {kind: command, argv: ["echo", "{{ matrix.batch }}"]}
        """
    )
    assert "undefined variable matrix.batch" in problem.message


def test_local_target_group_gives_task_at_group(plan_spec):
    plan = plan_spec(
        f"""
        version: 1
        name: t
        targets:
          venv: {{via: local, python: {sys.executable}}}
        phases:
          - id: p
            checks:
              - id: check
                on: venv
                probe: {{kind: command, argv: ["true"]}}
              - id: here
                probe: {{kind: command, argv: ["true"]}}
        """
    )
    assert list(plan.tasks) == ["check@venv", "here"]
    target = plan.tasks["check@venv"].target
    assert (target.name, target.via, target.group) == ("venv", "local", "venv")
    assert target.options.python == sys.executable
    assert plan.tasks["here"].target.name == "local"


def test_ssh_group_fans_out_per_host_and_needs_pair_by_host(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {second: gpu-2}
        targets:
          gpu: {hosts: [gpu-1, "{{ vars.second }}"], user: ubuntu}
        phases:
          - id: p
            checks:
              - id: reach
                on: gpu
                probe: {kind: command, argv: ["true"]}
              - id: disk
                on: gpu
                needs: [reach]
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert list(plan.tasks) == [
        "ssh-connect@gpu-1",
        "reach@gpu-1",
        "ssh-connect@gpu-2",
        "reach@gpu-2",
        "disk@gpu-1",
        "disk@gpu-2",
    ]
    assert plan.tasks["disk@gpu-2"].needs == [
        Need("reach@gpu-2", True),
        Need("ssh-connect@gpu-2", True),
    ]
    assert plan.tasks["ssh-connect@gpu-1"].needs == []


def test_host_ranges_expand_with_their_padding():
    assert expand_hosts("gpu-[01-03]") == ["gpu-01", "gpu-02", "gpu-03"]
    assert expand_hosts("n[8-10].dc[1-2]:2222") == [
        "n8.dc1:2222",
        "n8.dc2:2222",
        "n9.dc1:2222",
        "n9.dc2:2222",
        "n10.dc1:2222",
        "n10.dc2:2222",
    ]
    assert expand_hosts("plain") == ["plain"]


def test_unreachable_host_is_one_connect_error_and_blocks_its_tasks(run_spec, by_id):
    run = run_spec(
        """
        version: 1
        name: t
        targets:
          gpu: {hosts: [gpu-1]}
        phases:
          - id: p
            checks:
              - id: remote
                on: gpu
                probe: {kind: command, argv: ["true"]}
              - id: here
                probe: {kind: command, argv: ["true"]}
        """
    )
    results = by_id(run)
    assert results["ssh-connect@gpu-1"].status is Status.error
    assert results["ssh-connect@gpu-1"].diagnostic.startswith("SSH failed: cannot resolve gpu-1")
    assert results["remote@gpu-1"].status is Status.skipped
    assert results["remote@gpu-1"].why == "blocked by ssh-connect@gpu-1"
    assert results["here"].status is Status.passed


def test_phase_needs_imply_task_needs(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        phases:
          - id: infra
            checks:
              - id: a
                probe: {kind: command, argv: ["true"]}
              - id: b
                probe: {kind: command, argv: ["true"]}
          - id: env
            needs: [infra]
            checks:
              - id: c
                probe: {kind: command, argv: ["true"]}
              - id: d
                needs: [c]
                probe: {kind: command, argv: ["true"]}
              - id: e
                needs: [infra]
                probe: {kind: command, argv: ["true"]}
        """
    )
    infra = Need("phase:infra", False)
    assert plan.tasks["c"].needs == [infra]
    assert plan.tasks["d"].needs == [Need("c", True), infra]
    assert infra in plan.tasks["e"].needs
    assert plan.tasks["a"].needs == []
    assert plan.groups == {"phase:infra": ["a", "b"]}


def test_order_respects_dependencies(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: late
                needs: [early]
                probe: {kind: command, argv: ["true"]}
              - id: early
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert plan.order == ["early", "late"]
    assert list(plan.tasks) == ["late", "early"]  # reports keep spec order


def test_when_false_skips(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {use_gpu: false, region: eu}
        phases:
          - id: p
            checks:
              - id: literal
                when: false
                probe: {kind: command, argv: ["true"]}
              - id: templated
                when: "{{ vars.use_gpu }}"
                probe: {kind: command, argv: ["true"]}
              - id: comparison
                when: "{{ vars.region == 'eu' }}"
                probe: {kind: command, argv: ["true"]}
              - id: cell
                matrix: {n: [1, 2]}
                when: "{{ matrix.n > 1 }}"
                probe: {kind: command, argv: ["true"]}
        """
    )
    assert plan.tasks["literal"].skip.text.startswith("when:")
    assert plan.tasks["literal"].skip.text.endswith("is false")
    assert plan.tasks["templated"].skip.text == "when: vars.use_gpu is false"
    assert plan.tasks["comparison"].skip is None
    assert plan.tasks["cell[n=1]"].skip is not None
    assert plan.tasks["cell[n=2]"].skip is None


def test_when_var_override_turns_a_check_on(plan_spec):
    text = """
    version: 1
    name: t
    vars: {use_gpu: false}
    phases:
      - id: p
        checks:
          - id: gpu
            when: "{{ vars.use_gpu }}"
            probe: {kind: command, argv: ["true"]}
    """
    assert plan_spec(text).tasks["gpu"].skip
    assert plan_spec(text, var_args=["use_gpu=true"]).tasks["gpu"].skip is None


FILTERED = """
version: 1
name: t
phases:
  - id: infra
    checks:
      - id: ssh-reachable
        tags: [network]
        probe: {kind: command, argv: ["true"]}
      - id: disk-space
        needs: [ssh-reachable]
        tags: [storage]
        probe: {kind: command, argv: ["true"]}
  - id: env
    checks:
      - id: python-version
        tags: [python, slow]
        probe: {kind: command, argv: ["true"]}
      - id: python-packages
        tags: [python]
        probe: {kind: command, argv: ["true"]}
"""


def skips(plan) -> dict[str, str | None]:
    return {task_id: task.skip and task.skip.text for task_id, task in plan.tasks.items()}


def test_filter_by_phase(plan_spec):
    assert skips(plan_spec(FILTERED, filters=Filters(phases=["env"]))) == {
        "ssh-reachable": "filtered out by --phase",
        "disk-space": "filtered out by --phase",
        "python-version": None,
        "python-packages": None,
    }


def test_filter_by_check_glob(plan_spec):
    found = skips(plan_spec(FILTERED, filters=Filters(checks=["python-*"])))
    assert found["python-version"] is None and found["python-packages"] is None
    assert found["ssh-reachable"] == "filtered out by --check"


def test_filter_by_tags_and_skip_tags(plan_spec):
    found = skips(plan_spec(FILTERED, filters=Filters(tags=["python"], skip_tags=["slow"])))
    assert found == {
        "ssh-reachable": "filtered out by --tags",
        "disk-space": "filtered out by --tags",
        "python-version": "filtered out by --skip-tags",
        "python-packages": None,
    }


def test_selected_check_pulls_in_what_it_strictly_needs(plan_spec):
    found = skips(plan_spec(FILTERED, filters=Filters(checks=["disk-space"])))
    assert found["disk-space"] is None
    assert found["ssh-reachable"] is None  # needed, so not filtered out
    assert found["python-version"] == "filtered out by --check"


def test_phase_needs_do_not_pull_in_whole_phases(plan_spec):
    text = FILTERED.replace("  - id: env\n", "  - id: env\n    needs: [infra]\n")
    found = skips(plan_spec(text, filters=Filters(phases=["env"])))
    assert found["ssh-reachable"] == "filtered out by --phase"
    assert found["python-packages"] is None


def test_filtered_out_tasks_run_as_skips_and_do_not_block(plan_spec, execute_plan, by_id):
    text = FILTERED.replace("  - id: env\n", "  - id: env\n    needs: [infra]\n")
    run = execute_plan(plan_spec(text, filters=Filters(phases=["env"])))
    results = by_id(run)
    assert results["ssh-reachable"].status is Status.skipped
    assert results["ssh-reachable"].why == "filtered out by --phase"
    assert results["python-packages"].status is Status.passed


def test_matrix_axis_may_come_from_a_var(plan_spec, spec_problems):
    spec = MATRIX.replace("[8, 16]", '"{{ vars.sizes }}"').replace(
        "name: t", "name: t\nvars: {sizes: [4, 32]}"
    )
    assert list(plan_spec(spec).tasks) == ["check[batch_size=4]", "check[batch_size=32]"]
    [problem] = spec_problems(spec.replace("[4, 32]", "4"))
    assert "expected a list of values, got 4" in problem.message


def test_booleans_and_numbers_fill_text_params(run_spec, by_id):
    run = run_spec(
        """
        version: 1
        name: t
        vars: {flag: true, secs: 0}
        phases:
          - id: p
            checks:
              - id: a
                probe: {kind: command, argv: [echo, "{{ vars.flag }}", "{{ vars.secs }}"]}
                expect: {stdout: "true 0"}
        """
    )
    assert by_id(run)["a"].status is Status.passed


def test_in_secret_asks_whether_it_is_set_without_raising(plan_spec):
    spec = """
        version: 1
        name: t
        secrets: [MX_TOKEN]
        phases:
          - id: p
            checks:
              - id: a
                when: "{{ 'MX_TOKEN' in secret }}"
                probe: {kind: command, argv: ["true"]}
        """
    assert plan_spec(spec, environ={}).tasks["a"].skip.text == "when: 'MX_TOKEN' in secret is false"
    assert plan_spec(spec, environ={"MX_TOKEN": "t0ken"}).tasks["a"].skip is None


def test_target_options_are_templated(plan_spec):
    plan = plan_spec(
        f"""
        version: 1
        name: t
        vars: {{py: "{sys.executable}"}}
        targets:
          venv: {{via: local, python: "{{{{ vars.py }}}}"}}
        phases:
          - id: p
            checks:
              - id: a
                on: venv
                probe: {{kind: command, argv: ["true"]}}
        """
    )
    assert plan.tasks["a@venv"].target.options.python == sys.executable


def test_filter_keeps_the_when_skip_of_a_pulled_in_dependency(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {host: ""}
        phases:
          - id: infra
            checks:
              - id: ssh
                when: "{{ vars.host != '' }}"
                probe: {kind: command, argv: ["true"]}
          - id: data
            checks:
              - id: files
                needs: [ssh]
                probe: {kind: command, argv: ["true"]}
        """,
        filters=Filters(phases=["data"]),
    )
    assert plan.tasks["ssh"].skip.text == "when: vars.host != '' is false"
    assert plan.tasks["files"].skip is None


def test_title_falls_back_to_failure_when_bad_and_category_when_passing(run_spec, by_id):
    run = run_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - {id: a, category: Disk, failure: Disk full, probe: {kind: command, argv: ["true"]}}
              - {id: b, category: Disk, failure: Disk full, probe: {kind: command, argv: ["false"]}}
        """
    )
    assert by_id(run)["a"].title == "Disk"
    assert by_id(run)["b"].title == "Disk full"


def test_tasks_that_would_share_an_id_are_a_spec_problem(spec_problems):
    [problem] = spec_problems(MATRIX.replace("[8, 16]", '[1, "1"]'))
    assert "two tasks would share the id 'check[batch_size=1]'" in problem.message


FLEET = """
version: 1
name: t
targets:
  gpu: {hosts: ["gpu-[1-3]"], user: ubuntu, key: ~/.ssh/train.pem}
phases:
  - id: p
    checks:
      - {id: disk, on: gpu, probe: {kind: disk, path: /}}
      - {id: here, probe: {kind: command, argv: ["true"]}}
"""


def test_inventory_replaces_groups_and_target_flag_sets_hosts(write_spec, tmp_path):
    from matrix.plan import build_plan
    from matrix.spec.load import load

    spec = write_spec(FLEET)
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("gpu: {hosts: [a-1, a-2], user: ec2-user}\ncpu: {hosts: [c-1]}\n")
    plan = build_plan(load(spec, inventories=[inventory]))
    assert [t for t in plan.tasks if t.startswith("disk")] == ["disk@a-1", "disk@a-2"]
    assert plan.tasks["disk@a-1"].target.options.user == "ec2-user"
    assert plan.tasks["disk@a-1"].target.options.key is None  # the whole group was replaced

    plan = build_plan(load(spec, target_args=["gpu=10.0.0.5,10.0.0.6:2222"]))
    assert [t for t in plan.tasks if t.startswith("disk")] == [
        "disk@10.0.0.5",
        "disk@10.0.0.6:2222",
    ]
    assert plan.tasks["disk@10.0.0.5"].target.options.user == "ubuntu"  # kept from the spec


def test_bad_target_flag_is_a_usage_problem(write_spec):
    from matrix.spec.load import load

    with pytest.raises(SpecInvalid, match="expected NAME=host1,host2"):
        load(write_spec(FLEET), target_args=["gpu"])


def test_limit_narrows_ssh_hosts_and_keeps_local_tasks(plan_spec):
    plan = plan_spec(FLEET, filters=Filters(limit=["gpu-2"]))
    assert plan.tasks["disk@gpu-1"].skip.text == "filtered out by --limit"
    assert plan.tasks["disk@gpu-2"].skip is None
    assert plan.tasks["here"].skip is None
    assert "ssh-connect@gpu-1" not in plan.tasks and "ssh-connect@gpu-2" in plan.tasks


def test_target_password_must_come_from_a_secret(spec_problems, plan_spec):
    [problem] = spec_problems(FLEET.replace("user: ubuntu", "user: ubuntu, password: hunter2"))
    assert "password must come from a secret" in problem.message
    assert problem.key == "targets.gpu.password"
    plan = plan_spec(
        FLEET.replace("name: t", "name: t\nsecrets: [GPU_PW]").replace(
            "user: ubuntu", 'user: ubuntu, password: "{{ secret.GPU_PW }}"'
        ),
        environ={"GPU_PW": "s3cret"},
    )
    assert plan.tasks["disk@gpu-1"].target.options.password == "s3cret"


WHEN_ROW = """
version: 1
name: t
vars: {port: ""}
phases:
  - id: p
    checks:
      - id: listening
        when: "{{ vars.port != '' }}"
        probe: {kind: port, port: "{{ vars.port }}"PARAM}
"""


def test_a_row_switched_off_by_when_is_excused_blank_values_not_typos(plan_spec, spec_problems):
    plan = plan_spec(WHEN_ROW.replace("PARAM", ""))
    assert plan.tasks["listening"].skip.text == "when: vars.port != '' is false"
    [problem] = spec_problems(WHEN_ROW.replace("PARAM", ", hots: x"))
    assert "unknown key 'hots'" in problem.message
    switched_on = WHEN_ROW.replace('{port: ""}', "{port: 0}").replace("!= ''", "!= 1")
    [problem] = spec_problems(switched_on.replace("PARAM", ""))
    assert problem.key == "phases[p].checks[listening].probe.port"


def test_secret_fields_take_only_secret_references(spec_problems):
    from probes.notify import Webhook

    assert Webhook.secret_fields == ("url",)
    [problem] = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: hook
                probe: {kind: notify.webhook, url: "https://hooks.example.com/T0/B0/x"}
        """
    )
    assert problem.key == "phases[p].checks[hook].probe.url"
    assert 'url must come from a secret: url: "{{ secret.NAME }}"' in problem.message


def test_a_bad_value_from_the_environment_errors_that_row_only(run_spec, by_id, spec_problems):
    text = """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: listening
                probe: {kind: port, port: "{{ env.PORT }}", mode: free}
              - id: other
                probe: {kind: command, argv: [echo, hi]}
        """
    results = by_id(run_spec(text, environ={"PORT": "abc"}))
    assert results["other"].status.value == "pass"
    assert results["listening"].status.value == "error"
    assert results["listening"].reason.startswith(
        "port='abc' (from {{ env.PORT }}): Input should be a valid integer"
    )
    [problem] = spec_problems(text.replace("{{ env.PORT }}", "abc"))
    assert problem.key == "phases[p].checks[listening].probe.port"


def test_every_via_a_spec_accepts_has_a_transport_and_the_reverse():
    """A transport is one module plus one row of the table; the spec's `via:` must name it."""
    from typing import get_args

    from matrix.spec.models import TargetSpec
    from matrix.transport import TRANSPORTS

    assert set(get_args(TargetSpec.model_fields["via"].annotation)) == set(TRANSPORTS)


def test_a_check_or_phase_that_expands_to_no_tasks_is_a_located_spec_error(plan_spec):
    """A row that makes no tasks would silently drop out of the verdict."""
    with pytest.raises(SpecInvalid) as raised:
        plan_spec(
            """
            version: 1
            name: t
            vars: {sizes: []}
            phases:
              - id: p
                checks:
                  - {id: a, matrix: {batch_size: []}, probe: {kind: command, argv: ["true"]}}
                  - {id: b, matrix: {n: "{{ vars.sizes }}"}, probe: {kind: command, argv: ["true"]}}
              - id: empty
            """
        )
    found = {(p.where.line, p.key, p.message.split(":")[0]) for p in raised.value.problems}
    assert found == {
        (7, "phases[p].checks[a].matrix.batch_size", "no values"),
        (8, "phases[p].checks[b].matrix.n", "no values"),
        (9, "phases[empty]", "no checks"),
    }


def test_a_spec_with_no_phases_is_an_error_not_an_empty_ready(plan_spec):
    with pytest.raises(SpecInvalid) as raised:
        plan_spec("version: 1\nname: t\nphases: []\n")
    (problem,) = raised.value.problems
    assert (problem.where.line, problem.key) == (3, "phases")
    assert problem.message.startswith("no phases: the spec would check nothing")


OMITTED = """
version: 1
name: t
vars: {entrypoint: "", d_model: 128}
phases:
  - id: p
    checks:
      - id: train
        probe:
          kind: torch.train
          entrypoint: "{{ vars.entrypoint or none }}"
          d_model: "{{ none if vars.entrypoint else vars.d_model }}"
"""


@pytest.mark.parametrize(
    ("entrypoint", "given"),
    [("", {"d_model": 128, "entrypoint": None}), ("pkg.model:build", {"d_model": 64})],
)
def test_a_param_that_renders_to_none_is_left_out(plan_spec, entrypoint, given):
    """One spec serves both models: the built-in size is given only without an entrypoint,
    and with one it falls back to its default instead of being an error."""
    spec = OMITTED.replace('entrypoint: ""', f'entrypoint: "{entrypoint}"')
    params = plan_spec(spec).tasks["train"].params
    assert {name: getattr(params, name) for name in given} == given
    assert ("d_model" in params.model_fields_set) is (not entrypoint)


def test_a_literal_null_is_kept_for_the_params_type_to_judge(spec_problems):
    [problem] = spec_problems(
        OMITTED.replace('"{{ none if vars.entrypoint else vars.d_model }}"', "null")
    )
    assert "d_model" in problem.key and "valid integer" in problem.message


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ matrix.n / 0 }}", "division by zero"),
        ("{{ [] | first }}", "No first item"),
    ],
)
def test_a_when_that_cannot_render_is_a_problem_at_the_when(spec_problems, when, message):
    [problem] = spec_problems(
        f"""
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                matrix: {{n: [1, 2]}}
                when: "{when}"
                probe: {{kind: command, argv: ["true"]}}
        """
    )
    assert problem.key == "phases[p].checks[a].when"
    assert (problem.where.line, problem.where.col) == (8, 15)
    assert message in problem.message


def test_a_when_that_reads_a_missing_env_var_is_the_tasks_error(plan_spec):
    plan = plan_spec(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: a
                when: "{{ env.MATRIX_NOT_SET_ANYWHERE }}"
                probe: {kind: command, argv: ["true"]}
        """,
        environ={},
    )
    assert "MATRIX_NOT_SET_ANYWHERE is not set" in plan.tasks["a"].error


def test_a_check_is_rendered_once_per_cell_unless_it_reads_target(plan_spec):
    """On a fleet, a check whose templates never read `target` is rendered and validated once
    (its tasks share the params); one that does is rendered for each host."""
    plan = plan_spec(
        """
        version: 1
        name: t
        vars: {word: hi}
        targets:
          fleet: {hosts: ["h[1-3]"]}
        phases:
          - id: p
            checks:
              - id: same
                on: fleet
                matrix: {n: [1, 2]}
                probe: {kind: command, argv: [echo, "{{ vars.word }}", "{{ matrix.n }}"]}
              - id: own
                on: fleet
                probe: {kind: command, argv: [echo, "{{ target.host }}"]}
        """
    )
    same = [plan.tasks[f"same[n={n}]@h{i}"].params for n in (1, 2) for i in (1, 2, 3)]
    assert same[0] is same[1] is same[2] and same[3] is same[4] is same[5]
    assert (same[0].argv, same[3].argv) == (["echo", "hi", "1"], ["echo", "hi", "2"])
    own = [plan.tasks[f"own@h{i}"].params.argv for i in (1, 2, 3)]
    assert own == [["echo", "h1"], ["echo", "h2"], ["echo", "h3"]]


def test_consistent_needs_a_group_and_plans_one_row_per_cell(plan_spec) -> None:
    from matrix.spec.problems import SpecInvalid

    with pytest.raises(SpecInvalid) as raised:
        plan_spec(
            "version: 1\nname: c\nphases:\n  - id: p\n    checks:\n"
            "      - {id: v, probe: {kind: command, argv: ['true']}, consistent: [stdout]}\n"
        )
    assert str(raised.value.problems[0]).endswith(
        "phases[p].checks[v].consistent: needs a check `on` a group of hosts: there is nothing "
        "to compare on one"
    )

    plan = plan_spec(
        "version: 1\nname: c\ntargets:\n  gpu: {hosts: ['h[1-3]']}\nphases:\n  - id: p\n"
        "    checks:\n      - {id: v, on: gpu, matrix: {n: [1, 2]}, consistent: [stdout],\n"
        "         probe: {kind: command, argv: ['true']}}\n"
    )
    rows = [task for task in plan.tasks.values() if task.compares]
    assert [task.id for task in rows] == ["v[n=1]@gpu:consistent", "v[n=2]@gpu:consistent"]
    assert [need.task_id for need in rows[0].needs] == ["v[n=1]@h1", "v[n=1]@h2", "v[n=1]@h3"]
    assert not any(need.blocks for need in rows[0].needs)


def test_limit_narrows_a_check_across_a_group_to_the_hosts_it_selects(plan_spec) -> None:
    from matrix.plan import Filters
    from matrix.spec.problems import SpecInvalid

    text = (
        "version: 1\nname: a\ntargets:\n  gpu: {hosts: ['h[1-3]']}\nphases:\n  - id: p\n"
        "    checks:\n      - {id: ddp, across: gpu, probe: {kind: torch.distributed}}\n"
    )
    plan = plan_spec(text, filters=Filters(limit=["h[23]"]))
    task = plan.tasks["ddp@gpu"]
    assert task.skip is None
    assert [ref.name for ref in task.spans] == ["h2", "h3"]
    assert [need.task_id for need in task.needs] == ["ssh-connect@h2", "ssh-connect@h3"]
    assert "ssh-connect@h1" not in plan.tasks or plan.tasks["ssh-connect@h1"].skip is not None

    with pytest.raises(SpecInvalid) as raised:  # a host the group lacks is still a typo
        plan_spec(text, filters=Filters(limit=["h9"]))
    assert "matches no remote host" in str(raised.value.problems[0])


def test_across_plans_one_task_on_the_group_needing_every_hosts_gate(plan_spec) -> None:
    from matrix.spec.problems import SpecInvalid

    plan = plan_spec(
        "version: 1\nname: a\ntargets:\n  gpu: {hosts: ['h[1-3]']}\nphases:\n  - id: p\n"
        "    checks:\n      - {id: ddp, across: gpu, probe: {kind: torch.distributed}}\n"
    )
    task = plan.tasks["ddp@gpu"]
    assert [ref.name for ref in task.spans] == ["h1", "h2", "h3"]
    assert task.target.name == "gpu"
    assert [need.task_id for need in task.needs] == [
        "ssh-connect@h1", "ssh-connect@h2", "ssh-connect@h3",
    ]  # fmt: skip

    with pytest.raises(SpecInvalid) as raised:
        plan_spec(
            "version: 1\nname: a\ntargets:\n  gpu: {hosts: [h1]}\nphases:\n  - id: p\n"
            "    checks:\n      - {id: d, across: gpu, probe: {kind: disk, path: /}}\n"
            "      - {id: t, on: gpu, across: gpu, probe: {kind: torch.distributed}}\n"
        )
    assert [str(problem).split(": ", 1)[1] for problem in raised.value.problems] == [
        "phases[p].checks[d].across: probe kind 'disk' runs on one host: use `on:` to fan it out",
        "phases[p].checks[t].across: give `on:` (a task per host) or `across:`, not both",
    ]


SLURM_BUDGET = """
version: 1
name: t
targets:
  gpu: {via: slurm, nodes: "n[1-2]", connect_timeout: 5, start_timeout: 30}
phases:
  - id: p
    checks:
      - {id: a, on: gpu, timeout: 10s, probe: {kind: command, argv: ["true"]}}
      - id: b
        on: gpu
        timeout: 20s
        retry: {attempts: 3, backoff: 1s}
        probe: {kind: command, argv: ["true"]}
      - {id: c, on: gpu, timeout: 5s, when: "{{ target.host == 'n2' }}",
         probe: {kind: command, argv: ["true"]}}
      - {id: d, timeout: 7s, probe: {kind: command, argv: ["true"]}}
"""


def test_a_slurm_groups_budget_bounds_its_busiest_node_and_its_gate_outwaits_the_transport(
    plan_spec,
):
    from matrix.transport.slurm import LIST_TIMEOUT, SlurmJob

    plan = plan_spec(SLURM_BUDGET)

    gate = plan.tasks["slurm-connect@n1"].check.timeout
    # two asks for the job, two waits behind prologs, the helper's start, and slack
    assert gate == 2 * (5 + LIST_TIMEOUT) + 2 * 30 + 5 + 5
    retried = 20 * 3 + 1 + 2  # every attempt to its timeout, and the backoffs between
    assert plan.budgets() == {"gpu": gate + 10 + retried + 5, "local": 7}  # n2 runs c too
    job = SlurmJob(plan.targets["n1"].options, ["n1", "n2"], budget=plan.budgets()["gpu"])
    assert job.time_limit == "7"  # 178 s + the gate, release and confirm waits: 318 s, 6 min + 1
