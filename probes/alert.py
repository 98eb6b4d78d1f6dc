"""`alert.content`: an alert template rendered with a sample failure, checked for the fields
on-call needs. Runs on the controller, where the pipeline's templates are checked out."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from matrix.probe import ProbeContext, ProbeError, ProbeParams, probe

_BLANK_WORDS = {"", "none", "null", "undefined"}


@probe(
    "alert.content",
    runs_on="controller",
    default_expect={"ok": True},
    facts={
        "ok": "every required field is present and non-empty (and an alert that looks like "
        "JSON parses)",
        "format": "json when the rendered alert parses as JSON, else text",
        "rendered": "the alert as rendered with the sample context, at most `max_chars`",
        "truncated": "the rendered alert was longer than `max_chars`",
        "missing": "required fields the alert does not carry",
        "empty": "required fields that are there but blank: a JSON key with no value, or "
        "a field whose sample value in `context` is blank",
        "problem": "why not ok, e.g. `Alert missing run_id, instance_id`",
    },
)
class AlertContent(ProbeParams):
    """Render an alert template with sample values and check that the fields on-call needs
    (run id, instance, error) come out present and non-empty: an alert that says only
    "training failed" is found before the night it fires."""

    template: str | None = None
    """Inline Jinja template of the alert. In a spec, wrap it in `{% raw %}…{% endraw %}`:
    the spec renders its own templates in params first."""
    path: str | None = None
    """Template file on the controller, relative to the working directory (give `template`
    or `path`); `{% include %}` finds files next to it."""
    context: dict = Field(default_factory=dict)
    """Sample values the template is rendered with; names it uses but this lacks render
    empty."""
    required: list[str] = Field(default_factory=list)
    """Fields the alert must carry. One without a sample value in `context` gets the marker
    `sample-NAME`. A field counts as present when the alert is JSON with a key of that name,
    or when the template renders it: the alert changes when the field's value does (a sample
    value that merely appears in the text does not count)."""
    max_chars: int = Field(4000, ge=0)
    """Characters of the rendered alert kept in `rendered`."""

    @model_validator(mode="after")
    def _one_source(self) -> AlertContent:
        if (self.template is None) == (self.path is None):
            raise ValueError("give exactly one of template (inline text) or path (a file)")
        return self

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        context = dict(self.context)
        for name in self.required:
            context.setdefault(name, f"sample-{name}")
        rendered = self._render(context)
        broken = None
        try:
            document = json.loads(rendered)
        except ValueError as exc:
            document = None
            if rendered.lstrip()[:1] in ("{", "["):
                broken = f"Alert is not valid JSON ({exc}): did a value render empty?"
        is_json = isinstance(document, (dict, list))
        missing, empty = [], []
        for name in self.required:
            values = list(_values_of(document, name)) if is_json else []
            if not values and not self._renders(name, context, rendered):
                missing.append(name)
            elif all(_blank(v) for v in values or [context[name]]):
                empty.append(name)
        problems = []
        if missing:
            problems.append(f"Alert missing {', '.join(missing)}")
        if empty:
            problems.append(f"Alert has empty {', '.join(empty)}")
        if broken:
            problems.append(broken)
        facts: dict[str, Any] = {
            "ok": not problems,
            "format": "json" if is_json else "text",
            "rendered": rendered[: self.max_chars],
            "truncated": len(rendered) > self.max_chars,
            "missing": missing,
            "empty": empty,
        }
        if problems:
            facts["problem"] = "; ".join(problems)
        return facts

    def _renders(self, name: str, context: dict[str, Any], rendered: str) -> bool:
        """Whether the alert shows the field: rendered with another value in its place, the
        alert changes. (A sample value that happens to appear in the text proves nothing: a
        template without `{{ status }}` still says "failed".)"""
        marker = f"matrix-field-{name}-{secrets.token_hex(4)}"
        return self._render({**context, name: marker}) != rendered

    def _render(self, context: dict[str, Any]) -> str:
        """Render in a sandbox where unknown names are empty, the way a lenient alert
        renderer would: a gap then shows up as a missing field, not as a crash. The template
        comes from the spec: it renders on the budget every spec template has."""
        from jinja2 import ChainableUndefined, FileSystemLoader, TemplateError, TemplateNotFound
        from jinja2 import TemplateSyntaxError as Syntax

        from matrix.sandbox import Sandbox, budgeted

        where = "the inline template"
        loader = None
        try:
            if self.path is not None:
                file = Path(self.path).expanduser()
                where = str(file)
                if not file.is_file():
                    raise ProbeError(
                        f"alert template {self.path} not found (relative paths are read from "
                        f"{Path.cwd()}) — fix `path` or run matrix from the right directory"
                    )
                loader = FileSystemLoader(str(file.parent.resolve()))
            env = Sandbox(undefined=ChainableUndefined, loader=loader)
            # `{{ error | tojson }}` of a name the context lacks gives null, not a crash
            env.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _undefined_null}
            if self.path is not None:
                compiled = budgeted(env.get_template, Path(self.path).name)
            else:
                compiled = budgeted(env.from_string, self.template or "")
            return budgeted(compiled.render, context)
        except ProbeError:
            raise
        except Syntax as exc:
            top = self.path is None or exc.name == Path(self.path).name
            name = where if top else exc.filename or exc.name
            message = (exc.message or "").rstrip(".")
            if message.startswith("Unexpected end of template"):  # the block opened earlier
                raise ProbeError(
                    f"{name}:{exc.lineno}: template syntax error: {message} — add the missing "
                    "{% end… %} tag"
                ) from None
            line = (exc.source or "").splitlines()[exc.lineno - 1 : exc.lineno]
            shown = f" in {line[0].strip()!r}" if line else ""
            raise ProbeError(
                f"{name}:{exc.lineno}: template syntax error{shown}: {message} — fix that line "
                "of the template"
            ) from None
        except TemplateError as exc:
            if isinstance(exc, TemplateNotFound):
                raise ProbeError(
                    f"{where} includes {exc.name!r}, which is not next to it — put the file "
                    "beside the template or fix the name"
                ) from None
            raise ProbeError(
                f"{where} could not render: {exc.message} — fix the template or the sample "
                "values in `context`"
            ) from None
        except OSError as exc:
            raise ProbeError(
                f"cannot read alert template {where}: {exc.strerror or exc} — fix `path` "
                "or the file's permissions"
            ) from None
        except Exception as exc:
            raise ProbeError(
                f"{where} failed while rendering: {type(exc).__name__}: {exc} — fix the template "
                "or the sample values in `context`"
            ) from None


def _undefined_null(value: Any) -> None:
    from jinja2 import Undefined

    if isinstance(value, Undefined):
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _values_of(document: Any, key: str) -> Any:
    """Every value stored under `key`, at any depth of a JSON document."""
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                yield value
            yield from _values_of(value, key)
    elif isinstance(document, list):
        for item in document:
            yield from _values_of(item, key)


def _blank(value: Any) -> bool:
    """Empty, whitespace, null, or the words a renderer prints for nothing ("None")."""
    if value is None or value == [] or value == {}:
        return True
    return isinstance(value, str) and value.strip().lower() in _BLANK_WORDS
