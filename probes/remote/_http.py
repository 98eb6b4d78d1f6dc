# The module `_http`, shared by the scripts that speak HTTP from the target (net, metrics):
# requests, TLS, redirects that are followed only where they lead somewhere real, capped
# reads, and a short human cause for a failed connection.
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from _prelude import ObserveError

MAX_REDIRECTS = 10
HEADER_BYTES = 32 << 10  # response header text kept as facts; the rest is marked incomplete


class RedirectRefused(urllib.error.HTTPError):
    """A 3xx that was not followed: a loop, too many hops, or another scheme (file:, ftp:).
    An HTTPError, so a load test counts it by its status; `why` says what was wrong."""

    def __init__(self, url, code, why, headers, fp):
        super().__init__(url, code, why, headers, fp)
        self.why = why


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows http(s) redirects, recording each hop; refuses the rest with the reason."""

    def __init__(self):
        self.hops = []

    def http_error_302(self, req, fp, code, msg, headers):
        """urllib turns a redirect to another scheme into an HTTPError with the 3xx, which
        would read as an answer: refuse it before that."""
        newurl = headers.get("location") or headers.get("uri")
        if newurl:
            target = urllib.parse.urljoin(req.full_url, newurl)
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                why = f"redirected ({code}) to {target}: only http and https redirects are followed"
                raise RedirectRefused(req.full_url, code, why, headers, fp)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_302
    if hasattr(urllib.request.HTTPRedirectHandler, "http_error_308"):  # Python >= 3.11
        http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        seen = [req.full_url if not self.hops else self.hops[0][0]] + [to for _, to in self.hops]
        if target in seen:
            chain = " → ".join([*seen, target])
            why = f"redirects in a loop ({code}): {chain}"
        elif len(self.hops) >= MAX_REDIRECTS:
            why = f"redirected more than {MAX_REDIRECTS} times (last to {target})"
        else:
            self.hops.append((req.full_url, target))
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        raise RedirectRefused(req.full_url, code, why, headers, fp)


class _Kept(urllib.request.HTTPRedirectHandler):
    """follow_redirects: false: the 3xx is the answer (urllib then raises it as an
    HTTPError, which open_url returns)."""

    def http_error_302(self, req, fp, code, msg, headers):
        return None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def why(exc, timeout):
    """A short human cause for a failed connection: "connection refused", "timed out"."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    if isinstance(exc, socket.timeout):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        cause = getattr(exc, "verify_message", None) or exc.reason or exc
        return f"TLS error: {cause} (verify_tls: false accepts self-signed certificates)"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:  # "Connection refused" → "connection refused"
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc)  # as it was raised: it may quote a URL or header that must stay maskable


def ms(started):
    return round((time.perf_counter() - started) * 1000, 2)


def tls(verify):
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


FAILED = (OSError, ValueError, http.client.HTTPException)  # no answer at all


def open_url(params, context):
    """(the response, or the HTTPError that is the server's 4xx/5xx answer, and the redirect
    hops followed). A redirect that is not followed raises RedirectRefused; no answer raises
    one of FAILED."""
    data = params["body"].encode() if params.get("body") is not None else None
    request = urllib.request.Request(
        params["url"], data=data, headers=params.get("headers") or {},
        method=params["method"],
    )  # fmt: skip
    redirects = _Redirects()
    follow = params.get("follow_redirects", True)
    https = urllib.request.HTTPSHandler(context=context)
    opener = urllib.request.build_opener(redirects if follow else _Kept(), https)
    try:
        response = opener.open(request, timeout=params["timeout"])
    except RedirectRefused:
        raise
    except urllib.error.HTTPError as exc:  # 4xx/5xx still answered
        response = exc
    return response, [to for _, to in redirects.hops]


def request_failed(params, exc):
    """The ObserveError for a request that got no usable answer."""
    request = f"{params['method']} {params['url']}"
    if isinstance(exc, RedirectRefused):
        return ObserveError(f"{request} {exc.why}")
    return ObserveError(f"{request} failed: {why(exc, params['timeout'])}")


def header_facts(response):
    """{name: value} with names lower-cased (repeats joined by ", "), at most HEADER_BYTES of
    them, and whether some were left out."""
    headers, size, cut = {}, 0, False
    for name, value in response.headers.items():
        name = name.lower()
        size += len(name) + len(value) + 4
        if size > HEADER_BYTES:
            cut = True
            break
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers, cut
