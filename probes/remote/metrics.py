# prometheus.metrics: scrape an exporter's /metrics from the target and read it as it
# streams in, line by line, in the Prometheus text format (0.0.4): a 100k-line page costs a
# line of memory, and only what the facts keep travels back.
import re
import time

from _http import FAILED, ms, open_url, request_failed, tls
from _prelude import ObserveError

KEPT_VALUES = 2000  # sample values kept as facts, required metrics' first
KEPT_FAMILIES = 4000
LISTED = 100  # names listed in without_help and untyped
LINE_BYTES = 1 << 16
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
HEAD = re.compile(rf"({NAME})\s*")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*(,|(?=\}))')
COMMENT = re.compile(r"#[ \t]+(HELP|TYPE)[ \t]+([^ \t]+)(?:[ \t]+(.*))?")
TAIL = re.compile(r"\s*(\S+)(?:\s+(-?\d+))?\s*")
ESCAPES = re.compile(r'\\([\\"n])')  # in a label value; HELP escapes only \\ and \n
SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "summary": ("", "_count", "_sum"),
    "histogram": ("_count", "_sum", "_bucket"),
}
TYPES = ("counter", "gauge", "summary", "histogram", "untyped")


def _unescape(text, quotes=True):
    def one(found):
        if found[1] == '"' and not quotes:
            return found[0]
        return "\n" if found[1] == "n" else found[1]

    return ESCAPES.sub(one, text)


def _sample(text):
    """(name, labels, value) of a sample line: name{label="value",...} value [timestamp]."""
    head = HEAD.match(text)
    if not head:
        raise ValueError("not a sample (name{labels} value [timestamp])")
    name, at, labels = head[1], head.end(), {}
    if text.startswith("{", at):
        at += 1
        while not text.startswith("}", at):
            found = LABEL.match(text, at)
            if not found:
                raise ValueError(f'labels are not name="value" pairs: {text[at - 1 :][:80]}')
            if found[1] in labels:
                raise ValueError(f"label {found[1]} appears twice")
            labels[found[1]] = _unescape(found[2])
            at = found.end()
        at += 1
    tail = TAIL.fullmatch(text, at)
    if not tail:
        raise ValueError("not a sample (name{labels} value [timestamp])")
    return name, labels, _value(tail[1])


def _value(text):
    try:
        if "_" not in text:
            return float(text)
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a number")


def sample_key(name, labels):
    """`name` for a sample without labels, else `name{a="1",b="2"}` (labels sorted)."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Page:
    """What a metrics page says, read a line at a time."""

    def __init__(self, required):
        self.required = set(required)
        self.families, self.values = {}, {}
        self.current, self.allowed = None, ()
        self.samples = self.dropped_values = self.dropped_families = 0

    def _family(self, name):
        family = self.families.get(name)
        if family is None:
            if len(self.families) >= KEPT_FAMILIES:
                self.dropped_families += 1
                return {"type": "unknown", "help": "", "samples": 0}
            family = self.families[name] = {"type": "unknown", "help": "", "samples": 0}
        return family

    def _declare(self, name, kind, text):
        """A HELP or TYPE line: the family it opens (a counter `x_total` is family `x`)."""
        if self.current is None or self.current[0] != name:
            self.current, self.allowed = (name, name), (name,)
        family = self._family(self.current[1])
        if kind == "HELP":
            family["help"] = _unescape(text, quotes=False)
            return
        if text not in TYPES:
            raise ValueError(f"unknown type {text!r} (expected one of {', '.join(TYPES)})")
        family["type"] = "unknown" if text == "untyped" else text
        self.allowed = tuple(name + suffix for suffix in SUFFIXES.get(text, ("",)))
        if text == "counter" and name.endswith("_total"):
            self.families.pop(self.current[1], None)
            self.current = (name, name[: -len("_total")])
            self.families[self.current[1]] = family

    def line(self, text):
        text = text.strip()
        if not text:
            return
        if text.startswith("#"):
            found = COMMENT.fullmatch(text)
            if found:  # any other comment is only a comment
                if not re.fullmatch(NAME, found[2]):
                    raise ValueError(f"{found[2]!r} is not a metric name")
                if found[1] == "TYPE" and not found[3]:
                    raise ValueError(f"TYPE of {found[2]} names no type")
                self._declare(found[2], found[1], found[3] or "")
            return
        name, labels, value = _sample(text)
        self.samples += 1
        if name in self.allowed:
            family_name = self.current[1]
        else:  # a sample without a declaration is a family of its own, untyped
            family_name, self.current, self.allowed = name, None, ()
        self._family(family_name)["samples"] += 1
        wanted = name in self.required or family_name in self.required
        room = len(self.values) < (KEPT_VALUES if wanted else KEPT_VALUES // 2)
        if room:
            self.values[sample_key(name, labels)] = value
        else:
            self.dropped_values += 1

    def facts(self):
        names = set(self.families) | {key.partition("{")[0] for key in self.values}
        without = sorted(name for name, f in self.families.items() if not f["help"])
        untyped = sorted(name for name, f in self.families.items() if f["type"] == "unknown")
        incomplete = {}
        if self.dropped_values:
            incomplete["values"] = (
                f"the page has {self.samples} samples: values keeps those of the metrics in "
                f"`required` and {KEPT_VALUES // 2} others — name the metric in `required`"
            )
        if self.dropped_families:
            incomplete["families"] = (
                f"the page has over {KEPT_FAMILIES} metric families: the rest are counted in "
                "`samples` only"
            )
        return {
            "families": self.families,
            "values": self.values,
            "samples": self.samples,
            "missing": sorted(name for name in self.required if name not in names),
            "without_help": without[:LISTED],
            "without_help_count": len(without),
            "untyped": untyped[:LISTED],
            "untyped_count": len(untyped),
            "incomplete": incomplete,
        }


def observe(params):
    started = time.perf_counter()
    limit, url = params["max_bytes"], params["url"]
    page, number, read = Page(params["required"]), 0, 0
    try:
        response, _ = open_url(params, tls(params["verify_tls"]))
        with response:
            status = response.getcode()
            while True:
                line = response.readline(LINE_BYTES + 1)
                if not line:
                    break
                number, read = number + 1, read + len(line)
                if read > limit:
                    raise ObserveError(
                        f"{url} answered more than {limit} bytes of metrics (max_bytes): raise "
                        "max_bytes, or drop series from the exporter"
                    )
                if status >= 300:
                    continue  # an error page: its status says it all
                if len(line) > LINE_BYTES:
                    raise ObserveError(f"line {number} of {url} is over {LINE_BYTES} bytes")
                try:
                    page.line(line.decode("utf-8", "replace"))
                except ValueError as exc:
                    shown = line.decode("utf-8", "replace").strip()[:120]
                    raise ObserveError(
                        f"{url} answered HTTP {status} with a body that is not the Prometheus "
                        f"text format: line {number}: {exc}: {shown!r} — check the exporter "
                        f"(curl {url})"
                    ) from None
    except FAILED as exc:
        raise request_failed(params, exc) from None
    return {"url": url, "status": status, "bytes": read, "lines": number,
            "latency_ms": ms(started), **page.facts()}  # fmt: skip
