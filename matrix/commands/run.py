"""`matrix run SPEC`: probe everything, print the verdict, write the reports asked for.

Every reporter listens to the run and writes its output at the end, also after Ctrl-C; one
that fails to write does not cost the others theirs.
"""

from __future__ import annotations

import argparse
import os
import sys

from matrix.commands import (
    EXIT_INTERRUPTED,
    EXIT_UNACTED,
    EXIT_UNWRITTEN,
    plan,
    spec_options,
    split,
)


def arguments(parser: argparse.ArgumentParser) -> None:
    from reporters import registry

    spec_options(parser)
    for flag, help_text in (
        ("--phase", "only these phases"),
        ("--check", "only these checks (globs ok)"),
        ("--tags", "only checks with one of these tags"),
        ("--skip-tags", "leave out checks with these tags"),
        ("--limit", "only remote hosts matching these globs"),
    ):
        metavar = {"--phase": "ID", "--check": "ID", "--limit": "PATTERN"}.get(flag, "T")
        parser.add_argument(flag, action="append", metavar=metavar, help=help_text)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        metavar="N",
        help="tasks at once (default: 4 per core)",
    )
    parser.add_argument(
        "--fail-fast", action="store_true", help="stop at the first critical failure"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; probe nothing")
    parser.add_argument("--strict", action="store_true", help="exit 1 on CAUTION too")
    parser.add_argument("--quiet", action="store_true", help="no console output; only reports")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="set DRAIN the Slurm nodes on which a critical check observed a failure, the "
        "reason naming the spec and the check",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="set RESUME the Slurm nodes this spec drained that now pass every critical check",
    )
    parser.add_argument(
        "--resume-any",
        action="store_true",
        help="with --resume: also the nodes matrix drained for other specs",
    )
    parser.add_argument(
        "--slurm-node",
        metavar="NAME",
        default=os.environ.get("SLURMD_NODENAME"),
        help="the Slurm node `local` checks stand for, on the node itself "
        "(default: $SLURMD_NODENAME)",
    )
    for entry in registry().values():
        nargs = "?" if entry.bare is not None else None
        parser.add_argument(
            f"--{entry.name}", metavar=entry.metavar, help=entry.help, nargs=nargs, const=entry.bare
        )
        for option in entry.options:
            kind = (
                {"type": option.type, "metavar": option.metavar}
                if option.type
                else {"action": "store_true"}
            )
            parser.add_argument(
                option.flag, dest=option.dest, help=option.help, default=option.default, **kind
            )


def main(args: argparse.Namespace) -> int:
    from matrix.plan import Filters

    filters = Filters(
        split(args.phase),
        split(args.check),
        split(args.tags),
        split(args.skip_tags),
        split(args.limit),
    )
    planned = plan(args, filters)
    if args.dry_run:
        from matrix.commands import views

        print(views.plan_tasks(planned))
        return 0
    import anyio

    from matrix.engine import Options, execute
    from matrix.listener import Listener, Listeners
    from reporters import registry
    from reporters.console import ConsoleReporter

    reports: list[Listener] = []
    to_stdout = False  # a report on stdout (`-`) moves the console to stderr
    for entry in registry().values():
        destination = getattr(args, entry.name.replace("-", "_"), None)
        options = {option.dest: getattr(args, option.dest) for option in entry.options}
        if destination is None and entry.auto is not None:
            destination = entry.auto(os.environ, options)
        if destination is not None:
            to_stdout = to_stdout or str(destination) == "-"
            reports.append(entry.create(destination, **options))
    console = ConsoleReporter(sys.stderr if to_stdout else None)
    listeners = Listeners(reports if args.quiet else [console, *reports])
    options = Options(
        concurrency=args.concurrency, fail_fast=args.fail_fast, node=args.slurm_node or None
    )
    run = anyio.run(execute, planned, options, listeners)
    unacted: list[str] = []
    if args.drain or args.resume:
        from matrix.commands import nodes

        partial = any([args.phase, args.check, args.tags, args.skip_tags, args.limit])
        acted = nodes.act(
            run, planned, drain=args.drain, resume=args.resume, resume_any=args.resume_any,
            partial=partial, here=args.slurm_node,
        )  # fmt: skip
        run.warnings += acted.lines
        unacted = acted.failed
    listeners.finish(run)
    for listener, why in listeners.failed.items():
        print(
            f"matrix: {type(listener).__name__} could not write its report: {why}", file=sys.stderr
        )
    for line in unacted:
        print(f"matrix: {line}", file=sys.stderr)
    code = run.exit_code(strict=args.strict)
    if code == EXIT_INTERRUPTED:
        return code
    return EXIT_UNACTED if unacted else EXIT_UNWRITTEN if listeners.failed else code
