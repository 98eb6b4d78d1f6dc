"""`matrix init`: a commented starter spec, or the phases of an existing spec to start from.

A starter must validate and run as written, so `--from` copies the chosen phases' text (with
their comments) and then drops the `needs:` entries that pointed at phases left behind,
re-validating until the spec is whole.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matrix.commands import EXIT_INVALID, split

if TYPE_CHECKING:
    from matrix.spec.problems import Position, Problem


STARTER = """\
# {name}.yaml — a failure matrix: one check per way the system can fail, each with the probe
# that detects it, what "good" looks like, the diagnostic a person reads and the fix.
#
#   matrix validate {name}.yaml          # every problem in the spec at once, with its line
#   matrix run {name}.yaml               # probe everything; READY / CAUTION / BLOCKED
#   matrix list --probes                 # the probe kinds you can use (docs/probes.md)
#
# Reference: docs/spec.md (guide), docs/spec-reference.md (every key), docs/authoring.md.
version: 1
name: {name}
description: What this spec protects, in one line.

vars:                                # defaults; override with --var k=v or --vars file.yaml
  data_dir: /tmp                     # a directory the service needs
  min_free_gb: 1                     # space it needs there
  min_python: "3.10"
  port: 8080                         # where the service will listen

# secrets: [API_TOKEN]               # env vars read as {{{{ secret.API_TOKEN }}}}, masked in output

# targets:                           # `local` always exists; add SSH hosts as a group
#   servers:
#     via: ssh
#     hosts: ["{{{{ vars.server }}}}"]
#     user: ubuntu
#     key: ~/.ssh/id_ed25519

phases:
  - id: prerequisites
    title: Prerequisites
    weight: 50
    budget: 1m                       # a slower phase makes the verdict at best CAUTION
    checks:
      - id: disk-space
        category: Disk Space
        failure: Not enough space for data
        probe: {{kind: disk, path: "{{{{ vars.data_dir }}}}"}}
        expect: {{free_gb: {{ge: "{{{{ vars.min_free_gb }}}}"}}}}
        diagnostic: "Only {{{{ facts.free_gb }}}}GB free, need {{{{ vars.min_free_gb }}}}GB"
        fix: Free space on {{{{ vars.data_dir }}}} or point data_dir elsewhere

      - id: python-version
        category: Python Environment
        failure: Wrong Python version
        probe: {{kind: python}}
        expect: {{version: {{version: ">={{{{ vars.min_python }}}}"}}}}
        diagnostic: "Python {{{{ facts.version }}}}, need {{{{ vars.min_python }}}}+"
        fix: Install Python {{{{ vars.min_python }}}} or newer

  - id: service
    title: Service
    weight: 50
    needs: [prerequisites]           # skipped (blocked) when a critical prerequisite failed
    checks:
      - id: port-free
        category: Network
        failure: Port already taken
        severity: warning            # critical (default) blocks; warning gives CAUTION
        probe: {{kind: port, port: "{{{{ vars.port }}}}", mode: free}}
        diagnostic: "Port {{{{ vars.port }}}} is taken: {{{{ facts.error }}}}"
        fix: Stop what listens on {{{{ vars.port }}}} (ss -ltnp) or choose another port

      - id: tool-present
        category: Dependencies
        failure: A required program is missing
        probe: {{kind: command, argv: [sh, -c, "command -v git"]}}
        diagnostic: "git is not installed: {{{{ error or facts.stderr }}}}"
        fix: Install git (apt-get install git)
"""

_ATTEMPTS = 50  # each pass drops at least one dangling reference


class InitError(Exception):
    """The starter cannot be made as asked (unknown phase, file already there)."""


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, nargs="?", help="file to write (default: stdout)")
    parser.add_argument(
        "--from", dest="source", type=Path, metavar="SPEC", help="start from a spec"
    )
    parser.add_argument(
        "--phases", action="append", metavar="ID", help="with --from: only these phases"
    )
    parser.add_argument("--force", action="store_true", help="overwrite the output file")


def main(args: argparse.Namespace) -> int:
    phases = split(args.phases)
    if phases and args.source is None:
        print("matrix: --phases needs --from SPEC", file=sys.stderr)
        return EXIT_INVALID
    name = args.output.stem if args.output else "spec"
    try:
        text = from_spec(args.source, phases) if args.source else starter(name)
        print(write(text, args.output, force=args.force))
    except InitError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0


def starter(name: str) -> str:
    return STARTER.format(name=name)


def from_spec(source: Path, phases: Sequence[str]) -> str:
    """The source spec's text with only `phases` (all when empty), comments kept, and needs
    that point at the phases left out removed."""
    from matrix.spec.load import load

    loaded = load(source)
    ids = [phase.id for phase in loaded.spec.phases]
    unknown = [p for p in phases if p not in ids]
    if unknown:
        raise InitError(
            f"{source} has no phase {', '.join(map(repr, unknown))}; its phases: {', '.join(ids)}"
        )
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [_block_start(lines, loaded.where(("phases", i))[0].line - 1) for i in range(len(ids))]
    ends = [*starts[1:], len(lines)]
    keep = set(phases or ids)
    head = "".join(lines[: starts[0]]) if starts else "".join(lines)
    body = "".join(
        "".join(lines[start:end]) for pid, start, end in zip(ids, starts, ends) if pid in keep
    )
    chosen = ", ".join(p for p in ids if p in keep)
    note = f"# Started from {source} (phases: {chosen}) by `matrix init`.\n"
    return note + _without_dangling_needs(head + body, source)


def _block_start(lines: list[str], item: int) -> int:
    """The first line of a phase's block: its `- id:` line, preceded by the comments and blank
    lines right above it (a phase's banner comment travels with it)."""
    while item > 0 and (not lines[item - 1].strip() or lines[item - 1].lstrip().startswith("#")):
        item -= 1
    return item


def _without_dangling_needs(text: str, source: Path) -> str:
    """Plan the text as it would be written beside `source` (its includes resolve the same)
    and drop each `needs:` entry the planner finds pointing nowhere, until none is left."""
    from matrix.plan import build_plan
    from matrix.plan.graph import UNKNOWN_NEED
    from matrix.spec.load import load
    from matrix.spec.problems import SpecInvalid

    for _ in range(_ATTEMPTS):
        try:
            build_plan(load(source, text=text))
            return text
        except SpecInvalid as exc:
            problems: list[Problem] = exc.problems
        dangling = [p for p in problems if p.code == UNKNOWN_NEED]
        if not dangling:
            raise SpecInvalid(problems)
        text = _drop_item(text, dangling[0].where)
    raise InitError("could not untangle the needs of the chosen phases")


def _drop_item(text: str, where: Position) -> str:
    """Remove the flow-list item at `where` (`needs: [a, b]` → `needs: [b]`)."""
    lines = text.splitlines(keepends=True)
    line, col = lines[where.line - 1], where.col - 1
    end = col
    while end < len(line) and line[end] not in ",]":
        end += 1
    if line[end : end + 1] == ",":
        end += 1
        while line[end : end + 1] == " ":
            end += 1
    elif line[:col].rstrip().endswith(","):
        col = len(line[:col].rstrip()) - 1
    lines[where.line - 1] = line[:col] + line[end:]
    return "".join(lines)


def write(text: str, output: Path | None, *, force: bool) -> str:
    """Print to stdout (None) or write the file; never overwrite one unasked."""
    if output is None:
        return text
    if output.exists() and not force:
        raise InitError(f"{output} already exists: choose another name or pass --force")
    output.write_text(text, encoding="utf-8")
    return f"wrote {output}: next, `matrix validate {output}` and `matrix run {output}`"
