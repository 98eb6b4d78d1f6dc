"""`matrix COMMAND …`: parse the arguments and hand them to the command's module.

A subcommand is one module in matrix/commands/ plus one line in COMMANDS. Start-up stays
light: each command imports the engine, anyio and probe libraries only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from matrix.commands import EXIT_INTERRUPTED, EXIT_INVALID
from matrix.spec.problems import SpecInvalid
from reporters import ReporterError

COMMANDS = {  # subcommand → its module in matrix/commands/
    "run": "run",
    "validate": "validate",
    "list": "list",
    "schema": "schema",
    "init": "init",
    "snapshot": "snapshot",
    "explain": "explain",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"matrix.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrix",
        description="Probe every failure mode of a pipeline before you deploy it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = _command(name)
        module.arguments(commands.add_parser(name, help=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _command(args.command).main(args)
    except ReporterError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except SpecInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(
            f"matrix: {count} problem{'s' if count != 1 else ''} found; nothing was run",
            file=sys.stderr,
        )
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("matrix: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
