"""A real S3/STS/EC2/IAM HTTP endpoint for tests: moto's server, in its own process, on loopback.

Probes reach it the way they reach AWS, through aioboto3 with `endpoint_url`; the tests set it
up with plain boto3 against the same URL. `iam_auth()` turns on moto's IAM checks, so a wrong
key, a wrong secret or a missing permission gets AWS's real error codes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

REGION = "us-east-1"
# moto accepts any key until IAM checks are on; these never leave loopback.
KEY_ID, SECRET = "AKIDTESTTESTTESTTEST", "test-secret-not-real"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_aws_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AWS settings, plus `extra`: tests never pick up
    a developer's real credentials, and the SDK never asks the (absent) instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    env.update(extra or {})
    return env


class MotoServer:
    """`moto_server` on 127.0.0.1; `url` is its endpoint."""

    def __init__(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_aws_env(),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def credentials(self, key_id: str = KEY_ID, secret: str = SECRET) -> dict[str, str]:
        """Environment for a process that should call this server as the given key."""
        return clean_aws_env(
            {
                "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": REGION,
            }
        )

    def boto3(self, service: str, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
        """A plain boto3 client for setting the scene."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def instance(self, name: str = "training-gpu", *, stopped: bool = False) -> str:
        """Launch a g5.2xlarge tagged Name=name (stopped if asked); returns its id."""
        ec2 = self.boto3("ec2")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}]
        made = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="g5.2xlarge", TagSpecifications=tags
        )
        instance_id = made["Instances"][0]["InstanceId"]
        if stopped:
            ec2.stop_instances(InstanceIds=[instance_id])
        return instance_id

    def _post(self, path: str, body: bytes = b"") -> None:
        headers = {"Content-Type": "text/plain"}  # form-encoded would hide the body from moto
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        urllib.request.urlopen(request, timeout=10).close()

    def reset(self) -> None:
        """Forget every bucket, instance and user; IAM checks off."""
        self._post("/moto-api/reset-auth", b"inf")
        self._post("/moto-api/reset")

    @contextlib.contextmanager
    def iam_auth(self) -> Iterator[None]:
        """From here on every request is signed-checked and authorised against IAM."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def user(self, name: str, actions: list[str], resource: str = "*") -> tuple[str, str]:
        """An IAM user allowed `actions` on `resource`; returns its (key id, secret)."""
        import json

        iam = self.boto3("iam")
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}],
        }
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
