"""The forms a secret can take in output: the documented list (docs/spec.md, "Secrets and
redaction"), written as one RE2 pattern.

A secret reaches output as a *derived string* — itself, reversed, its hex, its base64 — and
each character of that string may be *written* in any of the escapes output uses (percent,
JSON/C, HTML/XML, fullwidth) and in any letter case, with any run of *separators*
(whitespace, escaped line breaks, `<br>`, terminal colour codes, zero-width characters)
between two characters: a secret split across lines, folded or spaced out is one match. RE2,
not `re`: the alternation runs in one linear pass whatever the text, where a backtracking
engine costs seconds on a big report.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
FULLY_ESCAPED = 256  # a longer secret (a key file): each character as is, %-encoded or \-escaped
MAX_FORMED, MAX_WORDS = 64 * 1024, 1024  # past either, RE2 cannot hold a secret's forms
_MIN_BASE64 = 6  # a shorter run of base64 says too little of the secret to be worth masking

_AMP = "&(?:amp;)?"  # a character reference, also once more XML-escaped (`&amp;#83;`)
_BACKSLASHES = r"\\+"  # an escape, also escaped again (a JSON report quoting `\u0053`)
_SEPARATORS = [
    r"[\s\x0b\x{85}\x{a0}\x{ad}\x{1680}\x{2000}-\x{200f}\x{2028}-\x{202f}"
    r"\x{205f}-\x{2064}\x{3000}\x{feff}]",  # whitespace, zero-width and soft hyphen
    _BACKSLASHES + "[nrt]",
    "%(?:25)?(?:0[9ad]|20)",
    _AMP + r"#(?:0*(?:9|10|13|32)|x0*(?:9|a|d|20));?",
    r"<br\s*/?>",
    r"\x1b\[[0-9;?]*[a-z]",  # a terminal colour or cursor code
]


def _gap(*more: str) -> str:
    """Any run of separators (and of `more`) between two characters of a form."""
    return "(?:" + "|".join([*_SEPARATORS, *more]) + ")*"


def too_long(secret: str) -> bool:
    """Whether a secret is past what its forms' pattern can hold: it is looked for as is."""
    return len(secret) > MAX_FORMED or len(secret.split()) > MAX_WORDS


def pattern(secret: str) -> str | None:
    """The RE2 pattern (matched ignoring case) of every form of one secret; None when it is
    too short to mask. (Of two secrets, one inside the other, the Redactor masks the longer
    first.)"""
    if len("".join(secret.split())) < MIN_SECRET_LENGTH:
        return None
    full = len(secret) <= FULLY_ESCAPED
    character, gap = (_character, _gap()) if full else (_plain, "")
    branches = [_written(form, character, gap) for form in (secret, secret[::-1])]
    branches += [_written(part, _plain, gap) for part in _base64(secret)]
    return "|".join([*branches, _hex(secret, gap and _gap("[:,.-]", "0x"))])


def _base64(secret: str) -> set[str]:
    """Base64 (plain and URL-safe) at each of the three alignments the secret can have inside
    a longer encoded text: only the characters that depend on the secret alone, as CI systems
    mask them."""
    raw = secret.encode("utf-8", "surrogatepass")
    parts = set()
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        end = (offset + len(raw)) * 8 // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            part = encode(b"\0" * offset + raw).decode()[skip:end]
            if len(part) >= _MIN_BASE64:
                parts.add(part)
    return parts


def _written(form: str, character: Callable[[str], str], gap: str) -> str:
    """Each character as `character` writes it, `gap` between them; whitespace in the secret
    itself is any run of separators, also escaped (`\u0020`) or written as `quote_plus` does
    (`+`): a key file's lines are found however output breaks them."""
    spaces = _gap(r"\+", *(character(c) for c in " \t\n"))
    return spaces.join(gap.join(map(character, word)) for word in form.split())


def _hex(secret: str, gap: str) -> str:
    """The hex of the secret's UTF-8 bytes, `gap` between bytes (for a secret of up to
    FULLY_ESCAPED characters, any separators, `0x` and `:`, `,`, `-` or `.`: `xxd`, `od -x`,
    C arrays, openssl)."""
    raw = secret.encode("utf-8", "surrogatepass")
    return gap.join(f"{byte:02x}" for byte in raw)


def _character(c: str) -> str:
    """Every way output writes one character (the pattern is matched ignoring case)."""
    from html.entities import codepoint2name

    point = ord(c)
    raw = c.encode("utf-8", "surrogatepass")
    utf16 = [point] if point < 0x10000 else [0xD800 + (point - 0x10000) // 0x400]
    if point >= 0x10000:
        utf16.append(0xDC00 + (point - 0x10000) % 0x400)
    ways = [
        *_as_urls_write(c),
        "".join(f"={byte:02x}" for byte in raw),  # quoted-printable
        "".join(f"{_BACKSLASHES}x{byte:02x}" for byte in raw),  # C, Python bytes
        "".join(f"{_BACKSLASHES}0?{byte:03o}" for byte in raw),  # octal: printf, od -b
        "".join(f"{_BACKSLASHES}u{unit:04x}" for unit in utf16),  # JSON, JavaScript, Java
        f"{_BACKSLASHES}U{point:08x}",  # Python, C
        f"{_BACKSLASHES}u\\{{0*{point:x}\\}}",  # JavaScript, Rust, Perl: \u{1f600}
        f"%u{point:04x}",  # JavaScript's escape()
        f"{_AMP}#0*{point};?",  # HTML and XML character references
        f"{_AMP}#x0*{point:x};?",
    ]
    if point in codepoint2name or c == "'":
        ways.append(f"{_AMP}{codepoint2name.get(point, 'apos')};")
    if 0x21 <= point <= 0x7E:
        ways.append(_literal(chr(point - 0x21 + 0xFF01)))  # fullwidth
    return "(?:" + "|".join(ways) + ")"


def _plain(c: str) -> str:
    """A character of base64 (or of a long secret): as is, or a punctuation mark or non-ASCII
    character percent-encoded or backslash-escaped, as a URL, a JSON document or Markdown
    carries it."""
    if c.isascii() and c.isalnum():
        return c
    return "(?:" + "|".join(_as_urls_write(c)) + ")"


def _as_urls_write(c: str) -> list[str]:
    """A character as is (a lone surrogate has no UTF-8 to match so), percent-encoded once
    or twice, and a punctuation mark backslash-escaped (JSON, shell and Markdown escapes)."""
    ways = ["".join(f"%(?:25)?{byte:02x}" for byte in c.encode("utf-8", "surrogatepass"))]
    if not 0xD800 <= ord(c) <= 0xDFFF:
        ways.insert(0, _literal(c))
    if c.isascii() and c.isprintable() and not c.isalnum():
        ways.append(_BACKSLASHES + _literal(c))
    return ways


def _literal(c: str) -> str:
    """One character as an RE2 literal: `\\x{…}` for anything not a letter or digit, so no
    character can change the pattern's meaning."""
    if c.isascii() and c.isalnum():
        return c
    return f"\\x{{{ord(c):x}}}"
