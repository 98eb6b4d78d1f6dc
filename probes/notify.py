"""`notify.webhook`: the alerting path, checked before a run needs it.

It runs on the controller. A webhook URL is a credential (whoever has it can post), so it
must come from a secret and never appears in a fact or an error: messages name the host only.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from matrix.probe import ProbeContext, ProbeError, ProbeParams, probe

if TYPE_CHECKING:
    import urllib.request

# What Slack's incoming-webhook error bodies mean and what to do about each
# (https://api.slack.com/messaging/webhooks#handling_errors).
SLACK_ERRORS = {
    "invalid_payload": "Slack could not read the message (malformed JSON or a bad field) — "
    "check `payload`: it needs a non-empty `text` or valid `blocks`",
    "invalid_token": "the token in the webhook URL is no longer valid (the webhook was "
    "revoked or the app uninstalled) — create a new incoming webhook and update the secret",
    "no_service": "the webhook was removed or the URL is wrong — create a new incoming "
    "webhook and update the secret",
    "no_service_id": "the webhook URL is incomplete (no service id) — copy the whole URL "
    "from the app's Incoming Webhooks page into the secret",
    "no_team": "the webhook URL names no workspace (it is cut short) — copy the whole URL "
    "from the app's Incoming Webhooks page into the secret",
    "channel_not_found": "the webhook's channel no longer exists or the app lost access to "
    "it — create a new incoming webhook for an existing channel and update the secret",
    "channel_is_archived": "the webhook's channel is archived — unarchive it, or create a "
    "new incoming webhook for an active channel and update the secret",
    "no_text": "the message has no text — set `message`, or give `payload` a non-empty "
    "`text` or `blocks`",
    "action_prohibited": "a workspace admin restricted posting to this channel — ask an "
    "admin to allow the app, or create the webhook for another channel",
    "posting_to_general_channel_denied": "only admins may post to this channel (#general) — "
    "create the webhook for another channel, or ask an admin to allow posting",
    "user_not_found": "the user the payload addresses (a `channel: @user` override) does not "
    "exist — remove the override or fix the user name",
    "team_disabled": "the Slack workspace is disabled or deleted — point the secret at a "
    "webhook of an active workspace",
    "too_many_attachments": "the message has more than 100 attachments — send fewer",
}
_STATUS_HINTS = {
    401: "the webhook wants credentials — add them under `headers` (from a secret)",
    403: "the webhook refused the request — check its token or permissions",
    404: "no webhook at this URL — it was removed or the URL is wrong; update the secret",
    410: "the webhook is gone — create a new one and update the secret",
    413: "the message is too large — shorten `message` or `payload`",
    429: "rate limited — the service takes only so many messages a second; retry later",
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _is_slack(host: str, path: str) -> bool:
    return host == "hooks.slack.com" or path.startswith("/services/")


@probe(
    "notify.webhook",
    runs_on="controller",
    default_expect={"ok": True},
    facts={
        "ok": "the message was delivered: a 2xx answer, and for Slack the body `ok`; on a dry "
        "run, the same as `valid`",
        "sent": "a request went out (false on a dry run or when the message is invalid)",
        "dry_run": "`dry_run` as given",
        "valid": "URL and message are well-formed (Slack: non-empty `text` or `blocks`)",
        "problem": "why not valid, e.g. `Slack message has neither text nor blocks`",
        "service": "slack or generic, as resolved from `service`",
        "host": "host (and port) the webhook lives on; the rest of the URL is never shown",
        "payload": "the JSON body sent, or that would be sent on a dry run",
        "bytes": "size of the JSON body in bytes",
        "status": "HTTP status code of the answer",
        "latency_ms": "milliseconds from request to the end of the (capped) answer",
        "body": "answer body as UTF-8 text, at most `max_bytes`",
        "truncated": "the answer was longer than `max_bytes`",
        "error": "why not ok, in words, e.g. `no_service: the webhook was removed or the URL "
        "is wrong — create a new incoming webhook and update the secret`",
    },
)
class Webhook(ProbeParams):
    """POST a test message to a webhook (Slack-compatible JSON by default) whose URL comes
    from a secret: proves the alert channel works before a run depends on it. No answer at all
    (refused, DNS, TLS, timeout) is an error naming the cause and the host, never the URL."""

    secret_fields: ClassVar[tuple[str, ...]] = ("url",)
    shared = False  # each check sends its own message

    url: str
    """Webhook URL, http:// or https://; must be a secret reference, `"{{ secret.NAME }}"` or
    `"{{ secret[vars.name] }}"`, with NAME listed under `secrets:`."""
    message: str = "matrix pre-flight: test message"
    """Text of the test message; the body sent is `{"text": message}` unless `payload` is
    given."""
    payload: dict | None = None
    """JSON body to send instead of `{"text": message}` (templates in it are rendered like
    any param), e.g. Slack `blocks` or another service's fields."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra request headers, e.g. an Authorization header from a secret; Content-Type is
    application/json unless set here."""
    service: Literal["auto", "slack", "generic"] = "auto"
    """slack: the answer must be `ok` and Slack's error words are explained; generic: any
    2xx answer is ok; auto: slack when the host is hooks.slack.com or the path starts with
    /services/."""
    timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the connection and for each read of the answer."""
    dry_run: bool = False
    """Check the URL and the message without sending anything."""
    max_bytes: int = Field(4096, ge=0)
    """Answer body bytes kept in `body`; the rest is not read."""

    @field_validator("payload")
    @classmethod
    def _json_payload(cls, payload: dict | None) -> dict | None:
        if payload is None:
            return None
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"payload must be plain JSON (strings, numbers, booleans, lists, maps): {exc}; "
                "quote dates and times so YAML keeps them as strings"
            ) from None
        return payload

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} has a line break in its value; remove it")
        return headers

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        import anyio

        parts = urlsplit(self.url.strip())
        host = _host(parts)
        service = self.service
        if service == "auto":
            service = "slack" if _is_slack(parts.hostname or "", parts.path) else "generic"
        payload = self.payload if self.payload is not None else {"text": self.message}
        data = json.dumps(payload, ensure_ascii=False).encode()
        problem = _url_problem(self.url, parts) or (
            _slack_problem(payload) if service == "slack" else None
        )
        facts: dict[str, Any] = {
            "dry_run": self.dry_run,
            "service": service,
            "host": host,
            "payload": payload,
            "bytes": len(data),
            "valid": problem is None,
            "sent": False,
        }
        if problem is not None:
            return {**facts, "ok": False, "problem": problem}
        if self.dry_run:
            return {**facts, "ok": True}
        answer = await anyio.to_thread.run_sync(self._post, data, abandon_on_cancel=True)
        status, reason, body, truncated, latency = answer
        text = self._hide(body[: self.max_bytes].decode("utf-8", "replace"))
        ok, error = _verdict(service, status, reason, text)
        facts.update(
            sent=True,
            status=status,
            ok=ok,
            latency_ms=latency,
            body=text,
            truncated=truncated,
        )
        if error:
            facts["error"] = error
        return facts

    def _post(self, data: bytes) -> tuple[int, str, bytes, bool, float]:
        """The blocking request, run in a worker thread; no answer at all is a ProbeError."""
        import http.client
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json; charset=utf-8"}
        headers["User-Agent"] = "matrix-preflight"
        headers.update(self.headers)
        request = urllib.request.Request(self.url.strip(), data=data, headers=headers)
        opener = urllib.request.build_opener(_no_redirect())
        started = time.perf_counter()
        try:
            try:
                response = opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:  # 3xx/4xx/5xx answered: facts, not errors
                response = exc
            with response:
                body = response.read(self.max_bytes + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            where = _host(urlsplit(self.url.strip()))
            why = self._hide(_why(exc, self.timeout))
            raise ProbeError(
                f"POST to the webhook at {where} (rest of the URL hidden) failed: {why}",
                facts={"sent": False, "host": where},
            ) from None
        latency = round((time.perf_counter() - started) * 1000, 2)
        reason = str(getattr(response, "reason", "") or "")
        return response.status, reason, body[: self.max_bytes], len(body) > self.max_bytes, latency

    def _hide(self, text: str) -> str:
        """Mask the URL, its path and its query wherever an answer or an exception echoes
        them: the token of most webhooks is in one of those."""
        url = self.url.strip()
        parts = urlsplit(url)
        for secret in (url, parts.path if len(parts.path) > 1 else "", parts.query):
            if secret:
                text = text.replace(secret, "***")
        return text


def _host(parts: Any) -> str:
    """host[:port] without user info: safe to show, enough to tell which service failed."""
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{host}:{port}" if port else host


def _url_problem(url: str, parts: Any) -> str | None:
    """Why the URL cannot be a webhook, without quoting any of it."""
    hidden = "check the secret's value (not shown here)"
    if not url.strip():
        return "the webhook URL is empty — set the secret to the webhook's URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the webhook URL is not an http:// or https:// URL with a host — {hidden}"
    if any(c.isspace() or ord(c) < 32 for c in url.strip()):
        return f"the webhook URL contains spaces or control characters — {hidden}"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"the webhook URL has an invalid port — {hidden}"
    if parts.hostname == "hooks.slack.com" and parts.scheme != "https":
        return "Slack webhooks need https:// — fix the secret's value"
    return None


def _slack_problem(payload: dict) -> str | None:
    text, blocks = payload.get("text"), payload.get("blocks")
    if isinstance(text, str) and text.strip():
        return None
    if isinstance(blocks, list) and blocks:
        return None
    return "Slack message has neither text nor blocks — set `message` or payload `text`/`blocks`"


def _verdict(service: str, status: int, reason: str, body: str) -> tuple[bool, str | None]:
    """(ok, error in words) for an answer."""
    word = _slack_word(body)
    if 200 <= status < 300:
        if service != "slack" or word == "ok":
            return True, None
        if word in SLACK_ERRORS:
            return False, f"{word}: {SLACK_ERRORS[word]}"
        return False, (
            f"the webhook answered {status} but not `ok` (body: {_snippet(body)}) — it may not "
            "be a Slack incoming webhook; set `service: generic` if it is another service"
        )
    if word in SLACK_ERRORS:
        return False, f"{word}: {SLACK_ERRORS[word]}"
    said = f"the webhook answered {status} {reason}".rstrip()
    if body.strip():
        said += f" ({_snippet(body)})"
    if 300 <= status < 400:
        return False, f"{said} — it redirects elsewhere; put the final URL in the secret"
    hint = _STATUS_HINTS.get(status) or (
        "the service failed — retry later or check its status page"
        if status >= 500
        else "check the URL and the payload"
    )
    return False, f"{said} — {hint}"


def _slack_word(body: str) -> str:
    """Slack answers a bare word (`ok`, `no_service`) or, for some hooks, JSON {ok, error}."""
    text = body.strip()
    if text.startswith("{"):
        try:
            reply = json.loads(text)
        except ValueError:
            return text
        if isinstance(reply, dict):
            if reply.get("ok") is True:
                return "ok"
            if isinstance(reply.get("error"), str):
                return reply["error"]
    return text


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _why(exc: BaseException, timeout: float) -> str:
    """A short human cause for a request that got no answer: "connection refused", …"""
    import socket
    import ssl
    import urllib.error

    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g}s — the webhook did not answer; check the network"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror}) — check DNS or the URL in the secret"
    if isinstance(exc, ssl.SSLError):
        cause = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
        return (
            f"TLS error: {cause} — check the system's CA certificates or a TLS-intercepting proxy"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused — nothing listens there; check the URL in the secret"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _no_redirect() -> urllib.request.BaseHandler:
    """A redirected POST would arrive as a GET without the message: report the 3xx instead."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return NoRedirect()
