"""`notify.webhook` and `alert.content` through the real engine: a real HTTP receiver on
127.0.0.1 plays the webhook (Slack's answers included), real template files on disk."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from matrix.results import Result, Run
from matrix.spec.problems import SpecInvalid
from tests.conftest import plan_of, run_plan

HOOK_PATH = "/services/T000/B000/XXXX"

# path → (status, body) the receiver answers; Slack's real answers for its error cases
ROUTES: dict[str, tuple[int, str]] = {
    HOOK_PATH: (200, "ok"),
    "/services/T000/B000/GONE": (404, "no_service"),
    "/services/T000/B000/REVOKED": (403, "invalid_token"),
    "/services/T000/B000/ARCHIVED": (410, "channel_is_archived"),
    "/services/T000/B000/NOTOK": (200, "queued"),
    "/generic/hook": (204, ""),
    "/generic/broken": (500, "internal error"),
    "/generic/moved": (302, ""),
}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook on 127.0.0.1 that records every request it gets."""

    base: str
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str = HOOK_PATH) -> str:
        return self.base + path


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests.append(Received(self.command, self.path, headers, body))
            if self.path.endswith("/ECHO"):  # a service that quotes the URL back
                status, text = 400, f"no webhook at {self.path}"
            else:
                status, text = ROUTES.get(self.path, (404, "no_service"))
            data = text.encode()
            self.send_response(status)
            if status == 302:
                self.send_header("Location", receiver.base + HOOK_PATH)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HOOK", raising=False)
    receiver = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}{HOOK_PATH}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook_spec(probes: dict[str, str], secrets: tuple[str, ...] = ("HOOK",)) -> str:
    """A spec with one notify check per entry: id → probe mapping (YAML flow text)."""
    rows = "".join(
        f"      - id: {check_id}\n"
        f"        probe: {probe}\n"
        '        diagnostic: "Alert channel broken: {{ error }}"\n'
        for check_id, probe in probes.items()
    )
    return (
        f"version: 1\nname: notify\nsecrets: [{', '.join(secrets)}]\n"
        f"phases:\n  - id: monitoring\n    checks:\n{rows}"
    )


@pytest.fixture
def run_notify(write_spec: Callable[..., Path]) -> Callable[..., dict[str, Result]]:
    """Run a spec text with `environ` as the secrets' source; results by check id.

    The secrets live only in the plan's environ, not in os.environ, so the engine's
    redaction does not know their values: a URL in a result is a leak by the probe itself."""

    def run(text: str, environ: dict[str, str]) -> dict[str, Result]:
        return {r.check_id: r for r in _run(write_spec, text, environ).results}

    return run


def _run(write_spec: Callable[..., Path], text: str, environ: dict[str, str]) -> Run:
    return run_plan(plan_of(write_spec(text), environ=environ))


# ── notify.webhook ──────────────────────────────────────────────────────────


def test_webhook_delivers_the_exact_json_and_passes(run_notify, receiver: Receiver) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*pre-flight* ok"}}]
    spec = webhook_spec(
        {
            "default": '{kind: notify.webhook, url: "{{ secret.HOOK }}"}',
            "custom": "{kind: notify.webhook, url: '{{ secret.HOOK }}', headers: {X-Run: r-7}, "
            "payload: {text: 'run {{ check.id }}', unfurl_links: false, "
            f"blocks: {json.dumps(blocks)}}}}}",
            "generic": "{kind: notify.webhook, url: '{{ secret.GENERIC }}', message: hello}",
        },
        secrets=("HOOK", "GENERIC"),
    )

    results = run_notify(spec, {"HOOK": receiver.url(), "GENERIC": receiver.url("/generic/hook")})

    assert {k: r.status.value for k, r in results.items()} == {
        "default": "pass",
        "custom": "pass",
        "generic": "pass",
    }
    by_text = {json.loads(r.body)["text"]: r for r in receiver.requests}
    assert len(receiver.requests) == 3
    default = by_text["matrix pre-flight: test message"]
    assert (default.method, default.path) == ("POST", HOOK_PATH)
    assert json.loads(default.body) == {"text": "matrix pre-flight: test message"}
    assert default.headers["content-type"] == "application/json; charset=utf-8"
    custom = by_text["run custom"]
    expected = {"text": "run custom", "unfurl_links": False, "blocks": blocks}
    assert json.loads(custom.body) == expected
    assert custom.headers["x-run"] == "r-7"
    assert by_text["hello"].path == "/generic/hook"
    facts = results["default"].facts
    assert facts["sent"] is True and facts["ok"] is True and facts["status"] == 200
    assert facts["body"] == "ok" and facts["service"] == "slack" and facts["latency_ms"] >= 0
    assert facts["payload"] == {"text": "matrix pre-flight: test message"}
    assert facts["host"] == receiver.base.removeprefix("http://")
    generic = results["generic"].facts
    assert (generic["service"], generic["status"], generic["body"]) == ("generic", 204, "")


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        (
            "/services/T000/B000/GONE",
            404,
            "no_service: the webhook was removed or the URL is wrong — create a new incoming "
            "webhook and update the secret",
        ),
        ("/services/T000/B000/REVOKED", 403, "invalid_token: the token in the webhook URL"),
        ("/services/T000/B000/ARCHIVED", 410, "channel_is_archived: the webhook's channel is"),
        ("/services/T000/B000/NOTOK", 200, "the webhook answered 200 but not `ok` (body: queued)"),
        ("/generic/broken", 500, "the webhook answered 500 Internal Server Error"),
        ("/generic/moved", 302, "the webhook answered 302 Found — it redirects elsewhere"),
    ],
)
def test_webhook_error_answers_fail_with_a_readable_error(
    run_notify, receiver: Receiver, path: str, status: int, expected: str
) -> None:
    spec = webhook_spec({"alert": '{kind: notify.webhook, url: "{{ secret.HOOK }}"}'})

    result = run_notify(spec, {"HOOK": receiver.url(path)})["alert"]

    assert result.status.value == "fail"
    assert result.facts["status"] == status and result.facts["ok"] is False
    assert result.facts["error"].startswith(expected)
    assert result.reason.startswith(expected) and "ok is false" in result.reason
    assert result.diagnostic == f"Alert channel broken: {result.facts['error']}"
    # a redirected POST is reported, never followed as a GET without the message
    assert [r.method for r in receiver.requests] == ["POST"]


def test_webhook_that_never_answers_errors_within_its_timeout(run_notify, silent: str) -> None:
    spec = webhook_spec({"alert": '{kind: notify.webhook, url: "{{ secret.HOOK }}", timeout: 1}'})

    started = time.perf_counter()
    result = run_notify(spec, {"HOOK": silent})["alert"]

    assert time.perf_counter() - started < 10
    assert result.status.value == "error"
    host = silent.removeprefix("http://").removesuffix(HOOK_PATH)
    assert result.reason.startswith(
        f"POST to the webhook at {host} (rest of the URL hidden) failed: timed out after 1s"
    )
    assert result.facts == {"sent": False, "host": host}


def test_webhook_refused_is_an_error_naming_the_cause(run_notify) -> None:
    url = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    spec = webhook_spec({"alert": '{kind: notify.webhook, url: "{{ secret.HOOK }}", timeout: 3}'})

    result = run_notify(spec, {"HOOK": url})["alert"]

    assert result.status.value == "error"
    assert "failed: connection refused" in result.reason
    assert result.diagnostic.startswith("Alert channel broken: POST to the webhook at 127.0.0.1:")


def test_dry_run_sends_nothing_and_validates(run_notify, receiver: Receiver) -> None:
    spec = webhook_spec(
        {
            "dry": "{kind: notify.webhook, url: '{{ secret.HOOK }}', dry_run: true, "
            "message: 'deploy {{ check.id }}'}",
            "no-text": "{kind: notify.webhook, url: '{{ secret.HOOK }}', dry_run: true, "
            "payload: {text: '  ', username: bot}}",
            "bad-url": "{kind: notify.webhook, url: '{{ secret.BAD }}', dry_run: true}",
            "no-text-live": "{kind: notify.webhook, url: '{{ secret.HOOK }}', "
            "payload: {blocks: []}}",
        },
        secrets=("HOOK", "BAD"),
    )

    results = run_notify(spec, {"HOOK": receiver.url(), "BAD": "hooks.example.com/T000/B000"})

    assert receiver.requests == []
    dry = results["dry"]
    assert dry.status.value == "pass"
    assert dry.facts == {
        "dry_run": True,
        "service": "slack",
        "host": receiver.base.removeprefix("http://"),
        "payload": {"text": "deploy dry"},
        "bytes": len(json.dumps({"text": "deploy dry"})),
        "valid": True,
        "sent": False,
        "ok": True,
    }
    for check_id in ("no-text", "no-text-live"):
        assert results[check_id].status.value == "fail"
        assert results[check_id].facts["valid"] is False
        assert (
            results[check_id]
            .facts["problem"]
            .startswith("Slack message has neither text nor blocks")
        )
    bad = results["bad-url"]
    assert bad.status.value == "fail"
    assert bad.facts["problem"].startswith("the webhook URL is not an http:// or https:// URL")
    assert "hooks.example.com" not in json.dumps(bad.facts) + (bad.reason or "")


def test_a_literal_webhook_url_is_rejected_at_plan_time(
    write_spec, cli, receiver: Receiver
) -> None:
    url = receiver.url()
    text = webhook_spec({"alert": f"{{kind: notify.webhook, url: '{url}'}}"})
    path = write_spec(text)

    with pytest.raises(SpecInvalid) as caught:
        plan_of(path, environ={})
    done = cli("run", path.name)

    message = (
        'url must come from a secret: url: "{{ secret.NAME }}" with NAME listed under secrets:'
    )
    assert message in str(caught.value) and "spec.yaml:8:" in str(caught.value)
    assert done.returncode == 2 and message in done.stderr
    assert receiver.requests == []


def test_a_url_read_from_a_listed_secret_by_name_is_accepted(run_notify, receiver) -> None:
    text = webhook_spec({"alert": '{kind: notify.webhook, url: "{{ secret[vars.hook] }}"}'})
    text = text.replace("secrets:", "vars: {hook: HOOK}\nsecrets:")

    assert run_notify(text, {"HOOK": receiver.url()})["alert"].status.value == "pass"
    assert len(receiver.requests) == 1


def test_the_url_appears_in_no_report(
    write_spec, cli, report, receiver: Receiver, silent: str
) -> None:
    """Neither the engine's Run (secret unknown to redaction) nor the CLI's JSON report
    carries the URL or its path, whatever the webhook answered."""
    text = webhook_spec(
        {
            "ok": '{kind: notify.webhook, url: "{{ secret.HOOK }}"}',
            "gone": '{kind: notify.webhook, url: "{{ secret.GONE }}"}',
            "echo": '{kind: notify.webhook, url: "{{ secret.ECHO }}"}',
            "refused": '{kind: notify.webhook, url: "{{ secret.REFUSED }}", timeout: 2}',
            "silent": '{kind: notify.webhook, url: "{{ secret.SILENT }}", timeout: 1}',
            "dry": '{kind: notify.webhook, url: "{{ secret.HOOK }}", dry_run: true}',
        },
        secrets=("HOOK", "GONE", "ECHO", "REFUSED", "SILENT"),
    )
    environ = {
        "HOOK": receiver.url(),
        "GONE": receiver.url("/services/T000/B000/GONE"),
        "ECHO": receiver.url("/services/T000/B000/ECHO"),
        "REFUSED": f"http://127.0.0.1:{free_port()}/services/T000/B000/REFUSED",
        "SILENT": silent,
    }
    path = write_spec(text)

    run = run_plan(plan_of(path, environ=environ))
    done = cli("run", path.name, "--json", "run.json", "--quiet", env=environ)

    engine_text = json.dumps(run.to_dict())
    data = report(path.parent / "run.json")
    statuses = {r.check_id: r.status.value for r in run.results}
    assert statuses == {
        "ok": "pass",
        "gone": "fail",
        "echo": "fail",
        "refused": "error",
        "silent": "error",
        "dry": "pass",
    }
    assert {r["check_id"]: r["status"] for r in data["results"]} == statuses
    assert done.returncode == 1  # BLOCKED: checks are critical by default
    assert "no webhook at ***" in engine_text  # the echoed path was masked by the probe
    report_text = (path.parent / "run.json").read_text()
    for url in environ.values():
        secret_path = "/services/" + url.split("/services/", 1)[1]
        for output in (engine_text, report_text, done.stdout, done.stderr):
            assert url not in output and secret_path not in output


def test_bad_webhook_params_point_at_the_spec(spec_problems) -> None:
    text = webhook_spec(
        {
            "dates": "{kind: notify.webhook, url: '{{ secret.HOOK }}', payload: {on: 2024-01-02}}",
            "header": "{kind: notify.webhook, url: '{{ secret.HOOK }}', headers: {'X Run': a}}",
        }
    )

    messages = [p.message for p in spec_problems(text, environ={"HOOK": "http://127.0.0.1/"})]

    assert any(m.startswith("payload must be plain JSON") for m in messages), messages
    assert "header name 'X Run' is not a valid HTTP header name" in messages


# ── alert.content ───────────────────────────────────────────────────────────

ALERT_JSON = (
    '{"text": "Training failed on {{ instance_id }}", "run_id": "{{ run_id }}", '
    '"details": {"error": "{{ error_message }}", "instance_id": "{{ instance_id }}"}}'
)


def alert_spec(probes: dict[str, str]) -> str:
    rows = "".join(
        f"      - id: {check_id}\n        probe: {probe}\n" for check_id, probe in probes.items()
    )
    return f"version: 1\nname: alerts\nphases:\n  - id: monitoring\n    checks:\n{rows}"


def test_alert_content_inline_templates(run_notify) -> None:
    raw = "{% raw %}" + ALERT_JSON + "{% endraw %}"
    spec = alert_spec(
        {
            "complete": f"{{kind: alert.content, template: '{raw}', "
            "required: [run_id, instance_id, error], "
            "context: {error_message: CUDA out of memory, instance_id: i-0abc}}",
            "blank": f"{{kind: alert.content, template: '{raw}', required: [run_id, error]}}",
            "text": "{kind: alert.content, "
            "template: '{% raw %}Run {{ run_id }} failed{% endraw %}', "
            "required: [run_id, instance_id, error]}",
            "broken-json": "{kind: alert.content, "
            "template: '{% raw %}{\"run_id\": {{ run_id }}}{% endraw %}', required: [run_id]}",
        }
    )

    results = run_notify(spec, {})

    assert {k: r.status.value for k, r in results.items()} == {
        "complete": "pass",
        "blank": "fail",
        "text": "fail",
        "broken-json": "fail",
    }
    complete = results["complete"].facts
    assert complete["format"] == "json" and complete["missing"] == complete["empty"] == []
    assert json.loads(complete["rendered"])["details"] == {
        "error": "CUDA out of memory",
        "instance_id": "i-0abc",
    }
    assert json.loads(complete["rendered"])["run_id"] == "sample-run_id"
    blank = results["blank"].facts
    assert (blank["empty"], blank["missing"]) == (["error"], [])
    assert blank["problem"] == "Alert has empty error"
    text = results["text"]
    assert text.facts["format"] == "text"
    assert text.facts["rendered"] == "Run sample-run_id failed"
    assert text.facts["missing"] == ["instance_id", "error"]
    assert text.reason.startswith("Alert missing instance_id, error (ok is false")
    broken = results["broken-json"].facts
    assert broken["problem"].startswith("Alert is not valid JSON (Expecting value")


def test_a_field_counts_only_when_the_template_renders_it(run_notify) -> None:
    """The sample value "failed" is in the text, but the template never renders `status`."""
    spec = alert_spec(
        {
            "constant": "{kind: alert.content, required: [run_id, status], "
            "template: '{% raw %}Run {{ run_id }}: training failed{% endraw %}', "
            "context: {status: failed}}",
            "rendered": "{kind: alert.content, required: [run_id, status], "
            "template: '{% raw %}Run {{ run_id }}: training {{ status }}{% endraw %}', "
            "context: {status: failed}}",
        }
    )

    results = run_notify(spec, {})

    assert results["constant"].facts["missing"] == ["status"]
    assert results["constant"].facts["problem"] == "Alert missing status"
    assert results["rendered"].status.value == "pass"
    assert results["rendered"].facts["rendered"] == "Run sample-run_id: training failed"


def test_alert_content_missing_run_id(run_notify) -> None:
    spec = alert_spec(
        {
            "alert": "{kind: alert.content, required: [run_id], "
            "template: '{% raw %}Training failed: {{ error }}{% endraw %}', "
            "context: {error: OOM}}"
        }
    )

    result = run_notify(spec, {})["alert"]

    assert result.status.value == "fail"
    assert result.facts["problem"] == "Alert missing run_id"
    assert result.facts["rendered"] == "Training failed: OOM"


def test_alert_content_from_a_file(
    run_notify, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    (alerts / "footer.j2").write_text("instance: {{ instance_id }}\n")
    (alerts / "failed.j2").write_text(
        "Run {{ run_id }} failed: {{ error }}\n{% include 'footer.j2' %}"
    )
    (alerts / "bad.j2").write_text("Run {{ run_id }}\n{% if error %}\n{{ error }}\n")
    (alerts / "typo.j2").write_text("Run {{ run_id }}\nError: {{ error }\n")
    (alerts / "tojson.j2").write_text(
        '{"run_id": {{ run_id | tojson }}, "error": {{ err | tojson }}}'
    )
    (alerts / "lost.j2").write_text("{% include 'gone.j2' %}")
    monkeypatch.chdir(tmp_path)
    spec = alert_spec(
        {
            "file": "{kind: alert.content, path: alerts/failed.j2, "
            "required: [run_id, error, instance_id], context: {error: NCCL timeout}}",
            "syntax": "{kind: alert.content, path: alerts/bad.j2, required: [run_id]}",
            "typo": "{kind: alert.content, path: alerts/typo.j2, required: [run_id]}",
            "gone": "{kind: alert.content, path: alerts/nope.j2, required: [run_id]}",
            "tojson": "{kind: alert.content, path: alerts/tojson.j2, required: [run_id, error]}",
            "lost": "{kind: alert.content, path: alerts/lost.j2, required: [run_id]}",
        }
    )

    results = run_notify(spec, {})

    assert {k: r.status.value for k, r in results.items()} == {
        "file": "pass",
        "syntax": "error",
        "typo": "error",
        "gone": "error",
        "tojson": "fail",
        "lost": "error",
    }
    rendered = results["file"].facts["rendered"]
    assert rendered == "Run sample-run_id failed: NCCL timeout\ninstance: sample-instance_id\n"
    syntax = results["syntax"].reason
    assert syntax.startswith("alerts/bad.j2:3: template syntax error: Unexpected end of template")
    assert "'endif'" in syntax and syntax.endswith("add the missing {% end… %} tag")
    assert results["typo"].reason == (
        "alerts/typo.j2:2: template syntax error in 'Error: {{ error }': unexpected '}' "
        "— fix that line of the template"
    )
    assert results["gone"].reason.startswith("alert template alerts/nope.j2 not found")
    assert str(tmp_path) in results["gone"].reason
    tojson = results["tojson"].facts
    assert json.loads(tojson["rendered"]) == {"run_id": "sample-run_id", "error": None}
    assert (tojson["format"], tojson["empty"], tojson["missing"]) == ("json", ["error"], [])
    assert results["lost"].reason.startswith("alerts/lost.j2 includes 'gone.j2', which is not")


def test_alert_content_params_are_checked_at_plan_time(spec_problems) -> None:
    both = "{kind: alert.content, template: hi, path: a.j2}"
    unraw = "{kind: alert.content, template: 'Run {{ run_id }}', required: [run_id]}"

    messages = [str(p) for p in spec_problems(alert_spec({"both": both, "unraw": unraw}))]

    assert any("give exactly one of template (inline text) or path" in m for m in messages)
    assert any("run_id" in m and "spec.yaml:9:" in m for m in messages), messages


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'a' * 10**10 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
    ],
    ids=["repeat", "power", "loops"],
)
def test_a_hostile_alert_template_is_an_error_within_its_budget(run_notify, template) -> None:
    """An alert template is spec text: it renders on the budget every spec template has."""
    raw = "{% raw %}" + template + "{% endraw %}"
    started = time.monotonic()
    results = run_notify(alert_spec({"hostile": f'{{kind: alert.content, template: "{raw}"}}'}), {})
    assert time.monotonic() - started < 10
    assert results["hostile"].status.value == "error"
    assert "OverBudget" in results["hostile"].reason
