"""Reporters turn a run into an output. Each listens to the engine and renders the finished Run.

Built-ins are named here by import path so the CLI can offer their options without importing
them; third-party reporters register a `ReporterEntry` in the `matrix.reporters` entry-point
group and get a `--<name> DEST` option the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reporters.base import Reporter

ENTRY_POINT_GROUP = "matrix.reporters"
__all__ = ["Option", "Reporter", "ReporterEntry", "ReporterError", "registry"]


class ReporterError(Exception):
    """A reporter cannot be set up (bad destination, missing setting); a usage error."""


def __getattr__(name: str) -> Any:
    """`from reporters import Reporter` (what plugins write) without importing the results
    model on every start: `matrix --help` needs only the entries below."""
    if name == "Reporter":
        from reporters.base import Reporter

        return Reporter
    raise AttributeError(f"module 'reporters' has no attribute {name!r}")


@dataclass(frozen=True)
class Option:
    """An extra command-line option of one reporter, passed to its factory by `dest`."""

    flag: str
    dest: str
    help: str
    type: Callable[[str], Any] | None = str
    default: Any = None
    metavar: str | None = None


@dataclass(frozen=True)
class ReporterEntry:
    """How a reporter appears on the command line: `--<name> DEST` plus its own options.

    `bare` is the destination when the flag is given alone (`--markdown`); `auto` may turn the
    reporter on when the flag is absent, from the environment (OTEL_EXPORTER_OTLP_ENDPOINT) or
    from its own options (`--github-summary`).
    """

    name: str
    factory: str | Callable[..., Reporter]
    help: str
    metavar: str = "PATH"
    bare: str | None = None
    options: tuple[Option, ...] = ()
    auto: Callable[[Mapping[str, str], Mapping[str, Any]], str | None] | None = None

    def create(self, destination: str, **options: Any) -> Reporter:
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(destination, **options)


MARKDOWN_BUDGET = 1_000_000  # GitHub drops a step summary whole past 1 MiB


def _otlp_configured(environ: Mapping[str, str], _: Mapping[str, Any]) -> str | None:
    keys = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if any(environ.get(key) for key in keys) else None


BUILTIN = (
    ReporterEntry(
        "json",
        "reporters.json_report:JsonReporter",
        "write the full run (results, verdict, score, timings) as JSON",
    ),
    ReporterEntry(
        "junit",
        "reporters.junit:JunitReporter",
        "write JUnit XML (one testsuite per phase) for CI test tabs",
        options=(
            Option(
                "--junit-warnings-fail",
                "warnings_fail",
                "show failed warning checks as JUnit failures (default: skipped, with the "
                "warning as the message, so a CAUTION run publishes without red tests)",
                type=None,
                default=False,
            ),
        ),
    ),
    ReporterEntry(
        "markdown",
        "reporters.markdown:MarkdownReporter",
        "write a Markdown report; with no PATH, append it to $GITHUB_STEP_SUMMARY",
        bare="",
        options=(
            Option(
                "--github-summary",
                "github_summary",
                "append the Markdown report to $GITHUB_STEP_SUMMARY",
                type=None,
                default=False,
            ),
            Option(
                "--markdown-max-chars",
                "max_chars",
                f"byte budget of the Markdown report (default {MARKDOWN_BUDGET}); passing "
                "detail is dropped first, never the verdict or the fixes",
                type=int,
                default=MARKDOWN_BUDGET,
                metavar="N",
            ),
            Option(
                "--markdown-template",
                "template",
                "your own Jinja2 template for the Markdown report (same context)",
                metavar="FILE",
            ),
        ),
        auto=lambda _, options: "" if options.get("github_summary") else None,
    ),
    ReporterEntry(
        "prometheus",
        "reporters.prometheus:PrometheusReporter",
        "write Prometheus metrics (text format): verdict, score, each check's status and "
        "duration; into node_exporter's textfile directory, it is replaced atomically",
    ),
    ReporterEntry(
        "otel",
        "reporters.otel:OtelReporter",
        "export OpenTelemetry traces: a file for OTLP-JSON, or `otlp` to send OTLP/HTTP "
        "(on by default when OTEL_EXPORTER_OTLP_ENDPOINT is set)",
        metavar="PATH|otlp",
        auto=_otlp_configured,
    ),
)


@cache
def registry() -> dict[str, ReporterEntry]:
    """Built-in reporters plus those installed through entry points."""
    from importlib.metadata import entry_points

    found = {entry.name: entry for entry in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        entry = ep.load()
        found[entry.name] = entry
    return found
