"""The probe contract: a probe kind is a pydantic params model with an async `observe`, and
the registry of every kind there is.

Built-in kinds live in `probes/` (indexed in probes/builtin.py, imported on first use);
third-party kinds register through the `matrix.probes` entry-point group. Importing a probe
module must stay cheap (no torch/boto/asyncssh at module level) because `validate` imports
the modules of every kind a spec uses, and `list` all of them.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, model_validator

from matrix import remote
from matrix.errors import NoAnswer, ProbeError
from matrix.remote import OUTPUT_LIMIT

__all__ = ["OUTPUT_LIMIT"]  # what a target's command may print per stream; the rest is cut

if TYPE_CHECKING:
    from matrix.transport.base import Completed, Target

BUILTIN = "probes.builtin"  # its KINDS: each built-in kind and the module declaring it
ENTRY_POINT_GROUP = "matrix.probes"
RunsOn = Literal["target", "controller"]
__all__ = [
    "NoAnswer",
    "ProbeContext",
    "ProbeError",
    "ProbeParams",
    "ScriptProbe",
    "probe",
    "registry",
]


class ProbeParams(BaseModel):
    """Base of every probe kind: fields are the probe's params, validated from the spec."""

    # coerce: `argv: [sleep, "{{ vars.secs }}"]` renders 1 (native), argv wants "1"
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, defer_build=True)

    kind: ClassVar[str]
    runs_on: ClassVar[RunsOn] = "target"
    # Probes that measure or fill the target's GPU memory or cores (torch.*) would skew or
    # OOM each other: the engine runs such tasks one at a time per target.
    exclusive: ClassVar[bool] = False
    # Probes that measure (latency under load) and would be skewed by any other task: the
    # engine runs each with nothing else of the run beside it, unless its check says no.
    alone: ClassVar[bool] = False
    # Probes that work across several hosts at once (torch.distributed): a check may run
    # them `across` a group, one task with every host in `ProbeContext.targets`.
    spans: ClassVar[bool] = False
    # Probes that only look: checks asking one the same thing on the same place share one
    # observation (matrix/observations.py). Those whose running acts (a team's command, a
    # message sent) set it false, so each check runs its own.
    shared: ClassVar[bool] = True
    default_expect: ClassVar[dict[str, Any]] = {}
    facts: ClassVar[dict[str, str]] = {}
    # Params that carry a credential (a webhook URL): the spec must give them as a
    # `{{ secret.NAME }}` reference, so a literal never lands in the spec, reports or history.
    secret_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _bools_as_text(cls, data: Any) -> Any:
        """`--var flag=true` arrives as a bool; a text param wants 'true'."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            k: _as_text(v) if k in fields and _wants_text(fields[k].annotation) else v
            for k, v in data.items()
        }

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        raise NotImplementedError


def _wants_text(annotation: Any) -> bool:
    """True for str, str | None, list[str], dict[str, str]: text but never a bool."""
    args = {annotation, *get_args(annotation)}
    for arg in list(args):
        args.update(get_args(arg))
    return str in args and bool not in args


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    return value


class ScriptProbe(ProbeParams):
    """A probe observed entirely by one remote script (`script`, in probes/remote/ or a path):
    the params travel with `op` set to the probe's kind, so one script can serve a family.
    `libraries` are shared remote modules sent ahead of the script (e.g. "_torch");
    `preload` the modules it imports that take seconds (torch), which a target's agent
    imports once and then forks each such script from itself."""

    script: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]] = ()
    preload: ClassVar[tuple[str, ...]] = ()

    async def observe(self, ctx: ProbeContext) -> dict[str, Any]:
        return await ctx.python(
            self.script, self.script_params(ctx), libraries=self.libraries, preload=self.preload
        )

    def script_params(self, ctx: ProbeContext) -> dict[str, Any]:
        """What the script gets: the params, and `op` (the kind). A kind that derives a param
        from the task (a time bound from its timeout) adds it here."""
        return {"op": self.kind, **self.model_dump()}


ProbeClass = type[ProbeParams]


def probe(
    kind: str,
    *,
    runs_on: RunsOn = "target",
    default_expect: dict[str, Any] | None = None,
    facts: dict[str, str] | None = None,
) -> Callable[[ProbeClass], ProbeClass]:
    """Declare a probe kind. `facts` documents what `observe` returns (name → meaning). The
    class joins the registry through its module: probes/builtin.py or an entry point."""

    def declare(cls: ProbeClass) -> ProbeClass:
        cls.kind = kind
        cls.runs_on = runs_on
        cls.default_expect = default_expect or {}
        cls.facts = facts or {}
        return cls

    return declare


class Registry(Mapping[str, ProbeClass]):
    """Every probe kind: built-ins (imported on first use, by the index in probes/builtin.py),
    then entry-point plugins (a plugin may replace a built-in kind). What went wrong on the
    way is kept to be named where it matters: a plugin that failed to import (`broken`: its
    module → why) only when a spec uses an unknown kind, a replaced kind (`replaced`: kind →
    (first module, the one that took it over)) only when a spec uses it."""

    def __init__(self, index: Mapping[str, str]) -> None:
        self._index = dict(index)  # built-in kind → its module, not imported yet
        self._kinds: dict[str, ProbeClass] = {}
        self.broken: dict[str, str] = {}
        self.replaced: dict[str, tuple[str, str]] = {}

    def add(self, source: ModuleType | ProbeClass) -> None:
        """The kinds a plugin's module declares (or one probe class an entry point names)."""
        for cls in _declared(source):
            loaded = self._kinds.get(cls.kind)
            previous = loaded.__module__ if loaded is not None else self._index.get(cls.kind)
            if previous is not None and previous != cls.__module__:
                self.replaced[cls.kind] = (previous, cls.__module__)
            self._kinds[cls.kind] = cls

    def __getitem__(self, kind: str) -> ProbeClass:
        if kind not in self._kinds:
            module = importlib.import_module(self._index[kind])  # KeyError: no such kind
            for cls in _declared(module):
                self._kinds.setdefault(cls.kind, cls)  # a plugin's replacement stays
        return self._kinds[kind]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._index, **self._kinds})

    def __len__(self) -> int:
        return len({**self._index, **self._kinds})


def _declared(source: ModuleType | ProbeClass) -> list[ProbeClass]:
    if not isinstance(source, ModuleType):
        return [source]
    return [
        cls
        for cls in vars(source).values()
        if inspect.isclass(cls)
        and issubclass(cls, ProbeParams)
        and cls.__module__ == source.__name__
        and "kind" in vars(cls)
    ]


@cache
def registry() -> Registry:
    """The registry, built once per process; a built-in kind's module is imported when the
    kind is first looked up."""
    from importlib.metadata import entry_points

    found = Registry(importlib.import_module(BUILTIN).KINDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.add(ep.load())
        except Exception as exc:  # one broken plugin must not break every spec
            found.broken[ep.value] = f"{type(exc).__name__}: {exc}"
    return found


@dataclass
class ProbeContext:
    """What a probe may touch: the target it runs on and the task's environment."""

    target: Target
    task_id: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    """Seconds this try has before it is killed: a probe that can stop early with a partial
    answer (a search) bounds itself by it."""
    targets: tuple[Target, ...] = ()
    """A check `across` a group: every host of it, `target` first (a spanning probe's kind
    sets `spans`); else empty."""
    addresses: tuple[str, ...] = ()
    """How the other hosts reach each of `targets` (an address or host name)."""

    def at(self, target: Target) -> ProbeContext:
        """The same task's context on another of its `targets`."""
        return replace(self, target=target)

    async def run(
        self, argv: list[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> Completed:
        """Run argv on the target (never through a shell unless argv says so), with the
        task's environment plus `env`: the way to hand a program a secret, since the host's
        process list shows argv to every user and the environment only to its owner."""
        return await self.target.run(argv, input=input, env={**self.env, **(env or {})})

    async def python(
        self,
        script: str | Path,
        params: Mapping[str, Any],
        *,
        libraries: tuple[str, ...] = (),
        preload: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Run a remote script with the target's python; return the facts it printed.

        `script` and each of `libraries` is a built-in name from probes/remote/ or a path to a
        plugin's file. The source travels on stdin with `params` inside it, so nothing is left
        on the host and no param shows in its process list.
        """
        source = remote.program(script, tuple(libraries), params, tuple(preload))
        done = await self.run([self.target.python, "-"], input=source)
        return _answer(done.stdout, done, f"{self.target.python} on {self.target.name}")

    async def python_across(
        self,
        script: str | Path,
        params: Mapping[str, Any],
        *,
        per_host: int,
        libraries: tuple[str, ...] = (),
        preload: tuple[str, ...] = (),
    ) -> list[dict[str, Any] | ProbeError] | None:
        """Run a remote script as one launch across `targets` (a Slurm job step), `per_host`
        tasks on each, task i on targets[i // per_host] and told so by the launcher's
        environment (SLURM_PROCID): each task's facts, or the error it answered, in task
        order. The first task to answer an error (or to exit non-zero) ends the others. None
        when the targets' transport has no such launch (SSH hosts): run the script on each,
        with `at`."""
        launch = getattr(self.target, "launch", None)
        source = remote.program(script, tuple(libraries), params, tuple(preload))
        argv = [self.target.python, "-"]
        step = (
            await launch(self.targets, per_host, argv, input=source, env=self.env)
            if launch
            else None
        )
        if step is None:
            return None
        answers: list[dict[str, Any] | ProbeError] = []
        for index, output in enumerate(step.outputs):
            where = f"{self.target.python} (task {index}) on {self.targets[index // per_host].name}"
            try:
                answers.append(_answer(output, step.launcher, where))
            except ProbeError as exc:
                answers.append(exc)
        return answers


def _answer(stdout: bytes, done: Completed, where: str) -> dict[str, Any]:
    """The facts a remote program printed as its last line; ProbeError with what it said
    instead, or NoAnswer with the tail of `done`'s stderr when it printed nothing."""
    try:
        reply = json.loads(stdout.strip().splitlines()[-1] if stdout.strip() else b"")
    except ValueError:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise NoAnswer(
            f"{where} exited {done.exit_code} without a result: {' | '.join(tail) or 'no output'}"
        ) from None
    if "error" in reply:
        raise ProbeError(reply["error"])
    return reply["facts"]
