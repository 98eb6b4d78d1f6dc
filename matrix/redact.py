"""Secret redaction: the one place that decides what of a text is a secret.

Every way out of the process passes text through it: the standard streams (`guard_streams`:
console, errors, explain, list, dry-run), report files (reporters.base.write_report), spans
(the OTel reporter) and the Results handed to listeners. A secret is a value read through
`{{ secret.NAME }}` or listed under `secrets:` (`remember`), in any common encoding of it
(JSON-escaped, URL-encoded, base64 at every alignment, any letter case), and any well-known
credential shape (AWS key ids and secrets, webhook URLs, bearer tokens, private keys), declared
or not.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import io
import json
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
_MIN_BASE64 = 6  # a shorter run of base64 says too little of the secret to be worth masking

# Each credential shape with the literals one of its matches must contain (lower-cased): a
# text holding none of them is not searched, which keeps a big report's redaction cheap.
SHAPES: list[tuple[tuple[str, ...], re.Pattern[str]]] = [
    (
        ("akia", "asia", "agpa", "aida", "aroa", "anpa"),
        re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b"),
    ),
    (
        ("secret_access_key", "session_token"),
        re.compile(
            r"(?i)(aws_secret_access_key|aws_session_token|secret_access_key)(\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{20,}"
        ),
    ),
    (("hooks.slack.com",), re.compile(r"https://hooks\.slack\.com/[A-Za-z0-9/_-]+")),
    (
        ("/api/webhooks/",),
        re.compile(r"https://(?:discord(?:app)?\.com)/api/webhooks/[A-Za-z0-9/_-]+"),
    ),
    (
        ("webhook.office.com",),
        re.compile(r"https://[A-Za-z0-9.-]*webhook\.office\.com/[A-Za-z0-9/@_-]+"),
    ),
    (("bearer", "token"), re.compile(r"(?i)\b(bearer|token)(\s+)[A-Za-z0-9._~+/=-]{16,}")),
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    # a private key, to its END line or, cut short, to the end of its base64 (escaped newlines
    # of a JSON copy included)
    (
        ("private key-----",),
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
            r"(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|(?:[A-Za-z0-9+/=\s]|\\[nr])*)"
        ),
    ),
]

_REMEMBERED: set[str] = set()


def remember(value: str) -> None:
    """Mask `value` in everything this process writes from now on: called wherever a secret is
    read (a `{{ secret.NAME }}` rendered, a `secrets:` value planned), so a secret that only a
    spec problem or a rendered param quotes is masked too."""
    if len(value) >= MIN_SECRET_LENGTH:
        _REMEMBERED.add(value)


def encodings(secret: str) -> set[str]:
    """The forms a secret takes in output: as is, JSON-escaped, URL-encoded, and base64 (plain
    and URL-safe) at each of the three alignments it can have inside a longer encoded text —
    only the characters that depend on the secret alone, as CI systems mask them."""
    forms = {secret, json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    raw = secret.encode("utf-8", "surrogatepass")
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        end = (offset + len(raw)) * 8 // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            part = encode(b"\0" * offset + raw).decode()[skip:end]
            if len(part) >= _MIN_BASE64:
                forms.add(part)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


@lru_cache(maxsize=64)
def _pattern(values: frozenset[str]) -> tuple[frozenset[str], re.Pattern[str]] | None:
    """One case-insensitive alternation of every form of every value, longest first, so a
    secret that contains another is masked whole; with the forms case-folded, to look for
    before searching."""
    forms = sorted({form for value in values for form in encodings(value)}, key=len, reverse=True)
    if not forms:
        return None
    pattern = re.compile("|".join(map(re.escape, forms)), re.IGNORECASE)
    return frozenset(form.casefold() for form in forms), pattern


class Redactor:
    """Masks the remembered secrets, plus `values`, in strings and nested data."""

    def __init__(self, values: Iterable[str] = ()):
        self._values = frozenset(v for v in values if len(v) >= MIN_SECRET_LENGTH)

    def text(self, value: str) -> str:
        folded = value.casefold()  # full case folding: finds all that IGNORECASE would match
        secrets = _pattern(self._values | _REMEMBERED)
        if secrets is not None and any(form in folded for form in secrets[0]):
            value = secrets[1].sub(MASK, value)
        for needles, shape in SHAPES:
            if any(needle in folded for needle in needles):
                value = shape.sub(_mask_match, value)
        return value

    def __call__(self, value: Any) -> Any:
        """Strings, dict keys and values, lists and dataclasses, to any depth; enums and
        numbers pass."""
        if isinstance(value, enum.Enum):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: self(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return dataclasses.replace(value, **changes)
        return value


redact = Redactor()
"""What every sink calls: the remembered secrets and the credential shapes."""


def _mask_match(found: re.Match[str]) -> str:
    """Keep a labelled prefix (`Bearer `, `aws_secret_access_key=`) so output stays readable."""
    if found.lastindex and found.lastindex >= 2:
        return found[1] + found[2] + MASK
    return MASK


class GuardedStream(io.TextIOBase):
    """A text stream that masks secrets before they reach the one it wraps. Whole lines are
    masked at once (a secret printed in two writes is still one line); the rest waits for the
    next newline or flush. Text the stream cannot encode (a lone surrogate from a file name)
    is written with replacement characters rather than ending the run."""

    def __init__(self, inner: TextIO):
        self.inner = inner
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        done, newline, rest = self._pending.rpartition("\n")
        if newline:
            self._pending = rest
            self._emit(done + newline)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self._emit(text)
        self.inner.flush()

    def _emit(self, text: str) -> None:
        text = redact.text(text)
        try:
            self.inner.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.inner, "encoding", None) or "utf-8"
            self.inner.write(text.encode(encoding, "replace").decode(encoding))

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True


def guard_streams() -> None:
    """Route sys.stdout and sys.stderr through redaction (once; the CLI calls it first)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, GuardedStream):
            setattr(sys, name, GuardedStream(stream))
