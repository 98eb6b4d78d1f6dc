"""Per-run cost of a remote program under the SSH agent, which compiles each program once and
runs it in a fork per task: what a fork still pays before `observe` runs.

    python bench/remote_program_ab.py TREE KIND [LIBRARY ...]   # e.g. . torch_train _torch

TREE is a checkout of matrix (run from outside it, e.g. /tmp); prints milliseconds per run
(best of 5 × 200 runs).
"""

import os
import sys
import timeit

RUNS = 200


def program_without_entry(tree: str, kind: str, libraries: tuple[str, ...]) -> str:
    """The program as the agent receives it, less its entry call (so nothing observes)."""
    sys.path.insert(0, tree)
    if os.path.exists(os.path.join(tree, "matrix", "remote.py")):
        from matrix.remote import program

        source = program(kind, libraries).decode()
        return source[: source.rindex("__import__")]
    from matrix.probe import remote_source  # before matrix/remote.py: one concatenated text

    return remote_source(kind, libraries).decode().removesuffix("main(observe)\n")


def main() -> int:
    tree, kind, *libraries = sys.argv[1:]
    code = compile(program_without_entry(tree, kind, tuple(libraries)), "<stdin>", "exec")
    runs = timeit.repeat(lambda: exec(code, {"__name__": "__main__"}), number=RUNS, repeat=5)
    print(f"{min(runs) / RUNS * 1000:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
