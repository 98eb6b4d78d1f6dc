"""`aws.identity`, `aws.s3`, `aws.ec2`: the pipeline's AWS prerequisites, asked of AWS itself.

They run on the controller (where matrix runs and its credentials live). An answer from AWS —
denied, not found, a bad key — is a fact with an `error_code` and the check fails; no answer
at all — no credentials, no route — is an error with the same facts. Either way the
diagnostic's `{{ error }}` says what is wrong and what to do.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import Field, model_validator

from matrix.probe import ProbeContext, probe
from probes import awsapi
from probes.awsapi import AwsParams

_FAILURE_FACTS = {
    "error_code": "why it failed: no-credentials, profile-not-found, expired-token, "
    "invalid-key-id, signature-mismatch, clock-skew, access-denied, endpoint-unreachable, "
    "no-region, no-such-bucket, wrong-region, instance-not-found or aws-error",
    "error": "what went wrong and what to do, in words",
    "aws_code": "AWS's own error code, e.g. InvalidClientTokenId",
    "http_status": "HTTP status of AWS's answer",
}


@probe(
    "aws.identity",
    runs_on="controller",
    default_expect={"ok": True},
    facts={
        "ok": "AWS accepted the credentials",
        "account": "account id",
        "arn": "ARN of the caller (user or assumed role)",
        "user_id": "unique id of the caller",
        "credentials": "where the credentials came from: env, shared-credentials-file, "
        "iam-role, sso, assume-role…",
        "access_key": "the access key's last 4 characters, e.g. …WXYZ",
        "region": "region the call went to",
        "latency_ms": "milliseconds for the STS call",
        **_FAILURE_FACTS,
    },
)
class Identity(AwsParams):
    """Who AWS says the credentials belong to (STS GetCallerIdentity, which no policy can
    deny): catches missing, expired, mistyped and mismatched credentials."""

    account: str | None = None
    """Account id the credentials must belong to (a prod key on a dev run is a failure)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        try:
            session = awsapi.session(self)
            facts["region"] = awsapi.region(self, session)
            facts.update(await awsapi.credential_facts(session))
            started = time.perf_counter()
            async with awsapi.client("sts", self, session) as sts:
                found = await sts.get_caller_identity()
        except Exception as exc:
            failure = awsapi.classify(exc, self)
            failure.raise_if_unreached(ok=False, **facts)
            return {**facts, "ok": False, **failure.facts()}
        facts.update(
            ok=True,
            account=found["Account"],
            arn=found["Arn"],
            user_id=found["UserId"],
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if self.account and found["Account"] != self.account:
            facts.update(
                ok=False,
                error_code="wrong-account",
                error=f"the credentials belong to account {found['Account']}, expected "
                f"{self.account}: switch profile (AWS_PROFILE) or credentials",
            )
        return facts


@probe(
    "aws.s3",
    runs_on="controller",
    default_expect={"ok": True},
    facts={
        "ok": "every step of the mode succeeded",
        "bucket": "bucket as given",
        "prefix": "prefix as given",
        "mode": "read, write or count",
        "accessible": "read: ListObjectsV2 succeeded",
        "region": "read: the bucket's region",
        "objects": "read: objects under the prefix, counted up to max_keys",
        "bytes": "read: their total size",
        "truncated": "read: more objects than max_keys (objects is a lower bound); count: "
        "the prefixes whose listing stopped at max_keys",
        "first_keys": "read: the first 10 keys",
        "object_readable": "read: GetObject on the first key succeeded (null when empty)",
        "key": "write: the marker object's key",
        "written": "write: PutObject succeeded",
        "read_back": "write: GetObject returned what was written",
        "deleted": "write: DeleteObject succeeded",
        "marker_left": "write: the marker is still in the bucket",
        "step": "the step that failed: list, get, put, read_back, delete",
        "counts": "count: matching objects per prefix",
        "empty": "count: prefixes with no matching object",
        "nonempty": "count: how many prefixes have at least one",
        "total": "count: matching objects over all prefixes",
        "problem": "count: e.g. Source federal/ has 0 files",
        **_FAILURE_FACTS,
    },
)
class S3(AwsParams):
    """A bucket the pipeline reads (`read`), writes (`write`) or expects data in (`count`),
    with listings bounded by `max_keys` so a huge bucket is never walked in full."""

    bucket: str
    """Bucket name (an s3://bucket/prefix URL also works and sets prefix)."""
    mode: Literal["read", "write", "count"] = "read"
    """read: a bounded list + a 1-byte get of the first object; write: put a marker, read it back,
    delete it; count: objects under each of `prefixes`."""
    prefix: str = ""
    """Key prefix to list (read) or to put the marker under (write)."""
    prefixes: list[str] = Field(default_factory=list)
    """count: the prefixes (folders) that must each hold data, e.g. [federal/, state/]."""
    suffix: str | None = None
    """count: only keys ending like this (case-insensitive), e.g. .pdf."""
    max_keys: int = Field(1000, ge=1, le=1_000_000)
    """Most keys listed per prefix; one request lists up to 1000."""
    content: str = "matrix pre-flight write test\n"
    """write: the marker's content."""
    delete: bool = True
    """write: delete the marker afterwards (false keeps a fixed-name marker, for credentials
    without s3:DeleteObject)."""

    @model_validator(mode="before")
    @classmethod
    def _split_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and str(data.get("bucket", "")).startswith("s3://"):
            bucket, _, prefix = data["bucket"][5:].partition("/")
            data = {**data, "bucket": bucket, "prefix": data.get("prefix") or prefix}
        return data

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts: dict[str, Any] = {"bucket": self.bucket, "prefix": self.prefix, "mode": self.mode}
        step = {"read": self._read, "write": self._write, "count": self._count}[self.mode]
        try:
            async with awsapi.client("s3", self) as s3:
                await step(s3, facts)
        except Exception as exc:
            failure = awsapi.classify(exc, self)
            failure.raise_if_unreached(ok=False, **facts)
            facts.update(ok=False, **failure.facts())
            facts["error"] = self._where(facts) + facts["error"]
            if self.mode == "write":
                facts["marker_left"] = facts.get("written", False) and not facts.get("deleted")
        return facts

    def _where(self, facts: dict[str, Any]) -> str:
        action = {
            "list": "ListObjectsV2",
            "get": "GetObject",
            "put": "PutObject",
            "read_back": "GetObject",
            "delete": "DeleteObject",
        }.get(facts.get("step", ""), "S3")
        target = facts.get("key") or f"{self.bucket}/{self.prefix}"
        return f"{action} on s3://{target} failed: "

    async def _list(self, s3: Any, prefix: str) -> tuple[list[dict[str, Any]], bool]:
        """Up to max_keys objects under prefix, and whether there were more."""
        found: list[dict[str, Any]] = []
        args = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = await s3.list_objects_v2(**args, MaxKeys=min(1000, self.max_keys - len(found)))
            found += page.get("Contents", [])
            more = bool(page.get("IsTruncated"))
            if not more or len(found) >= self.max_keys:
                return found, more
            args["ContinuationToken"] = page["NextContinuationToken"]

    async def _read(self, s3: Any, facts: dict[str, Any]) -> None:
        # List first: unlike HeadBucket's bodiless 403/404, its errors say what is wrong.
        facts.update(accessible=False, step="list")
        listed, more = await self._list(s3, self.prefix)
        facts.update(
            accessible=True,
            region=await _bucket_region(s3, self.bucket),
            objects=len(listed),
            bytes=sum(o.get("Size", 0) for o in listed),
            truncated=more,
            first_keys=[o["Key"] for o in listed[:10]],
            object_readable=None,
        )
        if listed:
            facts.update(object_readable=False, step="get")
            got = await s3.get_object(Bucket=self.bucket, Key=listed[0]["Key"], Range="bytes=0-0")
            async with got["Body"] as body:
                await body.read()
            facts["object_readable"] = True
        del facts["step"]
        facts["ok"] = True

    async def _write(self, s3: Any, facts: dict[str, Any]) -> None:
        name = (
            f"matrix-preflight-{uuid.uuid4().hex[:12]}.txt"
            if self.delete
            else ("matrix-preflight.txt")
        )
        key = self.prefix + ("/" if self.prefix and not self.prefix.endswith("/") else "") + name
        body = self.content.encode()
        facts.update(key=f"{self.bucket}/{key}", written=False, read_back=False, deleted=False)
        facts["step"] = "put"
        await s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        facts.update(written=True, step="read_back")
        got = await s3.get_object(Bucket=self.bucket, Key=key)
        async with got["Body"] as stream:
            facts["read_back"] = await stream.read() == body
        if self.delete:
            facts["step"] = "delete"
            await s3.delete_object(Bucket=self.bucket, Key=key)
            facts["deleted"] = True
        facts["marker_left"] = not facts["deleted"]
        del facts["step"]
        facts["ok"] = facts["read_back"]
        if not facts["read_back"]:
            facts.update(step="read_back", error="the marker read back differs from what was put")

    async def _count(self, s3: Any, facts: dict[str, Any]) -> None:
        prefixes = self.prefixes or [self.prefix]
        counts: dict[str, int] = {}
        truncated = []
        facts["step"] = "list"
        for prefix in prefixes:
            listed, more = await self._list(s3, prefix)
            keys = [o["Key"] for o in listed]
            if self.suffix:
                keys = [k for k in keys if k.lower().endswith(self.suffix.lower())]
            counts[prefix] = len(keys)
            if more:
                truncated.append(prefix)
        del facts["step"]
        empty = [p for p, n in counts.items() if n == 0]
        what = f"{self.suffix} files" if self.suffix else "files"
        facts.update(
            counts=counts,
            empty=empty,
            nonempty=len(prefixes) - len(empty),
            total=sum(counts.values()),
            truncated=truncated,
            ok=not empty,
        )
        if empty:
            facts["problem"] = "; ".join(f"Source {p or '/'} has 0 {what}" for p in empty)


async def _bucket_region(s3: Any, bucket: str) -> str | None:
    """HeadBucket's x-amz-bucket-region header, which S3 sends even with a 403."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = await s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        answer = exc.response
    except BotoCoreError:
        return None
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return answer.get("BucketRegion") or headers.get("x-amz-bucket-region")


@probe(
    "aws.ec2",
    runs_on="controller",
    default_expect={"found": True},
    facts={
        "found": "the instance exists (terminated ones count as not found)",
        "region": "region searched",
        "instance_id": "its id",
        "state": "pending, running, stopping, stopped, shutting-down",
        "running": "state is running",
        "type": "instance type, e.g. g5.2xlarge",
        "az": "availability zone",
        "public_ip": "public IPv4 address, when it has one",
        "private_ip": "private IPv4 address",
        "name": "its Name tag",
        "launch_time": "when it was launched (ISO 8601)",
        "system_status": "EC2 system status check: ok, impaired, initializing, "
        "insufficient-data or not-applicable",
        "instance_status": "EC2 instance status check, same values",
        "status_ok": "both status checks are ok",
        "matches": "instances matching the tags (the first running, else newest, is reported)",
        "problem": "e.g. Instance i-0abc not found / Instance i-0abc in state stopped",
        **_FAILURE_FACTS,
    },
)
class Ec2(AwsParams):
    """The training instance, by id or by tags: does it exist, is it running, do its status
    checks pass, and where do we reach it."""

    instance_id: str | None = None
    """Instance id, e.g. i-0abc123."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Find it by tags instead, e.g. {Name: training-gpu}."""

    @model_validator(mode="after")
    def _one_way(self) -> Ec2:
        if bool(self.instance_id) == bool(self.tags):
            raise ValueError("give exactly one of instance_id or tags")
        return self

    @property
    def _wanted(self) -> str:
        if self.instance_id:
            return f"Instance {self.instance_id}"
        return "No instance tagged " + ", ".join(f"{k}={v}" for k, v in self.tags.items())

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts: dict[str, Any] = {"found": False}
        try:
            session = awsapi.session(self)
            facts["region"] = awsapi.region(self, session)
            async with awsapi.client("ec2", self, session) as ec2:
                instances = await self._find(ec2)
                if instances:
                    facts.update(_describe(instances[0]), matches=len(instances))
                    facts.update(await self._status(ec2, facts["instance_id"]))
        except Exception as exc:
            failure = awsapi.classify(exc, self)
            failure.raise_if_unreached(**facts)
            if failure.error_code != "instance-not-found":
                return {**facts, **failure.facts()}
        if not facts["found"]:
            suffix = " not found" if self.instance_id else " found"
            facts["problem"] = f"{self._wanted}{suffix} in {facts['region']}"
        elif not facts["running"]:
            facts["problem"] = f"Instance {facts['instance_id']} in state {facts['state']}"
        elif facts["status_ok"] is False:
            facts["problem"] = (
                f"Instance {facts['instance_id']} status checks: system "
                f"{facts['system_status']}, instance {facts['instance_status']}"
            )
        return facts

    async def _find(self, ec2: Any) -> list[dict[str, Any]]:
        if self.instance_id:
            answer = await ec2.describe_instances(InstanceIds=[self.instance_id])
        else:
            filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
            answer = await ec2.describe_instances(Filters=filters)
        found = [
            i
            for r in answer.get("Reservations", [])
            for i in r.get("Instances", [])
            if i.get("State", {}).get("Name") != "terminated"
        ]
        found.sort(key=lambda i: str(i.get("LaunchTime", "")), reverse=True)
        found.sort(key=lambda i: i.get("State", {}).get("Name") != "running")
        return found

    async def _status(self, ec2: Any, instance_id: str) -> dict[str, Any]:
        answer = await ec2.describe_instance_status(
            InstanceIds=[instance_id], IncludeAllInstances=True
        )
        statuses = answer.get("InstanceStatuses") or [{}]
        system = statuses[0].get("SystemStatus", {}).get("Status", "not-applicable")
        instance = statuses[0].get("InstanceStatus", {}).get("Status", "not-applicable")
        return {
            "system_status": system,
            "instance_status": instance,
            "status_ok": system == "ok" and instance == "ok",
        }


def _describe(instance: dict[str, Any]) -> dict[str, Any]:
    state = instance.get("State", {}).get("Name")
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    launched = instance.get("LaunchTime")
    return {
        "found": True,
        "instance_id": instance["InstanceId"],
        "state": state,
        "running": state == "running",
        "type": instance.get("InstanceType"),
        "az": instance.get("Placement", {}).get("AvailabilityZone"),
        "public_ip": instance.get("PublicIpAddress"),
        "private_ip": instance.get("PrivateIpAddress"),
        "name": tags.get("Name"),
        "launch_time": launched.isoformat() if hasattr(launched, "isoformat") else launched,
    }
