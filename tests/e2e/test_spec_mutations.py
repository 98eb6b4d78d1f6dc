"""Hostile edits of the shipped specs never crash `matrix validate` or `run --dry-run`: whatever
is deleted, swapped for a hostile value (huge ints, deep nesting, bad tags, runaway templates,
infinities, long strings) or given the wrong shape, each command ends in exit 0 or 2, prints no
traceback, and stays within a time and memory bound."""

from __future__ import annotations

import contextlib
import io
import re
import resource
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from matrix.cli import main
from matrix.spec.yaml import parse_yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SECONDS = 10  # per command; a bounded spec takes well under one
HEADROOM = 3 << 30  # bytes of address space the commands may add to the test process

# A spec and the side files it is documented with, each of which may be the one mutated.
SIDE_FILES = {
    "specs/pipeline.yaml": [
        ("--vars", "examples/team.vars.yaml"),
        ("--inventory", "examples/hosts.yaml"),
    ],
    "examples/web-service/spec.yaml": [("--vars", "examples/web-service/ci.vars.yaml")],
}
SPECS = sorted(
    str(path.relative_to(REPO))
    for path in [*REPO.glob("specs/*.yaml"), *REPO.glob("examples/**/*.yaml")]
    if re.search(r"^phases:", path.read_text(encoding="utf-8"), re.M)
)

# Raw YAML put where a value was: each must end in a located problem or a valid spec.
HOSTILE = [
    "9" * 5000,  # past Python's 4300-digit int conversion limit
    "1" + "0" * 400,  # converts, but overflows a float
    "-1",
    ".inf",
    "-.inf",
    ".nan",
    "!!float abc",
    "!!int abc",
    "!!timestamp nope",
    "!!bool maybe",
    "!!binary '@@@'",
    "!!set {a: null}",
    "!!omap [{a: 1}]",
    "!!python/object/apply:os.system ['true']",
    "*nosuchalias",
    "&loop [*loop]",
    "[" * 350 + "]" * 350,
    "{" * 100 + "a: 1" + "}" * 100,
    "{1: a, true: c}",
    "{~: x}",
    "'" + "x" * 200_000 + "'",
    "'{{ 9 ** 9 ** 9 }}'",
    "'{{ 9 ** 999999 }}'",
    "'{{ x.y }}'",
    "'{{ vars.nope }}'",
    "'{{ 1 / 0 }}'",
    "'{{'",
    "'{{ range(10 ** 9) | list }}'",
    "'{{ \"x\" * 10 ** 9 }}'",
    "'{% for i in range(10 ** 9) %}x{% endfor %}'",
    "'{{ ().__class__.__mro__ }}'",
    "'{{ env.NO_SUCH_VARIABLE_HERE }}'",
    "'h[0-99999999]'",
    "'h" + "[1-2]" * 200 + "'",
    "'gpu-[01-04]'",
    "[]",
    "{}",
    "null",
    "''",
    "[1, [2, [3]]]",
]
PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)


def _plain(value: Any) -> Any:
    """The loader's positioned maps and lists as plain ones, for yaml.safe_dump."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _slots(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in the tree, so a drawn number picks one."""
    found: list[tuple[Any, Any]] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            found.append((node, key))
            if isinstance(node[key], (dict, list)):
                pending.append(node[key])
    return found


def _mutate(tree: Any, draw: Any) -> None:
    """One edit at a drawn place: delete it, swap in a hostile or plain value, rename its key,
    or change its shape (a map for a list, a list for a map)."""
    slots = _slots(tree)
    if not slots:
        return
    node, key = draw(st.randoms(use_true_random=False)).choice(slots)  # uniform, not small-first
    action = draw(st.sampled_from(["delete", "hostile", "plain", "wrap", "flatten", "rename"]))
    if action == "rename" and isinstance(node, dict):
        hostile = st.integers(0, len(HOSTILE) - 1).map(lambda i: f"zzhostile{i}zz")
        name = draw(st.one_of(st.text(max_size=20), hostile))
        node[name] = node.pop(key)
    elif action == "delete":
        del node[key]
    elif action == "hostile":
        node[key] = f"zzhostile{draw(st.integers(0, len(HOSTILE) - 1))}zz"
    elif action == "plain":
        node[key] = draw(PLAIN)
    elif action == "wrap":
        node[key] = [node[key]]
    elif isinstance(node[key], dict):
        node[key] = list(node[key].values())
    elif isinstance(node[key], list):
        node[key] = {f"k{i}": item for i, item in enumerate(node[key])}


def _dump(tree: Any) -> str:
    """YAML text of the tree, with each hostile placeholder replaced by its raw YAML."""
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=1 << 30)
    return re.sub(r"zzhostile(\d+)zz", lambda found: HOSTILE[int(found[1])], text)


@st.composite
def mutated(draw: Any) -> tuple[str, dict[str, str]]:
    """(spec, {file: mutated text}) with one to three edits across the spec's files."""
    spec = draw(st.sampled_from(SPECS))
    files = [spec, *(path for _, path in SIDE_FILES.get(spec, []))]
    trees = {path: _plain(parse_yaml((REPO / path).read_text("utf-8"), path)) for path in files}
    for _ in range(draw(st.integers(1, 6))):
        _mutate(trees[draw(st.sampled_from(files))], draw)
    return spec, {path: _dump(tree) for path, tree in trees.items()}


class Overran(Exception):
    pass


def _overran(signum: int, frame: Any) -> None:
    raise Overran(f"a command took longer than {SECONDS}s")


@pytest.fixture(scope="module")
def bounded() -> Iterator[None]:
    """Cap the address space of this process for the duration (a command that tries to fill
    memory fails with MemoryError instead of taking the machine), and keep the CLI's signal
    handlers from outliving it."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    limit = pages * resource.getpagesize() + HEADROOM
    before = resource.getrlimit(resource.RLIMIT_AS)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    resource.setrlimit(resource.RLIMIT_AS, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _matrix(*argv: str) -> tuple[int, str]:
    """Run the CLI in this process under a time limit; (exit code, stderr)."""
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _overran)
    signal.alarm(SECONDS)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - started < SECONDS
    return code, err.getvalue()


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated())
def test_mutated_specs_fail_cleanly(case, bounded, tmp_path_factory):
    spec, texts = case
    folder = tmp_path_factory.mktemp("mutant")
    for path, text in texts.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text, encoding="utf-8")
    options = [
        item for flag, path in SIDE_FILES.get(spec, []) for item in (flag, str(folder / path))
    ]
    code, err = _matrix("validate", str(folder / spec), *options)
    hypothesis.event(f"validate exit {code}")
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 0:
        code, err = _matrix("run", "--dry-run", str(folder / spec), *options)
        assert code in (0, 2), err
        assert "Traceback" not in err
