"""AWS failures the moto server cannot produce (expired tokens, clock skew, SSO, timeouts),
read by the same `classify` the probes use, from the exceptions botocore raises for them."""

from __future__ import annotations

import pytest

pytest.importorskip("botocore")

from botocore import exceptions as bx

from probes.awsapi import AwsParams, classify


def client_error(code: str, message: str, status: int = 400) -> bx.ClientError:
    answer = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bx.ClientError(answer, "GetCallerIdentity")


@pytest.mark.parametrize(
    ("code", "ours", "advice"),
    [
        ("ExpiredToken", "expired-token", "aws sso login"),
        ("RequestExpired", "clock-skew", "sync this machine's clock"),
        ("AuthFailure", "invalid-key-id", "deleted, deactivated or mistyped"),
        ("UnauthorizedOperation", "access-denied", "grant the action"),
        ("PermanentRedirect", "wrong-region", "--var region="),
        ("Throttling", "aws-error", None),
    ],
)
def test_client_errors_are_classed_with_advice(code: str, ours: str, advice: str | None) -> None:
    failure = classify(client_error(code, "AWS says no", 403), AwsParams())
    assert failure.error_code == ours
    assert failure.aws_code == code and failure.http_status == 403
    assert failure.message.startswith(f"{code}: AWS says no")
    assert failure.reached_aws
    if advice:
        assert advice in failure.message


def test_an_expired_sso_session_never_reached_aws() -> None:
    failure = classify(bx.TokenRetrievalError(provider="sso", error_msg="expired"), AwsParams())
    assert failure.error_code == "expired-token"
    assert not failure.reached_aws
    assert "aws sso login" in failure.message


def test_a_timeout_names_the_bounds() -> None:
    params = AwsParams(region="eu-west-1", connect_timeout=2, read_timeout=3)
    failure = classify(bx.ConnectTimeoutError(endpoint_url="https://sts.eu-west-1"), params)
    assert failure.error_code == "endpoint-unreachable"
    assert failure.message.startswith("no answer from AWS in eu-west-1 within 2s/3s")


def test_anything_else_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        classify(KeyError("bug"), AwsParams())
