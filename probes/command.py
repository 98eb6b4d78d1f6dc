"""`command`: run argv (never through a shell) or a `shell:` string on the target."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import Field, model_validator

from matrix.probe import OUTPUT_LIMIT, ProbeContext, ProbeError, ProbeParams, probe


@probe(
    "command",
    default_expect={"exit_code": 0},
    facts={
        "exit_code": "process exit status (a program that cannot start is an error instead)",
        "stdout": "standard output, decoded as UTF-8 (invalid bytes replaced), stripped",
        "stderr": "standard error, decoded likewise",
        "duration": "seconds the command took",
        "truncated": "true when output beyond 1 MiB per stream was dropped",
        "json": "stdout parsed as JSON, present only when it parses",
        "incomplete": "{stdout, stderr, json: why} for a stream cut at 1 MiB: an `expect` on it "
        "is an error, never judged on part of it",
    },
)
class Command(ProbeParams):
    """Run a program. `argv` never meets a shell; in `shell`, every template value is quoted."""

    shared = False  # a program may act: each check runs its own

    argv: list[str] | None = None
    """Program and arguments, e.g. [nvidia-smi, -L]."""
    shell: str | None = None
    """A /bin/sh command line; `{{ }}` values are shell-quoted automatically."""
    stdin: str | None = None
    """Text sent to the program's standard input."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for the program, e.g. {HF_TOKEN: "{{ secret.HF_TOKEN }}"}: a
    secret belongs here (or in stdin), not in argv or shell, which the host's process list
    shows to every user."""

    @model_validator(mode="after")
    def _one_of(self) -> Command:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("give exactly one of argv (a list) or shell (a string)")
        if self.argv is not None and not self.argv:
            raise ValueError("argv must name a program")
        return self

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        argv = self.argv if self.argv is not None else ["/bin/sh", "-c", self.shell or ""]
        stdin = self.stdin.encode() if self.stdin is not None else None
        done = await ctx.run(argv, input=stdin, env=self.env)
        stdout = done.stdout.decode(errors="replace").strip()
        facts: dict[str, Any] = {
            "exit_code": done.exit_code,
            "stdout": stdout,
            "stderr": done.stderr.decode(errors="replace").strip(),
            "duration": round(done.duration, 4),
            "truncated": done.truncated,
        }
        cut = {
            name: f"{name} was over {OUTPUT_LIMIT >> 20} MiB: only its first MiB was kept"
            for name, data in (("stdout", done.stdout), ("stderr", done.stderr))
            if done.truncated and len(data) >= OUTPUT_LIMIT
        }
        if "stdout" in cut:
            cut["json"] = cut["stdout"]
        elif stdout[:1] in ("{", "[") or stdout in ("true", "false", "null"):
            with contextlib.suppress(ValueError):
                facts["json"] = json.loads(stdout)
        facts["incomplete"] = cut
        return facts


NO_RESULT = (
    'print a JSON object as the last line of stdout: {"ok": true}, or {"ok": false, '
    '"problem": "why"} (docs/probes.md#script)'
)


@probe(
    "script",
    default_expect={"ok": True},
    facts={
        "ok": "the script's own verdict: its result's ok, and false when it exited non-zero",
        "step": "where it got to or stopped, as it said (null when it did not say)",
        "problem": "what went wrong, as it said or as its exit and stderr tell",
        "result": "the whole JSON object it reported, its own fields included",
        "exit_code": "process exit status",
        "stdout": "standard output, stripped",
        "stderr": "standard error, stripped",
        "duration": "seconds the script took",
        "truncated": "true when output beyond 1 MiB per stream was dropped",
        "incomplete": "as for `command`",
    },
)
class Script(Command):
    """A team's script that reports its own result (a pipeline run, a resume, a failure
    injected): the last line of its standard output is a JSON object, `{"ok": true}` or
    `{"ok": false, "problem": "why"}`, with `step` (where it got to) and fields of its own.
    A script that exits 0 without that line is an error ("the script reported no result"):
    `true` is no evidence that a pipeline works. One that exits non-zero without it failed
    (ok false, its stderr's last line as the problem)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        facts = await super().observe(ctx)
        last = facts["stdout"].splitlines()[-1:] if "stdout" not in facts["incomplete"] else []
        try:
            result = json.loads(last[0]) if last else None
        except ValueError:
            result = None
        code, said = facts["exit_code"], facts["stderr"].splitlines()[-1:]
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            if code == 0:
                raise ProbeError(f"the script exited 0 and reported no result: {NO_RESULT}", facts)
            result = {"ok": False, "problem": f"exit {code}" + (f": {said[0]}" if said else "")}
        elif result["ok"] and code != 0:
            result = {**result, "ok": False, "problem": f"it reported ok but exited {code}"}
        return {
            "ok": result["ok"],
            "step": result.get("step"),
            "problem": result.get("problem"),
            "result": result,
            **facts,
        }
