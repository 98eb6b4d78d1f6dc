"""Every form on the documented list (docs/spec.md, "Secrets and redaction") is masked, for any
secret: each derived string (as is, reversed, hex, base64 at every alignment), each character
written in any escape output uses, split by any separators, inside any text — in the
redactor itself and then in every report file, the console and a Slurm drain reason. (Spans,
sent and written, are held by tests/integration/test_secrets.py with a real OTLP receiver.)"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import random
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from matrix import redact as redact_module
from matrix.commands.nodes import reason
from matrix.redact import MASK, GuardedStream, Redactor
from matrix.results import PhaseInfo, Result, Run, Status
from reporters.console import ConsoleReporter
from reporters.json_report import JsonReporter
from reporters.junit import JunitReporter
from reporters.markdown import MarkdownReporter
from reporters.prometheus import PrometheusReporter


def _utf8(c: str) -> bytes:
    return c.encode("utf-8", "surrogatepass")


def _units(c: str) -> list[int]:
    return list(c.encode("utf-16-be", "surrogatepass").hex(" ", 2).split())


def _case(c: str) -> str:
    swapped = c.swapcase()
    return swapped if len(swapped) == 1 else c


# How output writes one character of the secret itself: the documented escapes.
WRITERS: dict[str, Callable[[str], str]] = {
    "as is": lambda c: c,
    "other case": _case,
    "percent": lambda c: urllib.parse.quote(c, safe=""),
    "percent, `/` kept (Jinja urlencode)": lambda c: urllib.parse.quote(c, safe="/"),
    "quote_plus": urllib.parse.quote_plus,
    "every byte percent": lambda c: "".join(f"%{b:02X}" for b in _utf8(c)),
    "percent twice": lambda c: urllib.parse.quote(urllib.parse.quote(c, safe=""), safe=""),
    "JSON": lambda c: json.dumps(c)[1:-1],
    "JSON ascii": lambda c: json.dumps(c, ensure_ascii=True)[1:-1],
    "\\u every character": lambda c: "".join(f"\\u{u}" for u in _units(c)),
    "\\u in a JSON report": lambda c: "".join(f"\\\\u{u}" for u in _units(c)),
    "\\U": lambda c: f"\\U{ord(c):08x}",
    "\\u{}": lambda c: f"\\u{{{ord(c):X}}}",
    "\\x bytes": lambda c: "".join(f"\\x{b:02x}" for b in _utf8(c)),
    "octal": lambda c: "".join(f"\\{b:03o}" for b in _utf8(c)),
    "quoted-printable": lambda c: "".join(f"={b:02X}" for b in _utf8(c)),
    "%u": lambda c: f"%u{ord(c):04X}" if ord(c) < 0x10000 else c,
    "&#decimal;": lambda c: f"&#{ord(c)};",
    "&#xhex;": lambda c: f"&#x{ord(c):x};",
    "&#decimal; in XML": lambda c: f"&amp;#{ord(c)};",
    "html.escape": lambda c: html.escape(c),
    "named entity": lambda c: html.escape(c) if c in "<>&\"'" else c,
    "backslash-escaped punctuation (Markdown)": lambda c: (
        "\\" + c if c.isascii() and not c.isalnum() and c.isprintable() else c
    ),
    "fullwidth": lambda c: chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c,
}

# How output writes a character of hex or base64.
DERIVED_WRITERS = {key: WRITERS[key] for key in ("as is", "other case", "percent", "JSON")}

SEPARATORS = [
    " ",
    "\n",
    "\r\n",
    "\n        ",
    "\t",
    "\\n",
    "\\r\\n",
    "%0A",
    "&#10;",
    "<br>",
    "<br/>",
    "\x1b[31m",
    "\x1b[0m",
    "\u200b",
    "\u00a0",
    "\u00ad",
    "\ufeff",
]


def _hex(secret: str, rng: random.Random) -> list[str]:
    raw = _utf8(secret)
    spaced = rng.choice(["", ":", " ", "-", ", 0x"])
    first = "0x" if spaced == ", 0x" else ""
    return [first + f"{raw[0]:02x}"] + [spaced + f"{b:02x}" for b in raw[1:]]


def _base64(secret: str, rng: random.Random) -> list[str]:
    """The secret's base64 inside a longer encoded text; returns the characters that depend on
    the secret alone (what must be masked) — the surrounding ones are context."""
    offset = rng.randrange(3)
    encode = rng.choice([base64.b64encode, base64.urlsafe_b64encode])
    raw = _utf8(secret)
    text = encode(os.urandom(offset) + raw + os.urandom(rng.randrange(3))).decode()
    skip = (0, 2, 3)[offset]
    return list(text[skip : (offset + len(raw)) * 8 // 6])


DERIVATIONS: dict[str, Callable[[str, random.Random], list[str]]] = {
    "as is": lambda s, rng: list(s),
    "reversed": lambda s, rng: list(s[::-1]),
    "hex": _hex,
    "base64": _base64,
}

ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
ANY = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp", "Cf"))
SECRETS = st.text(st.one_of(ASCII, ASCII, ANY, st.just(" ")), min_size=4, max_size=24).filter(
    lambda s: len("".join(s.split())) >= 4 and "*" not in s
)
FILLER = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def leaks(draw: st.DrawFn) -> tuple[str, str, str]:
    """(secret, how it was written, the text that carries it)."""
    secret = draw(SECRETS)
    rng = random.Random(draw(st.integers(0, 2**32)))
    derivation = draw(st.sampled_from(sorted(DERIVATIONS)))
    writers = WRITERS if derivation in ("as is", "reversed") else DERIVED_WRITERS
    writer = draw(st.sampled_from(sorted(writers)))
    derived = DERIVATIONS[derivation](secret, rng)
    assume(derivation != "base64" or len(derived) >= 6)  # shorter says too little to mask
    derived = DERIVATIONS[derivation](secret, rng)
    assume(derivation != "base64" or len(derived) >= 6)  # shorter says too little to mask
    chunks = [writers[writer](c) if len(c) == 1 else c for c in derived]
    split = draw(st.sampled_from(["whole", "split once", "spaced out"]))
    gaps = len(chunks) - 1
    cuts = {"whole": set(), "split once": {rng.randrange(gaps)}, "spaced out": set(range(gaps))}
    written = "".join(
        chunk + (rng.choice(SEPARATORS) if i in cuts[split] else "")
        for i, chunk in enumerate(chunks)
    )
    return secret, f"{derivation}, {writer}, {split}", written


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leak=leaks(), before=FILLER, after=FILLER)
def test_every_documented_form_is_masked_inside_any_text(leak, before, after):
    secret, how, written = leak
    masked = Redactor([secret]).text(before + written + after)
    assert written not in masked, how
    assert MASK in masked, how


def _result(text: str) -> Result:
    return Result(
        task_id="leaky@node-1",
        check_id="leaky",
        phase_id="p",
        target="local",
        host="node-1",
        cell={"axis": text},
        status=Status.failed,
        severity="critical",
        title=f"title {text}",
        name="leaky",
        failure=f"failure {text}",
        diagnostic=f"diagnostic {text}",
        fix=f"fix {text}",
        reason=f"reason {text}",
        facts={"stdout": f"out {text} end", text: 1},
        duration=0.5,
        started_at=1_700_000_000.0,
    )


def _outputs(run: Run, tmp: Path) -> dict[str, str]:
    """Every output of a run, written by the reporters matrix has, and the drain reason."""
    files = {
        "json": JsonReporter,
        "junit": JunitReporter,
        "markdown": MarkdownReporter,
        "prometheus": PrometheusReporter,
    }
    outputs = {}
    for name, reporter in files.items():
        path = tmp / f"out.{name}"
        reporter(str(path)).finish(run)
        outputs[name] = path.read_text(encoding="utf-8")
    console = io.StringIO()
    ConsoleReporter(GuardedStream(console), live=False).finish(run)
    outputs["console"] = console.getvalue()
    outputs["slurm drain reason"] = reason(run.results[0], "matrix[leaky]")
    return outputs


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leak=leaks())
def test_no_report_the_console_or_a_drain_reason_carries_a_documented_form(leak, scratch):
    """The results go to the reporters unredacted (as a plugin reporter might build its own):
    what each writes is masked at the one redaction point, whatever escaping it adds."""
    secret, how, written = leak
    run = Run(
        spec_name="leaky",
        spec_path="spec.yaml",
        vars={"token": written},
        phases=[PhaseInfo("p", "Phase", 10, {"leaky": 1.0})],
        results=[_result(written)],
        order=["leaky@node-1"],
        started_at=1_700_000_000.0,
        duration=1.0,
    )
    with patch.object(redact_module, "_REMEMBERED", {secret}):
        outputs = _outputs(run, scratch)
    for name, text in outputs.items():
        assert secret not in text and written not in text, f"{name}: {how}"


KEY_FILE = "-----BEGIN KEY-----\n" + "\n".join(
    base64.b64encode(bytes((i + j) % 256 for j in range(48))).decode() for i in range(0, 4800, 48)
)


@pytest.mark.parametrize(
    ("secret", "written"),
    [
        (KEY_FILE, KEY_FILE),  # 6.5 KB over 101 lines: its words at any line breaks
        (KEY_FILE, json.dumps(KEY_FILE)[1:-1]),
        (KEY_FILE, KEY_FILE.replace("\n", "\r\n    ")),
        ("x" * 100_000, "x" * 100_000),  # past what a pattern of its forms can hold: as is
        ("a b " * 4096, "a b " * 4096),
    ],
    ids=["key file", "key file in JSON", "key file re-wrapped", "100 KB", "8,192 words"],
)
def test_a_long_secret_is_masked_and_redaction_prints_nothing_of_its_own(secret, written, capfd):
    masked = Redactor([secret]).text(f"before {written} after")
    assert masked == f"before {MASK} after"
    assert capfd.readouterr() == ("", "")  # RE2 logs a pattern it struggles with to fd 2


def test_a_secret_whose_pattern_re2_refuses_is_masked_as_is(monkeypatch):
    import re2

    def refuse(*args, **kwargs):
        raise re2.error(b"pattern too large - compile failed")

    monkeypatch.setattr(re2, "compile", refuse)
    redact_module._forms.cache_clear()
    assert Redactor(["refused-Secret-9"]).text("a refused-Secret-9 b") == f"a {MASK} b"
    redact_module._forms.cache_clear()
