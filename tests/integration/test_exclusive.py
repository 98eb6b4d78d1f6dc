"""Exclusive probes (torch.*, torch.distributed, gpu.health) take turns on a target: two
training steps at once would halve each other's step time or OOM the GPU between them."""

from __future__ import annotations

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
