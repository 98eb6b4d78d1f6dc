"""One module per subcommand, each with `arguments(parser)` and `main(args) -> int`; only the
chosen one is imported, and it keeps its heavy imports inside `main`. What several commands
share (spec options, loading and planning a spec) is here."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matrix.plan import Filters, Plan

EXIT_INVALID = 2
EXIT_UNWRITTEN = 3  # the run happened, but a report could not be written
EXIT_UNACTED = 4  # the run happened, but a drain or resume it asked for was not carried out
EXIT_INTERRUPTED = 130


def split(values: Sequence[str] | None) -> list[str]:
    """`--tags a,b --tags c` → [a, b, c]."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def var_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--var", action="append", default=[], metavar="K=V", help="override a var")
    parser.add_argument(
        "--vars", action="append", default=[], metavar="FILE", help="YAML file of vars"
    )


def spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="spec YAML file")
    var_options(parser)
    parser.add_argument(
        "--inventory",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file of target groups (same keys as targets:); replaces groups of that name",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=H1,H2",
        help="set the hosts of a target group (its other options are kept)",
    )
    parser.add_argument(
        "--allow-include-outside",
        action="store_true",
        help="allow includes outside the spec's folder",
    )


def plan(args: argparse.Namespace, filters: Filters | None = None) -> Plan:
    """Load the spec named on the command line, with its overrides, and plan it."""
    from matrix.plan import build_plan
    from matrix.spec.load import load

    loaded = load(
        args.spec,
        vars_files=args.vars,
        var_args=args.var,
        inventories=getattr(args, "inventory", ()),
        target_args=getattr(args, "target", ()),
        allow_include_outside=getattr(args, "allow_include_outside", False),
    )
    return build_plan(loaded, filters)
