"""`matrix COMMAND …`: parse the arguments and hand them to the command's module.

A subcommand is one module in matrix/commands/ (with `arguments(parser)` and `main(args)`)
plus one line in COMMANDS. Start-up stays light: only the chosen command's module is
imported, and it imports the engine, anyio and probe libraries only when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from matrix import __version__, interrupt, redact
from matrix.commands import EXIT_INTERRUPTED, EXIT_INVALID

COMMANDS = {  # subcommand (its module in matrix/commands/) → what `matrix --help` says of it
    "run": "probe everything and print the verdict",
    "validate": "check a spec and report every problem",
    "list": "phases, checks and targets of a spec, or probe kinds",
    "schema": "print the JSON Schema of specs (for YAML editors)",
    "init": "write a commented starter spec",
    "snapshot": "observe a known-good machine; write a spec expecting what it saw",
    "explain": "what a check probes, expects and advises",
    "serve": "run a spec on an interval; answer /healthz and /metrics over HTTP",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"matrix.commands.{name}")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: every subcommand is listed, but only the one named in `argv`
    gets its arguments (and so has its module imported)."""
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="matrix",
        description="Probe every failure mode of a pipeline before you deploy it.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"matrix {__version__} (Python {sys.version.split()[0]})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if name == chosen:
            _command(name).arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, signals_kept: bool = False) -> int:
    """Signals are kept (here, or already by matrix.launch: `signals_kept`) and secrets
    masked from the first line on, before anything heavy is imported: whatever happens next,
    a Ctrl-C ends in exit 130 with the reports written, and nothing printed carries a
    secret."""
    if not signals_kept:
        interrupt.defer()
    redact.guard_streams()
    try:
        code = _dispatch(sys.argv[1:] if argv is None else list(argv))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    if interrupt.pending() and code != EXIT_INTERRUPTED:
        print("matrix: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _dispatch(argv: list[str]) -> int:
    from matrix.spec.problems import SpecInvalid
    from reporters import ReporterError

    args = build_parser(argv).parse_args(argv)
    try:
        return _command(args.command).main(args)
    except ReporterError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except SpecInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        places = count + sum(len(problem.also) for problem in exc.problems)
        at = f" at {places} places" if places > count else ""
        print(
            f"matrix: {count} problem{'s' if count != 1 else ''} found{at}; nothing was run",
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
