"""`matrix run | validate | list | schema | init | snapshot | explain`.

Start-up stays light: the engine, anyio and any heavy probe library are imported only by `run`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from matrix.problems import SpecInvalid
from reporters import ReporterError

EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def _split(values: Sequence[str] | None) -> list[str]:
    """`--tags a,b --tags c` → [a, b, c]."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="spec YAML file")
    parser.add_argument("--var", action="append", default=[], metavar="K=V", help="override a var")
    parser.add_argument(
        "--vars", action="append", default=[], metavar="FILE", help="YAML file of vars"
    )
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


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phase", action="append", metavar="ID", help="only these phases")
    parser.add_argument(
        "--check", action="append", metavar="ID", help="only these checks (globs ok)"
    )
    parser.add_argument(
        "--tags", action="append", metavar="T", help="only checks with one of these tags"
    )
    parser.add_argument(
        "--skip-tags", action="append", metavar="T", help="leave out checks with these tags"
    )
    parser.add_argument(
        "--limit", action="append", metavar="PATTERN", help="only SSH hosts matching these globs"
    )


def build_parser() -> argparse.ArgumentParser:
    from reporters import registry as reporters

    parser = argparse.ArgumentParser(
        prog="matrix",
        description="Probe every failure mode of a pipeline before you deploy it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="probe everything and print the verdict")
    _spec_options(run)
    _filter_options(run)
    run.add_argument(
        "--concurrency",
        type=int,
        default=0,
        metavar="N",
        help="tasks at once (default: 4 per core)",
    )
    run.add_argument("--fail-fast", action="store_true", help="stop at the first critical failure")
    run.add_argument("--dry-run", action="store_true", help="print the plan; probe nothing")
    run.add_argument("--strict", action="store_true", help="exit 1 on CAUTION too")
    run.add_argument("--quiet", action="store_true", help="no console output; only reports")
    for entry in reporters().values():
        nargs = "?" if entry.bare is not None else None
        run.add_argument(
            f"--{entry.name}", metavar=entry.metavar, help=entry.help, nargs=nargs, const=entry.bare
        )
        for option in entry.options:
            kind = (
                {"type": option.type, "metavar": option.metavar}
                if option.type
                else {"action": "store_true"}
            )
            run.add_argument(
                option.flag, dest=option.dest, help=option.help, default=option.default, **kind
            )

    validate = commands.add_parser("validate", help="check a spec and report every problem")
    _spec_options(validate)

    listing = commands.add_parser(
        "list", help="phases, checks and targets of a spec, or probe kinds"
    )
    listing.add_argument("spec", type=Path, nargs="?", help="spec YAML file")
    listing.add_argument("--probes", action="store_true", help="list probe kinds instead")
    listing.add_argument("--var", action="append", default=[], metavar="K=V", help="override a var")
    listing.add_argument(
        "--vars", action="append", default=[], metavar="FILE", help="YAML file of vars"
    )

    commands.add_parser("schema", help="print the JSON Schema of specs (for YAML editors)")

    init = commands.add_parser("init", help="write a commented starter spec")
    init.add_argument("output", type=Path, nargs="?", help="file to write (default: stdout)")
    init.add_argument("--from", dest="source", type=Path, metavar="SPEC", help="start from a spec")
    init.add_argument(
        "--phases", action="append", metavar="ID", help="with --from: only these phases"
    )
    init.add_argument("--force", action="store_true", help="overwrite the output file")

    snapshot = commands.add_parser(
        "snapshot", help="observe a known-good machine; write a spec expecting what it saw"
    )
    snapshot.add_argument(
        "--target", default="local", metavar="HOST", help="local, or [user@]host[:port] over SSH"
    )
    snapshot.add_argument("--key", metavar="FILE", help="SSH private key")
    snapshot.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to verify with")
    snapshot.add_argument("--python", metavar="PATH", help="the host's python for probes")
    snapshot.add_argument(
        "--probes",
        action="append",
        metavar="KINDS",
        help="kinds to observe (default: python,disk,memory; also torch.env, gpu.health)",
    )
    snapshot.add_argument(
        "--packages", action="append", metavar="NAMES", help="python packages to pin"
    )
    snapshot.add_argument(
        "--path", action="append", default=[], metavar="PATH", help="a disk to check (default /)"
    )
    snapshot.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    snapshot.add_argument("--force", action="store_true", help="overwrite the output file")

    explain = commands.add_parser("explain", help="what a check probes, expects and advises")
    _spec_options(explain)
    explain.add_argument("check", help="check id")
    return parser


def _plan(args: argparse.Namespace, *, filtered: bool = False):
    from matrix.load import load
    from matrix.plan import Filters, build_plan

    loaded = load(
        args.spec,
        vars_files=args.vars,
        var_args=args.var,
        inventories=getattr(args, "inventory", ()),
        target_args=getattr(args, "target", ()),
        allow_include_outside=getattr(args, "allow_include_outside", False),
    )
    filters = Filters()
    if filtered:
        filters = Filters(
            _split(args.phase),
            _split(args.check),
            _split(args.tags),
            _split(args.skip_tags),
            _split(args.limit),
        )
    return build_plan(loaded, filters)


def cmd_validate(args: argparse.Namespace) -> int:
    from reporters.text import plural

    plan = _plan(args)
    checks = sum(len(p.checks) for p in plan.spec.phases)
    phases = len(plan.spec.phases)
    counted = (
        f"{plural(phases, 'phase')}, {plural(checks, 'check')}, {plural(len(plan.tasks), 'task')}"
    )
    print(f"{plan.spec_path}: valid — {counted}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from matrix import describe

    if args.probes or args.spec is None:
        print(describe.probe_table())
        return 0
    print(describe.plan_table(_plan(args)))
    return 0


def cmd_schema(_: argparse.Namespace) -> int:
    from matrix.schema import spec_schema

    print(json.dumps(spec_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from matrix import init

    phases = _split(args.phases)
    if phases and args.source is None:
        print("matrix: --phases needs --from SPEC", file=sys.stderr)
        return EXIT_INVALID
    name = args.output.stem if args.output else "spec"
    try:
        text = init.from_spec(args.source, phases) if args.source else init.starter(name)
        print(init.write(text, args.output, force=args.force))
    except init.InitError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from matrix import init, snapshot

    node = snapshot.Node(args.target, args.key, args.known_hosts, args.python)
    try:
        kinds = _split(args.probes) or list(snapshot.DEFAULT_PROBES)
        rows = snapshot.checks(kinds, _split(args.packages), args.path)
    except snapshot.SnapshotError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    run = snapshot.observe(node, rows)
    command = "matrix " + " ".join(sys.argv[1:]) if sys.argv[1:] else "matrix snapshot"
    text, unseen = snapshot.baseline(node, rows, run, command)
    for line in unseen:
        print(f"matrix: {line}", file=sys.stderr)
    try:
        print(init.write(text, args.output, force=args.force), end="" if not args.output else "\n")
    except init.InitError as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0 if len(unseen) < len(rows) else 1


def cmd_explain(args: argparse.Namespace) -> int:
    from matrix import describe

    plan = _plan(args)
    tasks = [t for t in plan.tasks.values() if t.check.id == args.check]
    if not tasks:
        from matrix.problems import did_you_mean

        known = [c.id for p in plan.spec.phases for c in p.checks]
        print(
            f"matrix: no check '{args.check}' in {plan.spec_path}{did_you_mean(args.check, known)}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    print(describe.explain(tasks))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    plan = _plan(args, filtered=True)
    if args.dry_run:
        from matrix import describe

        print(describe.plan_tasks(plan))
        return 0
    import anyio

    from matrix.engine import Options, execute
    from reporters import Reporter
    from reporters import registry as reporters
    from reporters.console import ConsoleReporter

    listeners: list[Reporter] = [] if args.quiet else [ConsoleReporter()]
    for entry in reporters().values():
        destination = getattr(args, entry.name.replace("-", "_"), None)
        options = {option.dest: getattr(args, option.dest) for option in entry.options}
        if destination is None and entry.auto is not None:
            destination = entry.auto(os.environ, options)
        if destination is not None:
            listeners.append(entry.create(destination, **options))
    options = Options(concurrency=args.concurrency, fail_fast=args.fail_fast)
    run = anyio.run(execute, plan, options, listeners)
    unwritten = 0
    for listener in listeners:
        try:
            listener.finish(run)
        except Exception as exc:  # one reporter's failure must not cost the others theirs
            unwritten += 1
            print(
                f"matrix: {type(listener).__name__} could not write its report: {exc}",
                file=sys.stderr,
            )
    return EXIT_INVALID if unwritten else run.exit_code(strict=args.strict)


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "list": cmd_list,
    "schema": cmd_schema,
    "init": cmd_init,
    "snapshot": cmd_snapshot,
    "explain": cmd_explain,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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
