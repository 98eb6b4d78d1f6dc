"""specs/training-readiness.yaml against the same torch work done in one process.

    python bench/bench_torch.py                      # CPU; prints, --write records it
    python bench/bench_torch.py --var device=cuda    # on a GPU host

Interleaved, run by run:

- matrix: `matrix run specs/training-readiness.yaml --quiet --json …` as a user runs it
  (every check of the spec; the torch ones take turns on the target).
- in-process: one python that imports torch once, then runs each torch check's own program
  (the bytes matrix sends, with the same params) one after another, in that process.
- fresh python each: the same programs, each in a new `python -` that imports torch again:
  what matrix paid before its agent kept torch imported.

The ratio of interest is matrix / in-process: what matrix adds to the work itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, matrix_argv, publish, run_quietly

SPEC = ROOT / "specs" / "training-readiness.yaml"


def torch_programs(extra_vars: list[str]) -> list[str]:
    """Each torch check's program, as matrix would send it (params rendered for this run).
    torch.distributed's comes first: it forks its ranks, which is safe only from a process
    that has imported torch but run nothing on it yet (its thread pools do not survive a
    fork), as each of matrix's probes is: a fork of the agent, which only imports."""
    sys.path.insert(0, str(ROOT))
    from matrix import remote
    from matrix.plan import build_plan
    from matrix.probe import ProbeContext, ScriptProbe
    from matrix.spec.load import load

    plan = build_plan(load(SPEC, var_args=extra_vars))
    programs: list[tuple[bool, str]] = []
    for task in plan.tasks.values():
        params = task.params
        if task.skip or not isinstance(params, ScriptProbe) or "torch" not in params.preload:
            continue
        ctx = ProbeContext(target=None, task_id=task.id, timeout=task.check.timeout)  # type: ignore[arg-type]
        source = remote.program(
            params.script, params.libraries, params.script_params(ctx), params.preload
        )
        programs.append((params.script != "torch_distributed", base64.b64encode(source).decode()))
    return [program for _, program in sorted(programs, key=lambda pair: pair[0])]


def in_process(programs_file: Path) -> int:
    """The floor: import torch once, then every program here, its output kept apart."""
    import torch  # noqa: F401

    for encoded in json.loads(programs_file.read_text()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            exec(compile(base64.b64decode(encoded), "<program>", "exec"), {"__name__": "__main__"})
        if '"facts"' not in out.getvalue():
            raise SystemExit(f"a program gave no facts: {out.getvalue()[-300:]}")
    return 0


def fresh_each(programs_file: Path) -> int:
    """The same programs, each in a new python that imports torch for itself."""
    for encoded in json.loads(programs_file.read_text()):
        source = base64.b64decode(encoded)
        done = subprocess.run([sys.executable, "-"], input=source, capture_output=True)
        if b'"facts"' not in done.stdout:
            raise SystemExit(f"a program gave no facts: {done.stderr[-300:]!r}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--var", action="append", default=[], help="passed to matrix run")
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, path = args.worker
        return (in_process if mode == "in-process" else fresh_each)(Path(path))

    extra = [arg for var in args.var for arg in ("--var", var)]
    with tempfile.TemporaryDirectory(prefix="matrix-bench-torch-") as tmp:
        work = Path(tmp)
        programs = work / "programs.json"
        programs.write_text(json.dumps(torch_programs(args.var)))
        count = len(json.loads(programs.read_text()))
        report = work / "report.json"
        cases = {
            "matrix run": [*matrix_argv(), "run", str(SPEC), "--quiet", "--json", str(report),
                           "--var", f"checkpoint_dir={work}", *extra],
            "in-process (one torch import)": [sys.executable, __file__, "--worker", "in-process",
                                              str(programs)],
            "fresh python each": [sys.executable, __file__, "--worker", "fresh", str(programs)],
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, argv in cases.items():
                started = time.perf_counter()
                run_quietly(argv, (0, 1))
                times[name].append(time.perf_counter() - started)
        verdict = json.loads(report.read_text())["verdict"]
    floor = statistics.median(times["in-process (one torch import)"])
    rows = ["| case | median s | × in-process |", "|---|---:|---:|"]
    for name, seen in times.items():
        rows.append(
            f"| {name} | {statistics.median(seen):.2f} | {statistics.median(seen) / floor:.2f} |"
        )
    torch_version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    command = "python bench/bench_torch.py " + " ".join(sys.argv[1:])
    how = (
        f"`{command.strip()}` — {machine()}, torch {torch_version}; {count} torch checks, "
        f"matrix's verdict {verdict}; medians of {args.repeat} interleaved runs."
    )
    publish(
        "torch",
        "training-readiness: matrix against the same torch work in one process (issue 16)",
        how,
        rows,
        args.write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
