"""aws.identity, aws.s3 and aws.ec2 through the real engine against moto's server: a real
HTTP endpoint speaking S3/STS/EC2/IAM, with IAM checks on where a test needs AWS to say no."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from moto_server import MotoServer

from matrix.results import Result, Run

pytest.importorskip("aioboto3", reason="AWS probe tests need the aws extra")

BUCKET = "policy-database"


def spec(aws: MotoServer, checks: list[dict[str, Any]]) -> str:
    """A one-phase spec whose AWS probes all talk to the moto server."""
    for check in checks:
        check["probe"].setdefault("endpoint_url", aws.url)
        check.setdefault("diagnostic", "{{ error }}")
    return yaml.safe_dump(
        {"version": 1, "name": "aws", "phases": [{"id": "aws", "checks": checks}]}
    )


@pytest.fixture
def run_aws(
    aws: MotoServer, run_spec: Callable[..., Run], by_id: Callable[[Run], dict[str, Result]]
) -> Callable[..., dict[str, Result]]:
    def run(*checks: dict[str, Any]) -> dict[str, Result]:
        return by_id(run_spec(spec(aws, list(checks))))

    return run


def row(id: str, kind: str, expect: dict[str, Any] | None = None, **params: Any) -> dict:
    found: dict[str, Any] = {"id": id, "probe": {"kind": kind, **params}}
    if expect is not None:
        found["expect"] = expect
    return found


def sign_as(monkeypatch: pytest.MonkeyPatch, key_id: str, secret: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


# ── aws.identity ────────────────────────────────────────────────────────────


def test_identity_reports_account_arn_and_credential_source(run_aws) -> None:
    result = run_aws(row("who", "aws.identity", account="123456789012"))["who"]
    assert result.status.value == "pass", result.reason
    assert result.facts["account"] == "123456789012"
    assert result.facts["arn"].startswith("arn:aws:")
    assert result.facts["credentials"] == "env"
    assert result.facts["access_key"] == "…" + os.environ["AWS_ACCESS_KEY_ID"][-4:]


def test_identity_in_another_account_fails(run_aws) -> None:
    result = run_aws(row("who", "aws.identity", account="999999999999"))["who"]
    assert result.status.value == "fail"
    assert result.facts["error_code"] == "wrong-account"
    assert "belong to account 123456789012, expected 999999999999" in result.diagnostic


def test_no_credentials_is_an_error_in_milliseconds(run_aws, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    started = time.perf_counter()
    result = run_aws(row("who", "aws.identity"))["who"]
    assert time.perf_counter() - started < 10
    assert result.status.value == "error"
    assert result.facts["error_code"] == "no-credentials"
    assert result.diagnostic.startswith("no AWS credentials found")
    assert "aws configure" in result.diagnostic


def test_unknown_profile_names_the_profile(run_aws) -> None:
    result = run_aws(row("who", "aws.identity", profile="training"))["who"]
    assert result.status.value == "error"
    assert result.facts["error_code"] == "profile-not-found"
    assert "profile 'training' is not in ~/.aws/config" in result.diagnostic


def test_wrong_key_and_wrong_secret_are_told_apart(aws, run_aws, monkeypatch) -> None:
    key_id, secret = aws.user("trainer", ["sts:GetCallerIdentity"])
    with aws.iam_auth():
        sign_as(monkeypatch, key_id, secret)
        good = run_aws(row("who", "aws.identity"))["who"]
        sign_as(monkeypatch, key_id, "not-the-secret")
        bad_secret = run_aws(row("who", "aws.identity"))["who"]
        sign_as(monkeypatch, "AKIAZZZZZZZZZZZZZZZZ", secret)
        bad_key = run_aws(row("who", "aws.identity"))["who"]
    assert good.status.value == "pass", good.reason
    assert good.facts["arn"].endswith(":user/trainer")
    assert bad_secret.status.value == "fail"
    assert bad_secret.facts["error_code"] == "signature-mismatch"
    assert bad_secret.facts["aws_code"] == "SignatureDoesNotMatch"
    assert "check AWS_SECRET_ACCESS_KEY" in bad_secret.diagnostic
    assert bad_key.status.value == "fail"
    assert bad_key.facts["error_code"] == "invalid-key-id"
    assert bad_key.facts["access_key"] == "…ZZZZ"
    assert "deleted, deactivated or mistyped" in bad_key.diagnostic


def test_unreachable_endpoint_fails_fast_with_bounded_attempts(run_aws) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.perf_counter()
    result = run_aws(row("who", "aws.identity", endpoint_url=dead, attempts=2))["who"]
    assert time.perf_counter() - started < 10
    assert result.status.value == "error"
    assert result.facts["error_code"] == "endpoint-unreachable"
    assert dead in result.diagnostic and "check the network" in result.diagnostic


# ── aws.s3 ──────────────────────────────────────────────────────────────────


def test_s3_read_lists_within_the_bound_and_reads_one_object(aws, run_aws) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(25):
        s3.put_object(Bucket=BUCKET, Key=f"federal/doc-{i:02d}.json", Body=b"x" * 100)
    results = run_aws(
        row("all", "aws.s3", bucket=BUCKET),
        row("bounded", "aws.s3", bucket=f"s3://{BUCKET}/federal/", max_keys=10),
    )
    full, bounded = results["all"], results["bounded"]
    assert full.status.value == "pass", full.reason
    assert full.facts["objects"] == 25 and full.facts["bytes"] == 2500
    assert full.facts["truncated"] is False
    assert full.facts["object_readable"] is True
    assert full.facts["first_keys"][0] == "federal/doc-00.json"
    assert bounded.facts["prefix"] == "federal/"
    assert bounded.facts["objects"] == 10 and bounded.facts["truncated"] is True


def test_s3_missing_bucket_says_so(run_aws) -> None:
    result = run_aws(row("read", "aws.s3", bucket="no-such-data"))["read"]
    assert result.status.value == "fail"
    assert result.facts["error_code"] == "no-such-bucket"
    assert result.diagnostic.startswith("ListObjectsV2 on s3://no-such-data/ failed: NoSuchBucket")


def test_s3_read_denied_by_iam(aws, run_aws, monkeypatch) -> None:
    aws.boto3("s3").create_bucket(Bucket=BUCKET)
    key_id, secret = aws.user("stranger", ["sts:GetCallerIdentity"])
    with aws.iam_auth():
        sign_as(monkeypatch, key_id, secret)
        result = run_aws(row("read", "aws.s3", bucket=BUCKET))["read"]
    assert result.status.value == "fail"
    assert result.facts["accessible"] is False
    assert result.facts["error_code"] == "access-denied"
    assert result.facts["step"] == "list"


def test_s3_write_puts_reads_back_and_deletes_its_marker(aws, run_aws) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="llm-cache")
    result = run_aws(row("write", "aws.s3", bucket="llm-cache", mode="write", prefix="test"))[
        "write"
    ]
    assert result.status.value == "pass", result.reason
    assert result.facts["key"].startswith("llm-cache/test/matrix-preflight-")
    assert result.facts["written"] and result.facts["read_back"] and result.facts["deleted"]
    assert result.facts["marker_left"] is False
    assert s3.list_objects_v2(Bucket="llm-cache").get("KeyCount") == 0


def test_s3_write_denied_names_the_step_and_leaves_nothing(aws, run_aws, monkeypatch) -> None:
    aws.boto3("s3").create_bucket(Bucket="llm-cache")
    key_id, secret = aws.user("reader", ["s3:ListBucket", "s3:GetObject"])
    with aws.iam_auth():
        sign_as(monkeypatch, key_id, secret)
        result = run_aws(row("write", "aws.s3", bucket="llm-cache", mode="write"))["write"]
    assert result.status.value == "fail"
    assert result.facts["step"] == "put" and result.facts["written"] is False
    assert result.facts["error_code"] == "access-denied"
    assert result.facts["marker_left"] is False
    assert result.diagnostic.startswith("PutObject on s3://llm-cache/matrix-preflight-")


def test_s3_write_without_delete_permission_reports_the_marker_left(
    aws, run_aws, monkeypatch
) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket="llm-cache")
    key_id, secret = aws.user("writer", ["s3:PutObject", "s3:GetObject"])
    with aws.iam_auth():
        sign_as(monkeypatch, key_id, secret)
        result = run_aws(row("write", "aws.s3", bucket="llm-cache", mode="write"))["write"]
    assert result.status.value == "fail"
    assert result.facts["step"] == "delete"
    assert result.facts["written"] and result.facts["read_back"]
    assert result.facts["marker_left"] is True
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="llm-cache")["Contents"]]
    assert result.facts["key"] == f"llm-cache/{left[0]}"


def test_s3_count_names_each_empty_source(aws, run_aws) -> None:
    s3 = aws.boto3("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key in ["federal/a.pdf", "federal/b.PDF", "federal/c.txt", "state/d.txt"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"%PDF")
    sources = ["federal/", "state/", "municipal/"]
    results = run_aws(
        row(
            "sources",
            "aws.s3",
            bucket=BUCKET,
            mode="count",
            prefixes=sources,
            expect={"empty": {"len": 0}},
        ),
        row(
            "pdfs",
            "aws.s3",
            bucket=BUCKET,
            mode="count",
            prefixes=sources,
            suffix=".pdf",
            expect={"total": {"le": 1}},
        ),
    )
    sources_result, pdfs = results["sources"], results["pdfs"]
    assert sources_result.status.value == "fail"
    assert sources_result.facts["counts"] == {"federal/": 3, "state/": 1, "municipal/": 0}
    assert sources_result.facts["nonempty"] == 2
    assert sources_result.facts["problem"] == "Source municipal/ has 0 files"
    assert pdfs.facts["counts"] == {"federal/": 2, "state/": 0, "municipal/": 0}
    assert pdfs.status.value == "fail" and pdfs.facts["total"] == 2


# ── aws.ec2 ─────────────────────────────────────────────────────────────────


def test_ec2_running_instance_by_id_and_by_tag(aws, run_aws) -> None:
    instance_id = aws.instance("training-gpu")
    results = run_aws(
        row("by-id", "aws.ec2", {"running": True}, instance_id=instance_id),
        row("by-tag", "aws.ec2", {"running": True}, tags={"Name": "training-gpu"}),
    )
    for result in results.values():
        assert result.status.value == "pass", result.reason
        assert result.facts["instance_id"] == instance_id
        assert result.facts["type"] == "g5.2xlarge"
        assert result.facts["az"].startswith("us-east-1")
        assert result.facts["private_ip"]
        assert result.facts["name"] == "training-gpu"


def test_ec2_stopped_instance_fails_with_its_state(aws, run_aws) -> None:
    instance_id = aws.instance("training-gpu", stopped=True)
    result = run_aws(
        {
            **row("running", "aws.ec2", {"running": True}, instance_id=instance_id),
            "diagnostic": "Instance {{ facts.instance_id }} in state {{ facts.state }}",
        }
    )["running"]
    assert result.status.value == "fail"
    assert result.facts["state"] == "stopped"
    assert result.diagnostic == f"Instance {instance_id} in state stopped"
    assert result.facts["problem"] == result.diagnostic


def test_ec2_unknown_instance_is_not_found(run_aws) -> None:
    results = run_aws(
        row("id", "aws.ec2", instance_id="i-0123456789abcdef0"),
        row("tag", "aws.ec2", tags={"Name": "nobody"}),
    )
    assert results["id"].status.value == "fail"
    assert results["id"].diagnostic == "Instance i-0123456789abcdef0 not found in us-east-1"
    assert results["tag"].diagnostic == "No instance tagged Name=nobody found in us-east-1"


def test_ec2_needs_an_id_or_tags(spec_problems) -> None:
    problems = spec_problems(
        """
        version: 1
        name: t
        phases:
          - id: p
            checks:
              - id: ec2
                probe: {kind: aws.ec2}
        """
    )
    assert any("exactly one of instance_id or tags" in p.message for p in problems)
