"""specs/pipeline.yaml as a user runs it: its AWS, data and monitoring rows against moto's
server and real files, and on a machine with no AWS credentials at all."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from moto_server import MotoServer, clean_aws_env

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "pipeline.yaml"
PHASES = ["--phase", "infrastructure", "--phase", "data", "--phase", "monitoring"]

pytest.importorskip("aioboto3", reason="the pipeline's AWS rows need the aws extra")


def test_without_credentials_it_ends_fast_and_says_what_to_do(
    cli, tmp_path: Path, report: Callable[[Path], dict[str, Any]]
) -> None:
    env = clean_aws_env({"HOME": str(tmp_path)})
    started = time.perf_counter()
    done = cli("run", SPEC, *PHASES, "--json", tmp_path / "out.json", env=env)
    took = time.perf_counter() - started
    assert done.returncode == 1, done.stderr
    assert took < 30, f"took {took:.1f}s"
    results = report(tmp_path / "out.json")["by_id"]
    creds = results["aws-credentials"]
    assert creds["status"] == "error"
    assert creds["facts"]["error_code"] == "no-credentials"
    assert creds["diagnostic"].startswith("AWS credentials invalid: no AWS credentials found")
    assert creds["fix"].startswith("Check ~/.aws/credentials")
    for row in ["s3-read", "s3-write", "data-sources", "pdf-limit", "s3-monitoring"]:
        assert results[row]["status"] == "skip", row
        assert results[row]["reason"] == "blocked by aws-credentials", row
    assert "AWS credentials invalid" in done.stdout


@pytest.fixture
def scene(aws: MotoServer, tmp_path: Path) -> dict[str, Any]:
    """Buckets, an instance and a dataset as a team would have them, with three faults: an
    empty source folder, a stopped instance and one record without text."""
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="policy-database")
    s3.create_bucket(Bucket="asoba-llm-cache")
    for key in ["federal/a.pdf", "state/b.pdf", "municipal/c.json"]:
        s3.put_object(Bucket="policy-database", Key=key, Body=b"data")
    instance_id = aws.instance(stopped=True)
    data = tmp_path / "data"
    data.mkdir()
    records = [{"text": f"policy {i}"} for i in range(20)] + [{"title": "no text"}]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with gzip.open(data / "val.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records[:5])
    return {"instance_id": instance_id, "data": data}


def test_aws_data_and_monitoring_rows_against_moto(
    aws: MotoServer, scene: dict[str, Any], cli, tmp_path: Path, report
) -> None:
    data = scene["data"]
    hook = "https://hooks.slack.com/services/T0000/B0000/abcdefghijklmnop"
    env = {**aws.credentials(), "SLACK_WEBHOOK": hook}
    env.pop("AWS_DEFAULT_REGION")
    settings = {
        "aws_endpoint_url": aws.url,
        "instance_id": scene["instance_id"],
        "training_dir": "/",
        "min_free_gb": 0,
        "train_file": str(data / "train.jsonl"),
        "val_file": str(data / "val.jsonl.gz"),
        "min_records": 20,
        "source_folders": ["federal/", "state/", "municipal/", "utility/"],
        "webhook_dry_run": True,
    }
    team_vars = tmp_path / "team.vars.yaml"
    team_vars.write_text(json.dumps(settings))  # JSON is YAML
    out = tmp_path / "out.json"
    done = cli("run", SPEC, *PHASES, "--vars", team_vars, "--json", out, env=env)
    assert done.returncode == 1, done.stderr
    results = report(out)["by_id"]
    status = {task_id: r["status"] for task_id, r in results.items()}
    for row in ["aws-credentials", "s3-read", "s3-write", "ec2-instance", "pdf-limit"]:
        assert status[row] == "pass", (row, results[row]["reason"])
    for row in ["data-format@trainer", "data-volume@trainer", "s3-monitoring", "slack-webhook"]:
        assert status[row] == "pass", (row, results[row]["reason"])
    assert status["ec2-running"] == "fail"
    assert results["ec2-running"]["diagnostic"] == (
        f"Instance {scene['instance_id']} in state stopped"
    )
    assert status["data-sources"] == "fail"
    assert results["data-sources"]["diagnostic"] == "Source utility/ has 0 files"
    assert results["data-sources"]["title"] == "Policy folders empty/missing"  # its failure
    assert status["data-content@trainer"] == "fail"
    assert results["data-content@trainer"]["diagnostic"] == (
        "Records missing 'text' field: 1 of 26 sampled"
    )
    assert results["pdf-limit"]["facts"]["total"] == 2
    assert results["slack-webhook"]["facts"]["sent"] is False
    assert hook not in out.read_text() and "abcdefghijklmnop" not in done.stdout
    assert aws.boto3("s3").list_objects_v2(Bucket="asoba-llm-cache").get("KeyCount") == 0


def test_team_scripts_that_report_nothing_are_errors_not_passes(
    cli, tmp_path: Path, report: Callable[[Path], dict[str, Any]]
) -> None:
    scripts = ["heartbeat_cmd", "detect_cmd"]  # the monitoring phase's team scripts
    team = tmp_path / "team.vars.yaml"
    team.write_text(json.dumps(dict.fromkeys(scripts, "true")))
    env = clean_aws_env({"HOME": str(tmp_path)})

    done = cli(
        "run", SPEC, "--phase", "monitoring", "--vars", team, "--json", tmp_path / "out.json",
        env=env,
    )  # fmt: skip

    assert done.returncode == 1, done.stderr
    results = report(tmp_path / "out.json")["by_id"]
    rows = ["heartbeat@trainer"] + [
        f"error-detection[failure_type={kind}]@trainer" for kind in ["oom", "nan_loss"]
    ]
    for row in rows:
        assert results[row]["status"] == "error", row
        assert results[row]["diagnostic"].startswith(
            "the script exited 0 and reported no result: print a JSON object"
        ), row
