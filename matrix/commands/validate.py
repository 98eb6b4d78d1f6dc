"""`matrix validate SPEC`: every problem in a spec at once, each at its file:line and key."""

from __future__ import annotations

import argparse

from matrix.commands import plan, spec_options


def arguments(parser: argparse.ArgumentParser) -> None:
    spec_options(parser)


def main(args: argparse.Namespace) -> int:
    from reporters.base import plural

    planned = plan(args)
    checks = sum(len(p.checks) for p in planned.spec.phases)
    phases = len(planned.spec.phases)
    counted = ", ".join(
        [plural(phases, "phase"), plural(checks, "check"), plural(len(planned.tasks), "task")]
    )
    print(f"{planned.spec_path}: valid — {counted}")
    return 0
