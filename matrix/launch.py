"""The `matrix` command's entry point (`[project.scripts]` and `python -m matrix`): signals
are kept from its first line, before the CLI imports anything, so a SIGTERM a few
milliseconds in still ends in exit 130 and written reports (matrix.interrupt). Only the
interpreter's own start-up comes before it."""

from matrix import interrupt

interrupt.defer()


def main() -> int:
    from matrix.cli import main as cli

    return cli(signals_kept=True)
