"""Acme's probe kinds: `acme.ulimit` (on the target) and `acme.git_clean` (on the controller).

matrix imports this module to list and validate kinds, so it imports only pydantic and
matrix.probe at module level; anything heavy would belong inside `observe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from matrix.probe import ProbeContext, ProbeError, ProbeParams, ScriptProbe, probe

# A path ending in .py: matrix reads the file and sends its text to the target.
REMOTE = Path(__file__).resolve().parent / "remote"
LISTED = 20  # changed paths kept in the facts; `count` has the full number


@probe(
    "acme.ulimit",
    default_expect={"ok": True},
    facts={
        "resource": "the limit read, as given",
        "soft": "soft limit, the one enforced (null: unlimited)",
        "hard": "hard limit, the most the soft one can be raised to without root (null: unlimited)",
        "at_least": "the floor asked for (null: unlimited)",
        "ok": "the soft limit meets `at_least`",
        "raisable": "the hard limit meets `at_least`, so `ulimit -S` in the launch script is "
        "enough; false means limits.conf or the service unit has to change",
    },
)
class Ulimit(ScriptProbe):
    """A resource limit (open files by default) of a new process on the target.

    Data loaders with many workers die mid-epoch with `Too many open files` when the soft
    limit is low. The limit read is the one a fresh process started by matrix gets (on an SSH
    host: a new SSH session), which is what a launch script started the same way inherits."""

    script = str(REMOTE / "ulimit.py")

    resource: Literal["nofile", "nproc", "memlock", "stack", "core"] = "nofile"
    """Which limit: nofile (open files), nproc (processes), memlock (locked memory, bytes;
    RDMA wants it unlimited), stack (bytes), core (core file size, bytes)."""
    at_least: int | None = Field(1024, ge=0)
    """Lowest acceptable soft limit; null asks for unlimited."""


@probe(
    "acme.git_clean",
    runs_on="controller",
    default_expect={"clean": True},
    facts={
        "path": "the working tree, as given",
        "branch": "checked-out branch (null when HEAD is detached)",
        "clean": "no staged, unstaged or (unless `untracked: false`) untracked changes",
        "count": "number of changed paths",
        "changed": f"the first {LISTED} changed paths, e.g. `M train.py`",
    },
)
class GitClean(ProbeParams):
    """The controller's git checkout has no uncommitted changes.

    A run launched from a dirty tree cannot be traced back to a commit. A path that is not a
    git repository, or a controller without git, is an error (could not observe), not a
    failure."""

    path: str = "."
    """Working tree to inspect, relative to where matrix runs."""
    untracked: bool = True
    """Count untracked files as changes (false: only tracked files matter)."""

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        # --no-optional-locks: a read-only look must not take index.lock from an editor's git.
        argv = ["git", "--no-optional-locks", "-C", self.path, "status", "--porcelain", "-b"]
        if not self.untracked:
            argv.append("--untracked-files=no")
        done = await ctx.run(argv)  # a missing git is already a ProbeError from the target
        if done.exit_code != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            why = said[-1] if said else f"exit status {done.exit_code}"
            raise ProbeError(f"git status in {self.path} failed: {why}")
        lines = done.stdout.decode(errors="replace").splitlines()
        changed = [line[:2].strip() + " " + line[3:] for line in lines if line[:2] != "##"]
        return {
            "path": self.path,
            "branch": _branch(lines[0] if lines else ""),
            "clean": not changed,
            "count": len(changed),
            "changed": changed[:LISTED],
        }


def _branch(header: str) -> str | None:
    """`## main...origin/main [ahead 1]`, `## No commits yet on main` (git < 2.28: `Initial
    commit on main`), `## HEAD (no branch)`."""
    if not header.startswith("## ") or header.startswith("## HEAD (no branch)"):
        return None
    text = header[3:].removeprefix("No commits yet on ").removeprefix("Initial commit on ")
    return text.split("...")[0].split(" ")[0]
