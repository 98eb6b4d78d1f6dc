"""`matrix init`: the starter spec and a spec started from a shipped one, both valid as written."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_starter_spec_validates_and_runs(cli, tmp_path: Path) -> None:
    done = cli("init", "service.yaml")
    assert done.returncode == 0, done.stderr
    assert "wrote service.yaml" in done.stdout
    text = (tmp_path / "service.yaml").read_text()
    assert text.startswith("# service.yaml — a failure matrix")
    assert yaml.safe_load(text)["name"] == "service"
    assert cli("validate", "service.yaml").returncode == 0
    ran = cli("run", "service.yaml")
    assert ran.returncode in (0, 1), ran.stderr  # READY here; a laptop without git: BLOCKED
    assert "Readiness score" in ran.stdout


def test_init_never_overwrites_unasked(cli, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("mine\n")
    done = cli("init", "spec.yaml")
    assert done.returncode == 2
    assert "spec.yaml already exists: choose another name or pass --force" in done.stderr
    assert (tmp_path / "spec.yaml").read_text() == "mine\n"
    assert cli("init", "spec.yaml", "--force").returncode == 0
    assert (tmp_path / "spec.yaml").read_text() != "mine\n"


def test_from_a_spec_keeps_the_chosen_phases_with_their_comments(cli, tmp_path: Path) -> None:
    source = REPO / "specs" / "pipeline.yaml"
    done = cli("init", "ops.yaml", "--from", source, "--phases", "monitoring,end-to-end")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "ops.yaml").read_text()
    spec = yaml.safe_load(text)
    assert [p["id"] for p in spec["phases"]] == ["monitoring", "end-to-end"]
    assert spec["vars"] == yaml.safe_load(source.read_text())["vars"]
    assert "# Started from" in text and "(phases: monitoring, end-to-end)" in text
    assert "# ── monitoring ──" in text  # comments travel
    end_to_end = spec["phases"][1]
    assert end_to_end["needs"] == []  # infrastructure, data and training were left behind
    checks = {c["id"]: c for p in spec["phases"] for c in p["checks"]}
    assert checks["s3-monitoring"]["needs"] == []  # aws-credentials is in infrastructure
    assert checks["state-persistence"]["needs"] == ["pipeline-orchestration"]  # still there
    assert cli("validate", "ops.yaml").returncode == 0


def test_an_unknown_phase_names_the_ones_there_are(cli) -> None:
    done = cli("init", "--from", REPO / "specs" / "pipeline.yaml", "--phases", "infra")
    assert done.returncode == 2
    assert "has no phase 'infra'; its phases: infrastructure, environment, data" in done.stderr
    assert cli("init", "--phases", "data").returncode == 2
