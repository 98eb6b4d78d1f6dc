"""A real Prometheus server (Debian's `prometheus`) on loopback for the tests: scraping the
targets it is given every second, evaluating its rule file every second, and its HTTP API."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from required import unavailable
from sshd import free_ports


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def until(probe: Callable[[], Any], seconds: float = 30) -> Any:
    """Poll `probe` until it returns something true; that value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s: {probe.__doc__ or probe}")


def binary(name: str = "prometheus") -> str:
    """Prometheus's `prometheus` or `promtool`; skips (fails in CI) where it is missing."""
    found = shutil.which(name)
    if found is None:
        unavailable(
            f"{name} not found: these tests run Prometheus's own server and tools "
            "(apt-get install prometheus)",
            "MATRIX_REQUIRE_PROMETHEUS",
        )
    return found


@contextlib.contextmanager
def prometheus(root: Path, jobs: dict[str, str], rules: str = "") -> Iterator[str]:
    """A Prometheus scraping each `jobs` name → host:port, with `rules` as its rule file;
    its base URL. Stopped on exit."""
    program = binary()
    port = free_ports(1)[0]
    config = root / "prometheus.yml"
    scrapes = "".join(
        f"  - job_name: {name}\n    static_configs: [{{targets: ['{target}']}}]\n"
        for name, target in jobs.items()
    )
    (root / "rules.yml").write_text(rules or "groups: []\n")
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{root / 'rules.yml'}']\nscrape_configs:\n{scrapes}"
    )
    server = subprocess.Popen(
        [program, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def query(base: str, expression: str) -> list[dict]:
    """The result of an instant query; [] while the server is not up yet."""
    url = f"{base}/api/v1/query?query={urllib.parse.quote(expression)}"
    with contextlib.suppress(OSError):
        code, body = get(url)
        if code == 200:
            return json.loads(body)["data"]["result"]
    return []


def rule_health(base: str, alert: str) -> str | None:
    """An alerting rule's health (ok, err, unknown); None while the server is not up yet."""
    with contextlib.suppress(OSError, ValueError):
        code, body = get(f"{base}/api/v1/rules?type=alert")
        if code == 200:
            for group in json.loads(body)["data"]["groups"]:
                for rule in group["rules"]:
                    if rule["name"] == alert:
                        return rule.get("health")
    return None
