"""Secret redaction for everything that leaves the process.

Values named in the spec's `secrets` are replaced wherever they occur; well-known credential
shapes (AWS key ids and secrets, webhook URLs, bearer tokens, private keys) are replaced even
when nobody declared them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words

SHAPES = [
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b"),
    re.compile(
        r"(?i)(aws_secret_access_key|aws_session_token|secret_access_key)(\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{20,}"
    ),
    re.compile(r"https://hooks\.slack\.com/[A-Za-z0-9/_-]+"),
    re.compile(r"https://(?:discord(?:app)?\.com)/api/webhooks/[A-Za-z0-9/_-]+"),
    re.compile(r"https://[A-Za-z0-9.-]*webhook\.office\.com/[A-Za-z0-9/@_-]+"),
    re.compile(r"(?i)\b(bearer|token)(\s+)[A-Za-z0-9._~+/=-]{16,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
]


_REMEMBERED: set[str] = set()


def remember(value: str) -> None:
    """Mask `value` in everything this process writes from now on: called wherever a secret is
    read (a `{{ secret.NAME }}` rendered, a `secrets:` value planned), so a secret that only a
    spec problem or a rendered param quotes is masked too."""
    if len(value) >= MIN_SECRET_LENGTH:
        _REMEMBERED.add(value)


class Redactor:
    """Callable that masks secrets in strings and in nested JSON-able data."""

    def __init__(self, names: Iterable[str] = (), environ: Mapping[str, str] | None = None):
        environ = environ or {}
        values = {environ[n] for n in names if len(environ.get(n, "")) >= MIN_SECRET_LENGTH}
        self._values = sorted(values, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._values:
            value = value.replace(secret, MASK)
        for shape in SHAPES:
            value = shape.sub(_mask_match, value)
        return value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def _mask_match(found: re.Match[str]) -> str:
    """Keep a labelled prefix (`Bearer `, `aws_secret_access_key=`) so output stays readable."""
    if found.lastindex and found.lastindex >= 2:
        return found[1] + found[2] + MASK
    return MASK
