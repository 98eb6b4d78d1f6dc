"""`matrix list [SPEC] [--probes]`: the phases, checks and targets of a spec, or probe kinds."""

from __future__ import annotations

import argparse
from pathlib import Path

from matrix.commands import plan, var_options


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, nargs="?", help="spec YAML file")
    parser.add_argument("--probes", action="store_true", help="list probe kinds instead")
    var_options(parser)


def main(args: argparse.Namespace) -> int:
    from matrix.commands import views

    if args.probes or args.spec is None:
        print(views.probe_table())
    else:
        print(views.plan_table(plan(args)))
    return 0
