"""`matrix explain SPEC CHECK`: what a check probes, expects and advises, as planned."""

from __future__ import annotations

import argparse
import sys

from matrix.commands import EXIT_INVALID, plan, spec_options


def arguments(parser: argparse.ArgumentParser) -> None:
    spec_options(parser)
    parser.add_argument("check", help="check id")


def main(args: argparse.Namespace) -> int:
    from matrix.commands import views
    from matrix.spec.problems import did_you_mean

    planned = plan(args)
    tasks = [t for t in planned.tasks.values() if t.check.id == args.check]
    if not tasks:
        known = [c.id for p in planned.spec.phases for c in p.checks]
        hint = did_you_mean(args.check, known)
        print(f"matrix: no check '{args.check}' in {planned.spec_path}{hint}", file=sys.stderr)
        return EXIT_INVALID
    print(views.explain(tasks))
    return 0
