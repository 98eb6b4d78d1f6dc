"""`--markdown [PATH]`: a Markdown report for people — job summaries, PR comments, wikis.

With a PATH the report is written there atomically. With no PATH (or with `--github-summary`)
it is appended to the file named by `$GITHUB_STEP_SUMMARY`, which other steps write to too.

The report is rendered from a Jinja2 template (`reporters/templates/report.md.j2`, or your own
with `--markdown-template FILE`) in an immutable sandbox with strict undefined variables and no
autoescaping; `trim_blocks` and `lstrip_blocks` are on, and your template may include others
from its own folder. Templates see:

    run              the finished Run (read-only): results, phases, order, interrupted, …
    spec_name        the spec's name
    verdict          "READY", "CAUTION" or "BLOCKED"
    banner           the verdict line, e.g. "🔴 DEPLOYMENT BLOCKED: 2 critical issues"; on an
                     interrupted or --fail-fast run with no failures: "⛔ INCOMPLETE: no verdict"
    complete         False when the run was interrupted or stopped early
    notices          sentences that say the run is incomplete (empty list when it is not)
    score            the readiness score, 0–100 (a float)
    counts           {"pass": n, "fail": n, "error": n, "skip": n}
    duration         the run's wall time in seconds
    warnings         the run's warnings (host-key opt-outs, …)
    phases           PhaseScore per phase that applied: id, title, weight, score, passed,
                     total, duration, budget, over_budget
    fixes            failing critical and warning Results in dependency order (their
                     diagnostics may be shortened to fit the budget; the Run is not changed)
    results_by_phase PhaseDetail per phase: phase (a PhaseScore), rows (the Results shown),
                     left_out ({"pass": n, "skip": n, "bad": n}: rows dropped for the budget),
                     filtered (rows filtered out on the command line)
    budget_note      "⚠️ Report trimmed to N bytes: …" when rows were dropped, else None
    max_chars        the byte budget
    compact          True when even the banner and the fix list barely fit: show little else

Filters: `cell` (text from the spec or a probe, shown as typed in table cells and list items:
inline markup and `|` escaped, `&`, `<`, `>` and `\\` as entities, newlines as `<br>`, a zero-width
space after the @ of a mention and the # of a reference), `html` (text inside HTML tags such
as `<summary>`),
`icon` (a Result's status icon), `where` (" [cell] @ target" of a Result), `diagnosis` (a
Result's reason, diagnostic, cause and fix as one safe cell), `seconds` (`x|seconds(2)`),
`mark` (a PhaseScore's mark from its worst outcome), `trouble` (" - 1 critical issue, 2
warnings" of a PhaseScore), `whole` (a score rounded half up, as every format shows it).

Budget: GitHub drops a step summary whole past 1 MiB and PR comments fail past 65,536
characters, so the report is kept to `max_chars` UTF-8 bytes. Over it, passing rows are
dropped from the details first, then skipped rows, then failing rows (the fix list keeps
them), then the end is cut at a line with a visible note. The verdict and the fix list are
never dropped; if even they do not fit, the phase table goes and each fix's diagnostic is
shortened. Appended to a step summary, the budget also leaves room for what is already there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from matrix.results import PhaseScore, Result, Run, SkipKind, Status, Verdict, span, whole
from reporters import ReporterError
from reporters.base import (
    Reporter,
    append_report,
    banner,
    further_reason,
    icon,
    phase_mark,
    phase_trouble,
    plain,
    where,
    write_report,
)

GITHUB_SUMMARY_LIMIT = 1024 * 1024  # bytes; GitHub drops a bigger step summary whole
MARKS = {Verdict.ready: "🟢", Verdict.caution: "🟡", Verdict.blocked: "🔴"}
TRIM_NOTE = "> ⚠️ Report trimmed to {budget} bytes: {what}"
MARK = "\U0010fffd"  # private use: tags essential text while rendering, then removed


# Inline Markdown a cell's text must not start: emphasis, code, links, strikethrough, cells.
_INLINE = re.compile(r"([`*_\[\]~|])")
# What GitHub turns into a notification or a link: @mentions, #123 and owner/repo#123.
_MENTION = re.compile(r"([@#])(?=\w)")
# What would open a block (list, heading, fence, rule) at the start of a list item's text.
_BLOCK_START = re.compile(
    r"^(?:([-+*]|#{1,6})(?=\s|$)"  # a bullet or a heading
    r"|\d{1,9}(?=[.)](?:\s|$))"  # an ordered list: the backslash goes before its . or )
    r"|```|~~~"  # a code fence
    r"|[-*_](?=(?:[ \t]*[-*_]){2,}[ \t]*$))"  # a thematic break
)


def _entities(value: Any) -> str:
    """Text with no HTML left in it, no terminal escape codes or control characters, and no
    @mention or #reference GitHub would act on (a zero-width space follows the @ or #)."""
    text = plain("" if value is None else str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("\\1\u200b", text)


def cell(value: Any) -> str:
    """Text from a spec or a probe, safe in a table cell or a list item: no HTML, no column
    breaks, one line, and shown as typed — `[x](http://…)` is no link, `__init__` not bold."""
    text = _entities(value)
    mark = MARK if text.startswith(MARK) else ""  # see _marked
    text = text.removeprefix(mark).strip("\n")
    # A backslash is an entity, so none can escape the escapes added here.
    text = _INLINE.sub(r"\\\1", text.replace("\\", "&#92;"))
    if found := _BLOCK_START.match(text):
        at = found.end() if text[: found.end()].isdigit() else 0
        text = text[:at] + "\\" + text[at:]
    return mark + re.sub(r"\r\n|\r|\n", "<br>", text)


def html(value: Any) -> str:
    """Text inside an HTML element (`<summary>`): entities, one line."""
    return re.sub(r"\s*[\r\n]+\s*", " ", _entities(value).strip())


def diagnosis(result: Result) -> str:
    """The diagnostic column of a result, Markdown-safe: why it was skipped, or what is wrong,
    its cause and its fix."""
    if result.status is Status.skipped:
        return cell(result.why)
    if not result.bad:
        return ""
    parts = [cell(result.diagnostic)] if result.diagnostic else []
    further = further_reason(result)
    if further:
        parts.append("↳ " + cell(further))
    if result.fix:
        parts.append("**Fix:** " + cell(result.fix))
    return "<br>".join(parts)


@dataclass
class PhaseDetail:
    phase: PhaseScore
    rows: list[Result]
    left_out: dict[str, int] = field(default_factory=lambda: {"pass": 0, "skip": 0, "bad": 0})
    filtered: int = 0


def notices(run: Run) -> list[str]:
    finished, total = run.finished(), len(run.results)
    found = []
    if run.interrupted:
        found.append(f"⛔ **Interrupted**: {finished} of {total} tasks finished; partial results.")
    if run.stopped_early:
        found.append(
            f"⏹ **--fail-fast**: stopped at the first critical failure "
            f"({finished} of {total} tasks finished)."
        )
    if found and run.verdict is Verdict.incomplete:
        found.append("No failures among the finished tasks, but the run is incomplete: no verdict.")
    return found


def _details(run: Run, drop: set[str]) -> list[PhaseDetail]:
    rank = {task_id: i for i, task_id in enumerate(run.order)}
    ordered = sorted(run.results, key=lambda r: rank.get(r.task_id, len(rank)))
    details = []
    for phase in run.phase_scores():
        detail = PhaseDetail(phase, [])
        for result in ordered:
            if result.phase_id != phase.id:
                continue
            if result.skip is not None and result.skip.kind is SkipKind.filtered:
                detail.filtered += 1
                continue
            kind = "bad" if result.bad else result.status.value
            if kind in drop:
                detail.left_out[kind] += 1
            else:
                detail.rows.append(result)
        if detail.rows or any(detail.left_out.values()):
            details.append(detail)
    return details


def _shorten(text: str | None, limit: int | None) -> str | None:
    if text is None or limit is None or len(text) <= limit:
        return text
    return (text[:limit].rstrip() + " …").lstrip()


@dataclass
class Document:
    """One rendering, and how much of its start holds the banner and the fix list."""

    text: str
    essential_end: int  # characters
    note: str | None = None  # the budget note the template rendered, if any


class MarkdownReporter(Reporter):
    def __init__(
        self,
        destination: str,
        github_summary: bool = False,
        max_chars: int = 1_000_000,
        template: str | None = None,
    ):
        self.path = Path(destination) if destination else None
        self.summary: Path | None = None
        if github_summary or not destination:
            where = os.environ.get("GITHUB_STEP_SUMMARY")
            if not where:
                raise ReporterError(
                    "--markdown with no PATH (or --github-summary) appends to "
                    "$GITHUB_STEP_SUMMARY, which is not set: pass a path "
                    "(--markdown report.md) or set GITHUB_STEP_SUMMARY"
                )
            self.summary = Path(where)
        if max_chars < 1:
            raise ReporterError(f"--markdown-max-chars must be positive, not {max_chars}")
        self.max_chars = max_chars
        self.template = _load_template(template)

    def finish(self, run: Run) -> None:
        if self.path is not None:
            write_report(self.path, self.render(run, self.max_chars))
        if self.summary is not None:
            before = self.summary.stat().st_size if self.summary.exists() else 0
            budget = min(self.max_chars, GITHUB_SUMMARY_LIMIT - before - 2)
            text = self.render(run, max(budget, 1))
            append_report(self.summary, ("\n" if before else "") + text)

    # -- rendering within the budget ------------------------------------------------------

    def render(self, run: Run, budget: int) -> str:
        """The report in at most `budget` UTF-8 bytes whenever the verdict and fixes fit."""
        drops: list[set[str]] = [set(), {"pass"}, {"pass", "skip"}, {"pass", "skip", "bad"}]
        for drop in drops:
            doc = self._render(run, budget, drop)
            if _size(doc.text) <= budget:
                return doc.text
        note = self._note(run, budget, drop, cut=True)
        if (cut := _cut_end(doc, budget, note)) is not None:
            return cut
        # Still over: leave out the phase table (`compact`), then shorten each fix's diagnostic
        # to the longest length that fits (found by bisection).
        doc = self._render(run, budget, drop, compact=True)
        if _size(doc.text) <= budget or (cut := _cut_end(doc, budget, note)) is not None:
            return cut or doc.text
        note = self._note(run, budget, drop, cut=True, shortened=True)

        def attempt(limit: int) -> str | None:
            doc = self._render(run, budget, drop, limit, compact=True)
            return doc.text if _size(doc.text) <= budget else _cut_end(doc, budget, note)

        fitted, low = None, 0
        high = max((len(r.diagnostic or r.reason or "") for r in run.fixes()), default=0) - 1
        while low <= high:
            middle = (low + high) // 2
            if (text := attempt(middle)) is not None:
                fitted, low = text, middle + 1
            else:
                high = middle - 1
        if fitted is not None:
            return fitted
        # The verdict and the fix list never go, even over the budget: keep only them.
        doc = self._render(run, budget, drop, 0, compact=True)
        return _cut_end(doc, budget, note, force=True) or doc.text

    def _note(
        self, run: Run, budget: int, drop: set[str], *, cut: bool = False, shortened: bool = False
    ) -> str:
        """The visible `> ⚠️ Report trimmed to N bytes: …` line: what was left out."""
        left = {"pass": 0, "skip": 0, "bad": 0}
        for detail in _details(run, drop):
            for kind, count in detail.left_out.items():
                left[kind] += count
        parts = [
            f"{left[kind]} {word}"
            for kind, word in (("pass", "passing"), ("skip", "skipped"), ("bad", "failing"))
            if left[kind]
        ]
        what = []
        if parts:
            rows = "row" if sum(left.values()) == 1 else "rows"
            listed = " and ".join([", ".join(parts[:-1]), parts[-1]] if parts[:-1] else parts)
            what.append(f"{listed} {rows} left out of the details")
        if shortened:
            what.append("fix diagnostics shortened")
        if cut:
            what.append("the end cut off")
        return TRIM_NOTE.format(budget=budget, what="; ".join(what) + ".")

    def _render(
        self,
        run: Run,
        budget: int,
        drop: set[str],
        limit: int | None = None,
        *,
        compact: bool = False,
    ) -> Document:
        fixes = [
            replace(
                r,
                title=_marked(r.title),
                diagnostic=_shorten(r.diagnostic, limit),
                reason=_shorten(r.reason, limit),
                fix=_marked(r.fix),
            )
            for r in run.fixes()
        ]
        note = self._note(run, budget, drop, shortened=limit is not None) if drop else None
        context = {
            "run": run,
            "spec_name": run.spec_name,
            "verdict": run.verdict.value,
            "banner": _marked(banner(run, MARKS, "⛔ INCOMPLETE: no verdict")),
            "complete": not (run.interrupted or run.stopped_early),
            "notices": [_marked(line) for line in notices(run)],
            "score": run.score,
            "counts": run.counts(),
            "duration": run.duration,
            "warnings": list(run.warnings),
            "phases": [p for p in run.phase_scores() if p.total],
            "fixes": fixes,
            "results_by_phase": _details(run, drop),
            "budget_note": note,
            "max_chars": budget,
            "compact": compact,
        }
        try:
            marked = self.template.render(context)
        except Exception as exc:  # a user's template: any error in it is theirs to fix
            raise ReporterError(f"the Markdown template failed: {exc}") from exc
        # The banner and the fix list end with the paragraph or list that holds the last mark.
        last = marked.rfind(MARK)
        essential = 0
        if last >= 0:
            block_end = marked.find("\n\n", last)
            essential = (len(marked) if block_end < 0 else block_end + 1) - marked.count(MARK)
        text = marked.replace(MARK, "")
        if note and note not in text:
            text = text.rstrip("\n") + "\n\n" + note
        return Document(text.rstrip("\n") + "\n", essential, note)


def _marked(text: str | None) -> str | None:
    """Tag the banner and the fix list (titles and actions) so that a cut at the end can stay
    clear of them; diagnostics stay as they are, so templates can compare them."""
    return None if text is None else MARK + text


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut_end(doc: Document, budget: int, note: str, *, force: bool = False) -> str | None:
    """Cut the text at a line so that it, closing tags and the note fit in the budget.

    None when the cut would reach into the banner or the fix list; with `force`, cut right
    after them whatever the size.
    """
    tail = "\n" + note + "\n"
    closing = len("```\n") + len("\n</details>\n") * doc.text.count("<details")
    room = budget - _size(tail) - closing
    if force:
        kept = doc.text[: doc.essential_end]
    elif room < 0:
        return None
    else:
        kept = doc.text.encode("utf-8")[:room].decode("utf-8", errors="ignore")
        kept = kept[: kept.rfind("\n") + 1]
        if len(kept) < doc.essential_end:
            return None
    if doc.note:  # the cut's own note says it all
        kept = kept.replace(doc.note + "\n", "")
    if sum(line.startswith("```") for line in kept.splitlines()) % 2:
        kept += "```\n"
    opened = kept.count("<details") - kept.count("</details>")
    return kept.rstrip("\n") + "\n" + "\n</details>\n" * max(opened, 0) + tail


def _load_template(path: str | None) -> Any:
    from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if path is None:
        from importlib.resources import files

        source = files("reporters").joinpath("templates", "report.md.j2").read_text("utf-8")
        loader = None
        name = "report.md.j2"
    else:
        file = Path(path)
        try:
            source = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReporterError(f"cannot read --markdown-template {path}: {exc}") from exc
        loader = FileSystemLoader(str(file.resolve().parent))
        name = str(file)
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        cell=cell,
        html=html,
        diagnosis=diagnosis,
        seconds=span,
        where=where,
        icon=_icon,
        mark=_mark,
        trouble=phase_trouble,
        whole=whole,
    )
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ReporterError(f"{name}: invalid Markdown template: {exc}") from exc


def _icon(result: Result) -> str:
    return icon(result).strip()


def _mark(phase: PhaseScore) -> str:
    return phase_mark(phase).strip()
