"""Exclusive probes (torch.*, torch.distributed, gpu.health) take turns on a target: two
training steps at once would halve each other's step time or OOM the GPU between them."""

from __future__ import annotations

import sys
from itertools import pairwise

import pytest
from test_probes import check, run_checks

pytest.importorskip("torch")


def test_torch_probes_on_one_target_never_overlap(tmp_path):
    memory = {"params": 1e6, "device": "cpu"}
    results = run_checks(
        tmp_path,
        [check(f"m{i}", "torch.memory", **memory) for i in range(3)]
        + [check("light", "command", argv=["true"])],
    )
    spans = sorted(
        (r.started_at, r.started_at + r.duration)
        for r in results.values()
        if r.check_id.startswith("m")
    )
    assert all(r.status.value == "pass" for r in results.values()), results
    assert len(spans) == 3
    for (_, end), (start, _) in pairwise(spans):
        assert start >= end - 0.01, spans


def test_a_check_across_a_group_takes_turns_with_each_hosts_own(run_spec, tmp_path) -> None:
    """The spanning task holds every spanned host's turn: a host's own torch check never
    runs beside the ranks, on two SSH hosts (loopback ports, this python)."""
    from sshd import SshServer

    server = SshServer(tmp_path / "sshd", 2)
    try:
        group = server.target("node", python=sys.executable)
        run = run_spec(
            f"version: 1\nname: turns\ntargets:\n  {group}\nphases:\n  - id: p\n"
            "    checks:\n"
            # both "hosts" share this machine's cores: a slow rank is noise here, not a finding
            "      - {id: ddp, across: node, probe: {kind: torch.distributed, world_size: 1,\n"
            "         master_addr: 127.0.0.1, straggler_ratio: 50}}\n"
            "      - {id: m, on: node, probe: {kind: torch.memory, params: 1000000, device: cpu}}\n"
        )
    finally:
        server.stop()
    torch_rows = [r for r in run.results if r.check_id in ("ddp", "m")]
    assert [r.status.value for r in torch_rows] == ["pass"] * 3, [r.reason for r in torch_rows]
    across = next(r for r in torch_rows if r.check_id == "ddp")
    for own in (r for r in torch_rows if r.check_id == "m"):  # each host's, against the ranks
        apart = own.started_at >= across.started_at + across.duration - 0.01 or (
            across.started_at >= own.started_at + own.duration - 0.01
        )
        assert apart, (own.task_id, own.started_at, own.duration, across.duration)
