"""Secrets never leave: declared values and well-known credential shapes become ***."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matrix.redact import MASK, ZERO_WIDTH, GuardedStream, Redactor, inert, remember
from matrix.results import Status
from reporters.json_report import JsonReporter

SECRET = "s3cr3t-Value-7f9a2c"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SLACK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"

SPEC = """
version: 1
name: redaction
vars:
  header: "Authorization: {{ secret.MATRIX_TEST_TOKEN }}"
secrets: [MATRIX_TEST_TOKEN]
phases:
  - id: p
    checks:
      - id: leaky
        probe:
          kind: command
          shell: >-
            echo "token={{ secret.MATRIX_TEST_TOKEN }}";
            echo "{\\"t\\": \\"$MATRIX_TEST_TOKEN\\"}" >&2; exit 3
        diagnostic: "saw {{ facts.stdout }} / {{ secret.MATRIX_TEST_TOKEN }}"
        fix: "rotate {{ secret.MATRIX_TEST_TOKEN }}"
      - id: json-facts
        probe: {kind: command, shell: 'echo "{\\"nested\\": [\\"$MATRIX_TEST_TOKEN\\"]}"'}
        expect: {stdout: "nope"}
      - id: shapes
        probe: {kind: command, argv: ["echo", "key AKIAIOSFODNN7EXAMPLE hook SLACK_URL"]}
        expect: {exit_code: 1}
"""


@pytest.fixture
def leaky_run(run_spec, monkeypatch):
    monkeypatch.setenv("MATRIX_TEST_TOKEN", SECRET)
    return run_spec(SPEC.replace("SLACK_URL", SLACK))


def test_declared_secret_is_masked_in_facts_diagnostic_fix_and_vars(leaky_run, by_id):
    results = by_id(leaky_run)
    leaky = results["leaky"]
    assert leaky.status is Status.failed
    assert leaky.facts["stdout"] == f"token={MASK}"
    assert leaky.facts["stderr"] == f'{{"t": "{MASK}"}}'
    assert leaky.diagnostic == f"saw token={MASK} / {MASK}"
    assert leaky.fix == f"rotate {MASK}"
    assert leaky_run.vars["header"] == f"Authorization: {MASK}"
    assert results["json-facts"].facts["json"] == {"nested": [MASK]}
    assert SECRET not in results["json-facts"].reason
    assert SECRET not in json.dumps(leaky_run.to_dict(), default=str)


def test_well_known_shapes_are_masked_even_undeclared(leaky_run, by_id):
    shapes = by_id(leaky_run)["shapes"]
    assert shapes.status is Status.failed
    assert shapes.facts["stdout"] == f"key {MASK} hook {MASK}"
    assert AWS_KEY_ID not in (shapes.diagnostic or "") + (shapes.reason or "")
    assert "hooks.slack.com" not in json.dumps(shapes.facts)


def test_json_report_holds_no_secret(leaky_run, tmp_path):
    out = tmp_path / "out" / "report.json"
    JsonReporter(str(out)).finish(leaky_run)
    text = out.read_text()
    assert SECRET not in text
    assert AWS_KEY_ID not in text
    assert "hooks.slack.com" not in text
    assert MASK in text
    assert json.loads(text)["vars"]["header"] == f"Authorization: {MASK}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"id={AWS_KEY_ID}.", f"id={MASK}."),
        ("ASIAY34FZKBOKMUTVV7A", MASK),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key = {MASK}",
        ),
        (f"post to {SLACK} now", f"post to {MASK} now"),
        ("https://discord.com/api/webhooks/123/abcDEF", MASK),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", f"Authorization: Bearer {MASK}"),
        ("xoxb-1234567890-abcdefghij", MASK),
        ("ghp_" + "a" * 36, MASK),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", MASK),
        ("plain words stay", "plain words stay"),
    ],
)
def test_shapes(text, expected):
    assert Redactor()(text) == expected


def test_declared_values_are_masked_in_nested_data_and_short_values_are_not():
    redact = Redactor(["hunter22", "ab"])
    data = {"a": ["x hunter22 y", {"b": "hunter22"}], "n": 3, "t": ("hunter22",), "s": "ab cd"}
    data["key hunter22"] = Status.passed
    assert redact(data) == {
        "a": [f"x {MASK} y", {"b": MASK}],
        "n": 3,
        "t": [MASK],
        "s": "ab cd",
        f"key {MASK}": Status.passed,
    }


def test_longer_secret_wins_over_a_prefix_of_it():
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("abcdefgh") == MASK


def test_secrets_of_the_plans_environment_are_masked_in_results(run_spec, by_id):
    """The engine masks the secrets the plan was rendered with, not only os.environ's."""
    run = run_spec(
        """
        version: 1
        name: t
        secrets: [API_TOKEN]
        phases:
          - id: p
            checks:
              - id: echo
                probe: {kind: command, argv: [echo, "token={{ secret.API_TOKEN }}"]}
                expect: {stdout: nothing}
                diagnostic: "got {{ facts.stdout }}"
        """,
        environ={"API_TOKEN": "plan-only-value-1234"},
    )
    result = by_id(run)["echo"]
    assert result.facts["stdout"] == "token=***"
    assert result.diagnostic == "got token=***"


TRICKY = 'p@ss/w0rd "quoted" + ünï'


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s,
        lambda s: json.dumps(s)[1:-1],
        lambda s: urllib.parse.quote(s, safe=""),
        lambda s: urllib.parse.quote_plus(s),
        lambda s: s.lower(),
        lambda s: s.upper(),
        lambda s: base64.b64encode(f"user:{s}".encode()).decode(),
        lambda s: base64.b64encode(f"ab{s}".encode()).decode(),
        lambda s: base64.b64encode(f"x{s}yz".encode()).decode(),
        lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    ],
    ids=["raw", "json", "url", "url-plus", "lower", "upper", "basic", "b64+2", "b64+1", "b64url"],
)
def test_every_common_encoding_of_a_secret_is_masked(encode):
    encoded = encode(TRICKY)
    masked = Redactor([TRICKY]).text(f"Authorization: Basic {encoded} end")
    assert encoded not in masked
    assert MASK in masked and masked.endswith(" end")


def test_a_private_key_cut_short_is_masked_to_the_end_of_its_base64():
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\nAAAABG5vbmUAAAAE"
    assert Redactor()(f"key: {pem}") == f"key: {MASK}"
    escaped = json.dumps(pem)[1:-1]  # the same key inside a JSON report
    assert Redactor()(f'{{"k": "{escaped}"}}') == f'{{"k": "{MASK}"}}'


def test_a_remembered_secret_is_masked_by_every_redactor():
    remember("remembered-value-42")
    assert Redactor()("x remembered-value-42 y") == f"x {MASK} y"


def test_a_guarded_stream_masks_a_secret_split_across_writes_and_survives_lone_surrogates():
    inner = io.TextIOWrapper(io.BytesIO(), encoding="ascii", write_through=True)
    stream = GuardedStream(inner)
    remember("split-secret-9")
    stream.write("token=split-")
    stream.write("secret-9\nnext \udcff line")
    stream.flush()
    inner.buffer.seek(0)
    assert inner.buffer.read() == f"token={MASK}\nnext ? line".encode()


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                ["::", ":", "##", "#", "[", "vso[", "teamcity[", "\n", "\r", " ", "\t"]
            ),
            st.text(max_size=5),
        ),
        max_size=30,
    ).map("".join)
)
def test_inert_text_holds_no_ci_command_and_only_gains_zero_width_spaces(text):
    made = inert(text)
    assert made.replace(ZERO_WIDTH, "") == text.replace(ZERO_WIDTH, "")
    for line in re.split(r"\r\n|\r|\n", made):
        assert not line.lstrip().startswith("::"), line
        assert not re.search(r"##(vso|teamcity)?\[", line), line
