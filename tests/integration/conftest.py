"""Fixtures for integration tests that need a real AWS-like endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from moto_server import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    pytest.importorskip("aioboto3", reason="AWS probe tests need the aws extra")
    server = MotoServer()
    yield server
    server.close()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A fresh moto (no buckets, IAM checks off); this process signs as the test key, with
    no trace of the developer's own AWS settings."""
    moto_server.reset()
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in moto_server.credentials().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return moto_server
