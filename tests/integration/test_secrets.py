"""Secrets never leave: one secret planted in every place a spec or a probe can put it, and
every output of every command searched for it and its encodings — each report format, stdout,
stderr, `explain`, `list`, `--dry-run`, `validate`'s errors, the spans an OTLP receiver got,
and the process list of the hosts (local, and SSH with and without the agent) while the
probes run."""

from __future__ import annotations

import base64
import hashlib
import html
import inspect
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from http_server import Handler, serving
from otlp_receiver import OtlpReceiver
from sshd import SshServer

SECRET = 'Pl4nted/Secret+Val=ue "ü" 7f3'
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SLACK = "https://hooks.slack.com/services/T0PLANTED/B0PLANTED/planted0webhook0token"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAplanted0key0without0its0end\n"


def forms(secret: str) -> dict[str, str]:
    """The secret as each output could carry it: the documented list (docs/spec.md)."""
    return {
        "raw": secret,
        "json": json.dumps(secret)[1:-1],
        "url": urllib.parse.quote(secret, safe=""),
        "url-plus": urllib.parse.quote_plus(secret),
        "jinja urlencode": urllib.parse.quote(secret, safe="/"),
        "every byte": "".join(f"%{byte:02X}" for byte in secret.encode()),
        "\\u escapes": "".join(f"\\u{ord(c):04x}" for c in secret),
        "split": secret[:12] + "\n" + secret[12:],
        "folded": "\n".join(secret[i : i + 6] for i in range(0, len(secret), 6)),
        "hex": secret.encode().hex(),
        "reversed": secret[::-1],
        "html entities": "".join(f"&#{ord(c)};" for c in secret),
        "spaced": " ".join(secret),
        "lower": secret.lower(),
        "base64": base64.b64encode(secret.encode()).decode(),
    }


NEEDLES = {
    **forms(SECRET),
    "aws key id": AWS_KEY_ID,
    "slack webhook": SLACK.split("//")[1],
    "pem body": "MIIEowIBAAKCAQEAplanted",
    "base64 head": base64.b64encode(SECRET.encode()).decode()[:-4],  # what hangs on the secret
}

# The probe prints the secret in every documented form, one as a fact's key; the spec puts
# credential shapes in its name, a phase title, a category and a failure line, the secret in
# a title and a matrix cell, and its Jinja-urlencoded form in a URL and a diagnostic.
PRINTER = "\n".join(
    [
        "import base64, json, os, urllib.parse",
        inspect.getsource(forms),
        "s = os.environ['PLANTED']",
        "print(json.dumps({s: 1, **forms(s), 'pem': os.environ['PLANTED_PEM']}))",
    ]
)

DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()
SPEC = f"""
version: 1
name: "leak {AWS_KEY_ID}"
secrets: [PLANTED, PLANTED_PEM]
vars:
  port: 0
targets:
  TARGETS
phases:
  - id: p
    title: "Phase {AWS_KEY_ID}"
    checks:
      - id: printed
        title: "shows {{{{ secret.PLANTED }}}}"
        category: "category {AWS_KEY_ID}"
        failure: "post to {SLACK}"
        matrix: {{tok: ["{{{{ secret.PLANTED }}}}"]}}
        probe: {{kind: command, argv: [python3, printer.py]}}
        expect: {{exit_code: 1}}
        diagnostic: "saw {{{{ facts.stdout }}}} for {{{{ matrix.tok }}}}"
        fix: "rotate {{{{ secret.PLANTED }}}}"
      - id: jinja-urlencoded
        probe:
          kind: http
          url: "http://127.0.0.1:{{{{ vars.port }}}}/{{{{ secret.PLANTED | urlencode }}}}"
        expect: {{status: 299}}
        diagnostic: "asked for {{{{ secret.PLANTED | urlencode }}}}"
      - &http
        id: http-local
        probe:
          kind: http
          url: "http://127.0.0.1:{{{{ vars.port }}}}/slow"
          headers:
            Authorization: "Bearer {{{{ secret.PLANTED }}}}"
            X-Key: "{{{{ secret.PLANTED }}}}"
        expect: {{status: 299}}
      - {{<<: *http, id: http-agent, on: agent}}
      - {{<<: *http, id: http-plain, on: plain}}
      - &env
        id: env-local
        probe:
          kind: command
          shell: 'sleep 1; printf %s "$HANDED" | sha256sum'
          env: {{HANDED: "{{{{ secret.PLANTED }}}}"}}
        expect: {{stdout: {{contains: "{DIGEST}"}}}}
      - {{<<: *env, id: env-agent, on: agent}}
      - {{<<: *env, id: env-plain, on: plain}}
"""


class Slow(Handler):
    """Answers after a second, so the probe is in the process list long enough to be seen."""

    def do_GET(self) -> None:
        time.sleep(1.0)
        self.reply(200, b"ok")


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    with serving(Slow) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(tmp_path_factory.mktemp("sshd"), 2)
    yield server
    server.stop()


def leaks(text: str) -> list[str]:
    """The needles in the text as is, JSON-escaped (a JSON report) or XML-escaped (JUnit)."""
    return [
        name
        for name, needle in NEEDLES.items()
        if any(way in text for way in (needle, json.dumps(needle)[1:-1], html.escape(needle)))
    ]


def process_list() -> str:
    return subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout


def run_watching_processes(cli: Any, *args: str, env: dict[str, str]) -> tuple[Any, str]:
    """The command's (returncode, stdout, stderr) and every process list seen while it ran."""
    seen: list[str] = []
    proc = cli.popen(*args, env=env)
    while proc.poll() is None:
        seen.append(process_list())
        time.sleep(0.05)
    out, err = proc.communicate()
    return (proc.returncode, out, err), "\n".join(seen)


def test_a_planted_secret_leaves_by_no_way_out(cli, write_spec, tmp_path, sshd, http_port):
    targets = "\n  ".join(
        [sshd.target("agent", [sshd.hosts[0]]), sshd.target("plain", [sshd.hosts[1]], agent=False)]
    )
    spec = write_spec(SPEC.replace("TARGETS", targets))
    (tmp_path / "printer.py").write_text(PRINTER)
    env = {"PLANTED": SECRET, "PLANTED_PEM": PEM}
    port = ["--var", f"port={http_port}"]
    outputs: dict[str, str] = {}
    with OtlpReceiver() as receiver:
        reports = ["--json", "r.json", "--junit", "r.xml", "--markdown", "r.md"]
        (code, out, err), processes = run_watching_processes(
            cli,
            *["run", spec, *port, *reports, "--otel", "otlp"],
            env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
        )
        spans = b"".join(s.span.SerializeToString() for s in receiver.spans)
    assert code == 1, out + err  # the command check and the 299 expectations fail
    outputs.update(stdout=out, stderr=err, processes=processes)
    outputs["spans"] = spans.decode("utf-8", "replace")
    assert len(receiver.spans) > 5
    for name in ("r.json", "r.xml", "r.md"):
        outputs[name] = (tmp_path / name).read_text(encoding="utf-8")
    assert "saw " in outputs["r.json"] and "***" in outputs["r.json"]
    results = {r["task_id"]: r["status"] for r in json.loads(outputs["r.json"])["results"]}
    assert [
        results[task]
        for task in ("env-local", f"env-agent@{sshd.hosts[0]}", f"env-plain@{sshd.hosts[1]}")
    ] == ["pass"] * 3
    done = cli("run", spec, *port, "--otel", "trace.json", "--quiet", env=env)
    outputs["otlp-json file"] = (tmp_path / "trace.json").read_text(encoding="utf-8")
    for command in (["explain", spec, "http-local"], ["list", spec], ["run", spec, "--dry-run"]):
        done = cli(*command, *port, env=env)
        assert done.returncode == 0, done.stderr
        outputs[" ".join(command[:1] + command[2:])] = done.stdout + done.stderr
    assert "Bearer ***" in outputs["explain http-local"]
    assert {name: leaks(text) for name, text in outputs.items()} == {name: [] for name in outputs}


TRUE = 'probe: {kind: command, argv: ["true"]}'


@pytest.mark.parametrize(
    ("lines", "exits"),
    [
        (['probe: {kind: port, port: 1, mode: "{{ secret.PLANTED }}"}'], (0, 1)),
        (['probe: {kind: http, url: "{{ secret.PLANTED }}"}'], (0, 1)),
        (['probe: {kind: command, argv: ["{{ secret.PLANTED.nope }}"]}'], (2, 2)),
        (['when: "{{ secret.PLANTED + 1 }}"', TRUE], (2, 2)),
    ],
    ids=["mode", "url", "attribute", "when"],
)
def test_problems_that_quote_a_rendered_secret_mask_it(cli, write_spec, tmp_path, lines, exits):
    """A param that reads a secret is checked when its task runs (the task's error); a
    template that cannot render at all is a spec error. Either way the value is masked."""
    check = "\n".join(" " * 8 + line for line in lines)
    spec = write_spec(
        "version: 1\nname: t\nsecrets: [PLANTED]\nphases:\n  - id: p\n    checks:\n"
        f"      - id: c\n{check}\n"
    )
    validated = cli("validate", spec, env={"PLANTED": SECRET})
    ran = cli("run", spec, "--json", "r.json", env={"PLANTED": SECRET})
    assert (validated.returncode, ran.returncode) == exits, validated.stderr + ran.stderr
    report = tmp_path / "r.json"
    texts = [validated.stdout, validated.stderr, ran.stdout, ran.stderr]
    texts.append(report.read_text() if report.exists() else "")
    assert not any("Traceback" in text for text in texts)
    assert leaks("\n".join(texts)) == []
