"""What every AWS probe shares: the connection params, a bounded client, and one reading of
AWS's failures into an `error_code` a person (and a CI rule) can act on.

Clients are made per observation with short timeouts and a bounded number of attempts, so a
machine without credentials or without a route to AWS answers in seconds, not after botocore's
default minute of retries. aioboto3 is imported only here, inside `session()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from matrix.probe import ProbeError, ProbeParams

DEFAULT_REGION = "us-east-1"

# AWS error codes → our classes. Codes differ per service for the same cause (STS says
# InvalidClientTokenId, S3 InvalidAccessKeyId, EC2 AuthFailure).
_CODES = {
    "expired-token": {
        "ExpiredToken",
        "ExpiredTokenException",
        "TokenRefreshRequired",
        "InvalidToken",
    },
    "invalid-key-id": {
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "UnrecognizedClientException",
        "AuthFailure",
    },
    "signature-mismatch": {"SignatureDoesNotMatch", "IncompleteSignature"},
    "clock-skew": {"RequestTimeTooSkewed", "RequestExpired"},
    "access-denied": {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AllAccessDisabled",
        "Forbidden",
        "403",
    },
    "no-such-bucket": {"NoSuchBucket"},
    "no-such-key": {"NoSuchKey"},
    "wrong-region": {"PermanentRedirect", "AuthorizationHeaderMalformed", "301"},
    "instance-not-found": {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"},
}
_CLASS_OF = {code: name for name, codes in _CODES.items() for code in codes}

_HINTS = {
    "expired-token": "the session token has expired: refresh it (aws sso login, or new STS "
    "credentials) and run again",
    "invalid-key-id": "the access key id is not valid in this account: it was deleted, "
    "deactivated or mistyped (check AWS_ACCESS_KEY_ID / the profile's aws_access_key_id)",
    "signature-mismatch": "the secret access key does not match the access key id: check "
    "AWS_SECRET_ACCESS_KEY / the profile's aws_secret_access_key",
    "clock-skew": "the request's time is too far from AWS's: sync this machine's clock (NTP)",
    "access-denied": "the credentials are valid but not allowed to do this: grant the action in "
    "the IAM or bucket policy",
    "wrong-region": "the bucket is in another region: set region (--var region=...)",
    "no-such-bucket": "create the bucket or fix its name",
    "no-such-key": "the object is not there: check the key, or upload it",
}


class AwsParams(ProbeParams):
    """Where and as whom to call AWS; every AWS probe takes these."""

    profile: str | None = None
    """Named profile from ~/.aws/config; default: the standard credential chain (env vars,
    AWS_PROFILE, shared files, SSO, the instance role)."""
    region: str | None = None
    """Region to call; default: the profile's or AWS_REGION, else us-east-1."""
    endpoint_url: str | None = None
    """Another endpoint (LocalStack, MinIO, moto, a VPC endpoint), e.g. http://127.0.0.1:5000."""
    connect_timeout: float = Field(5.0, gt=0)
    """Seconds to wait for a connection to AWS."""
    read_timeout: float = Field(15.0, gt=0)
    """Seconds to wait for each answer."""
    attempts: int = Field(2, ge=1, le=10)
    """Tries per call, the first included; throttling and dropped connections are retried."""


@dataclass(frozen=True)
class Failure:
    """One AWS failure, read: our class, AWS's own code, and a sentence for a person."""

    error_code: str
    message: str
    aws_code: str | None = None
    http_status: int | None = None
    reached_aws: bool = True

    def facts(self) -> dict[str, Any]:
        found: dict[str, Any] = {"error_code": self.error_code, "error": self.message}
        if self.aws_code:
            found["aws_code"] = self.aws_code
        if self.http_status:
            found["http_status"] = self.http_status
        return found

    def raise_if_unreached(self, **facts: Any) -> None:
        """AWS never answered (no credentials, no route): the probe could not observe."""
        if not self.reached_aws:
            raise ProbeError(self.message, {**facts, **self.facts()})


def classify(exc: BaseException, params: AwsParams) -> Failure:
    """Read any exception from a botocore call into a Failure."""
    from botocore import exceptions as bx

    where = params.endpoint_url or f"AWS in {params.region or 'the default region'}"
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        ours = _CLASS_OF.get(code, "aws-error")
        said = error.get("Message") or _HTTP_TEXT.get(status or 0) or "no message"
        hint = _HINTS.get(ours)
        message = f"{code}: {said}" + (f" — {hint}" if hint else "")
        return Failure(ours, message, code, status)
    if isinstance(exc, bx.ProfileNotFound):
        message = (
            f"profile '{params.profile}' is not in ~/.aws/config or ~/.aws/credentials: "
            "create it (aws configure --profile NAME) or fix the profile name"
        )
        return Failure("profile-not-found", message, reached_aws=False)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        detail = (
            "incomplete AWS credentials"
            if isinstance(exc, bx.PartialCredentialsError)
            else ("no AWS credentials found")
        )
        message = (
            f"{detail} (looked at AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "~/.aws/credentials, ~/.aws/config and the instance role): run aws configure or "
            "export AWS_PROFILE"
        )
        return Failure("no-credentials", message, reached_aws=False)
    sso = (bx.SSOTokenLoadError, bx.UnauthorizedSSOTokenError, bx.TokenRetrievalError)
    if isinstance(exc, sso):
        message = f"the SSO session has expired or was never started: run aws sso login ({exc})"
        return Failure("expired-token", message, reached_aws=False)
    if isinstance(exc, bx.CredentialRetrievalError):
        return Failure("no-credentials", f"cannot get credentials: {exc}", reached_aws=False)
    unreachable = (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.HTTPClientError)
    if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
        message = (
            f"no answer from {where} within {params.connect_timeout:g}s/"
            f"{params.read_timeout:g}s: check the network, proxy and region"
        )
        return Failure("endpoint-unreachable", message, reached_aws=False)
    if isinstance(exc, unreachable):
        message = f"{exc} — check the network, proxy, region and endpoint_url"
        return Failure("endpoint-unreachable", message, reached_aws=False)
    if isinstance(exc, bx.NoRegionError):
        message = "no region configured: set region (--var region=us-east-1) or AWS_REGION"
        return Failure("no-region", message, reached_aws=False)
    raise exc


_HTTP_TEXT = {
    301: "the bucket is in another region",
    403: "Forbidden",
    404: "Not Found",
}


def session(params: AwsParams) -> Any:
    """A session on the probe's profile; no network until a client makes a call."""
    try:
        import aioboto3
    except ImportError:
        raise ProbeError(
            "AWS probes need aioboto3, which is not installed: pip install 'preflight-matrix[aws]'"
        ) from None
    return aioboto3.Session(profile_name=params.profile)


def region(params: AwsParams, on: Any) -> str:
    """The region calls go to: the param, else the profile's or AWS_REGION, else us-east-1."""
    return params.region or on.region_name or DEFAULT_REGION


@asynccontextmanager
async def client(service: str, params: AwsParams, on: Any = None) -> AsyncIterator[Any]:
    """A client of `service` with the probe's bounds, on session `on` (or a new one)."""
    on = on or session(params)  # first: without aioboto3 it says how to install it
    from aiobotocore.config import AioConfig

    config = AioConfig(
        connect_timeout=params.connect_timeout,
        read_timeout=params.read_timeout,
        retries={"total_max_attempts": params.attempts, "mode": "standard"},
    )
    async with on.client(
        service, region_name=region(params, on), endpoint_url=params.endpoint_url, config=config
    ) as made:
        yield made


async def credential_facts(on: Any) -> dict[str, Any]:
    """Which credentials the session signs with: their source and the key's last 4 characters
    (enough to tell two keys apart, useless to an attacker). None found is a Failure."""
    credentials = await on.get_credentials()
    if credentials is None:
        from botocore.exceptions import NoCredentialsError

        raise NoCredentialsError()
    frozen = await credentials.get_frozen_credentials()
    return {"credentials": credentials.method, "access_key": "…" + frozen.access_key[-4:]}
