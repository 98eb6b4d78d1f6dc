"""`command`: run argv (never through a shell) or a `shell:` string on the target."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pydantic import Field, model_validator

from matrix.probe import OUTPUT_LIMIT, ProbeContext, ProbeParams, probe


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
