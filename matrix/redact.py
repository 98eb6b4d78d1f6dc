"""Secret redaction: the one place that decides what of a text is a secret.

Every way out of the process passes text through it: the standard streams (`guard_streams`:
console, errors, explain, list, dry-run), report files (reporters.base.write_report), spans
(the OTel reporter) and the Results handed to listeners. A secret is a value read through
`{{ secret.NAME }}` or listed under `secrets:` (`remember`), in every form on the documented
list (matrix.secret_forms: encoded, escaped, split across lines, reversed, hex, base64), and
any well-known credential shape (AWS key ids and secrets, webhook URLs, bearer tokens,
private keys), declared or not.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, TextIO

from matrix import secret_forms
from matrix.secret_forms import MIN_SECRET_LENGTH

MASK = "***"
_MASK_BYTES = MASK.encode()

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


@lru_cache(maxsize=256)
def _forms(secret: str) -> Any:
    """The compiled RE2 pattern of every form of one secret (matrix.secret_forms), or None
    for a value too short to mask. A pattern a secret keeps each small enough for RE2's
    linear-time automaton; RE2 is imported only once a run has a secret."""
    if secret_forms.too_long(secret):
        return _as_is(secret)
    source = secret_forms.pattern(secret)
    if source is None:
        return None
    import re2

    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = 256 << 20  # the budget of its lazily built automaton, not an allocation
    try:
        return re2.compile(source.encode("utf-8", "surrogatepass"), options)
    except re2.error:  # a pattern RE2 cannot hold after all
        return _as_is(secret)


def _as_is(secret: str) -> re.Pattern[bytes]:
    """A secret found as is only, in linear time: `re`'s search for a literal skips ahead
    with its overlap table (case-sensitive; ignoring case, it would compare at every
    position)."""
    return re.compile(re.escape(secret.encode("utf-8", "surrogatepass")))


def _mask_forms(pattern: Any, raw: bytes) -> bytes:
    parts, last = [], 0
    for found in pattern.finditer(raw):
        start, end = found.span()
        parts += [raw[last:start], _MASK_BYTES]
        last = end
    return b"".join([*parts, raw[last:]]) if parts else raw


class Redactor:
    """Masks the remembered secrets, plus `values`, in strings and nested data."""

    def __init__(self, values: Iterable[str] = ()):
        self._values = frozenset(v for v in values if len(v) >= MIN_SECRET_LENGTH)

    def text(self, value: str) -> str:
        secrets = self._values | _REMEMBERED
        if secrets:
            raw = value.encode("utf-8", "surrogatepass")
            for secret in sorted(secrets, key=len, reverse=True):  # one holding another: whole
                if (forms := _forms(secret)) is not None:
                    raw = _mask_forms(forms, raw)
            value = raw.decode("utf-8", "surrogatepass")
        folded = value.casefold()  # full case folding: finds all that IGNORECASE would match
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


# What a CI system's log reader obeys: GitHub's `::command::` at a line's start (after
# blanks; its runner ends a line at \r too), its older `##[command]`, Azure's `##vso[…]` and
# TeamCity's `##teamcity[…]` anywhere in a line.
_CI_COMMAND = re.compile(r"(?:\A|(?<=[\r\n]))([^\S\r\n]*:)(?=:)|(#)(?=#(?:vso|teamcity)?\[)")
ZERO_WIDTH = "\u200b"


def inert(text: str) -> str:
    """The text with no line a CI log would take as a command: a zero-width space goes
    inside each command's opening (`:​:error`, `#​#vso[`), which reads the same to a person."""
    if "::" not in text and "##" not in text:
        return text
    return _CI_COMMAND.sub(lambda found: (found[1] or found[2]) + ZERO_WIDTH, text)


class GuardedStream(io.TextIOBase):
    """A text stream that masks secrets before they reach the one it wraps, and keeps any
    line of it from acting on a CI log (`inert`): probe output printed by matrix can neither
    leak a secret nor raise an annotation, set a variable or stop a runner's commands. Whole
    lines are handled at once (a secret printed in two writes is still one line); the rest
    waits for the next newline or flush. Text the stream cannot encode (a lone surrogate from
    a file name) is written with replacement characters rather than ending the run."""

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
        text = inert(redact.text(text))
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
