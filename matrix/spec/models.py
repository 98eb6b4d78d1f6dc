"""Pydantic models of the spec YAML: the single source of the schema (`matrix schema`)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """'500ms', '10s', '2m', '1h' or a number of seconds → float seconds."""
    if isinstance(value, str):
        found = _DURATION.match(value)
        if not found:
            raise ValueError(f"expected a duration like 500ms, 10s, 2m or 1h, got {value!r}")
        return float(found[1]) * _UNITS[found[2]]
    return value


MAX_SECONDS = 7 * 24 * 3600  # a week: longer is a typo, and far-off deadlines overflow timers
MAX_WEIGHT = 1_000_000  # weights are relative; finite and bounded so score sums stay numbers

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            ]
        }
    ),
]
Weight = Annotated[float, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]
Id = Annotated[str, Field(pattern=ID_PATTERN)]


def _fact_path(path: str) -> str:
    if not path.strip() or path != path.strip():
        raise ValueError(
            f"{path!r} is not a fact path: name a fact, or a dotted path into one "
            "(packages.torch, gpu.count), without spaces around it"
        )
    return path


def _fact_paths(paths: list[str]) -> list[str]:
    if not paths:
        raise ValueError(
            "an empty list compares nothing: list the fact paths that must agree on every "
            "host (e.g. [packages.torch, gpu.count]), or leave `consistent` out"
        )
    twice = sorted({path for path in paths if paths.count(path) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(repr, twice))} listed twice: list each fact path once")
    return paths


def _env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not an environment variable name: letters, digits and _, not "
            "starting with a digit (HF_TOKEN)"
        )
    return name


def _tag(tag: str) -> str:
    if not tag or any(c.isspace() or c == "," for c in tag):
        raise ValueError(f"{tag!r} is not a tag: one word, no spaces or commas (gpu, slow)")
    return tag


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
EnvName = Annotated[
    str,
    AfterValidator(_env_name),
    WithJsonSchema({"type": "string", "pattern": f"^{_ENV_NAME.pattern}$"}),
]
Tag = Annotated[
    str, AfterValidator(_tag), WithJsonSchema({"type": "string", "pattern": r"^[^\s,]+$"})
]
FactPath = Annotated[
    str, AfterValidator(_fact_path), WithJsonSchema({"type": "string", "pattern": r"^\S(.*\S)?$"})
]
FactPaths = Annotated[
    list[FactPath],
    AfterValidator(_fact_paths),
    Field(json_schema_extra={"minItems": 1, "uniqueItems": True}),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Severity(str, Enum):
    critical = "critical"
    warning = "warning"
    info = "info"


class Retry(Model):
    """Retry a check that did not pass (failed or errored), waiting backoff × 2^(attempt-1)
    between tries: with the defaults 1 s, then 2 s. The result records the number of attempts,
    and the console adds "(after N attempts)"."""

    attempts: int = Field(3, ge=1, le=100)
    """Total tries, the first included."""
    backoff: Duration = 1.0
    """Wait before the second try; doubles after each further one."""


class ProbeRef(BaseModel):
    """`kind` picks the probe; every other key is one of that kind's params, templated and
    validated against the kind's model (`matrix list --probes` lists the installed kinds)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    """Probe kind, e.g. `disk`, `command`, `python` (see `matrix list --probes`)."""


# The options of each remote `via` (the rest serve every group)
SSH_OPTIONS = frozenset(
    {"hosts", "user", "port", "key", "keys", "password", "jump", "known_hosts", "insecure"}
)
SLURM_OPTIONS = frozenset(
    {"partition", "nodes", "constraint", "account", "qos", "time", "gres", "start_timeout"}
)
# Slurm's time formats: minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s (never unlimited)
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")


def slurm_time(value: Any) -> Any:
    """A job's time limit as Slurm writes it; an unlimited one is refused, so that no job of
    matrix can outlive its run for good."""
    if value is None:
        return value
    text = str(value).strip()
    if not _SLURM_TIME.match(text) or not any(c not in "0-:" for c in text):
        raise ValueError(
            f"expected a Slurm time limit such as 30, 30:00, 2:00:00 or 1-00:00, got {value!r}: "
            "a job of matrix always ends by itself (leave `time` out to derive it from the "
            "checks' timeouts)"
        )
    return text


class TargetSpec(Model):
    """A named group of hosts that checks can run `on`; every option is templated with vars,
    env and secret."""

    via: Literal["local", "ssh", "slurm"] = "ssh"
    """`ssh` for remote hosts, `slurm` for the nodes of a Slurm partition (a run holds one
    job on the group's nodes and runs its tasks there as steps of it, through `srun`),
    `local` for this machine (e.g. with another python)."""
    hosts: list[str] = []
    """Host names or addresses: `host`, `host:port`, `[fe80::1]:22`, or a range such as
    `gpu-[01-16]` (padding kept). Hosts that render empty are dropped, and a check `on` a group
    with no hosts is a spec error. Ranges are counted before they are listed: a spec plans at
    most 500,000 tasks, so a range past that is a spec error."""
    user: str | None = None
    """SSH login user (default: ~/.ssh/config, then the local user)."""
    port: int | None = Field(None, ge=1, le=65535)
    """SSH port (default 22)."""
    key: str | None = None
    """Private key file."""
    keys: list[str] = []
    """Several private key files, tried in order."""
    password: str | None = None
    """Password: must be exactly a `{{ secret.NAME }}` reference with NAME listed under
    `secrets:`, never a literal (anything else is a spec error)."""
    jump: list[str] = []
    """ProxyJump hops, `user@host:port`, outermost first."""
    known_hosts: str | None = None
    """known_hosts file used to verify host keys (default ~/.ssh/known_hosts)."""
    insecure: bool = False
    """Skip host key verification; every report warns about it."""
    connect_timeout: Duration = 10.0
    """Seconds to wait for a connection."""
    max_sessions: int | None = Field(None, ge=1, le=64)
    """Tasks at once per host. Unset: with the agent, every task of the host that is ready
    (it sends them at once, over one session, and its processes run side by side there, so a
    host's checks cost one round trip, not one per task), at most 64; with `agent: false`, 4
    (each is an SSH channel: keep it below the server's MaxSessions)."""
    agent: bool = True
    """Run the host's tasks through one helper python over one SSH session, so the host pays
    one login instead of one per task; `false` opens a session per task (hosts without
    python; the helper falls back to that by itself when it cannot start)."""
    python: str | None = None
    """Python interpreter on the host for python-based probes (default python3; for a
    `via: local` group, the interpreter running matrix)."""
    partition: str | None = None
    """Slurm: the partition whose nodes this group is; without `nodes`, all of them, as
    `sinfo` lists them when the spec is planned (down and drained ones included: their
    checks are blocked by the node's gate, which says why)."""
    nodes: str | None = None
    """Slurm: a hostlist of the nodes to check, e.g. `gpu-[01-16],gpu-20` (default: every
    node of `partition` with the `constraint`'s features)."""
    constraint: str | None = None
    """Slurm: node features the nodes must have (`--constraint`), e.g. `a100&ib`."""
    account: str | None = None
    """Slurm: the account the group's job is charged to (`--account`)."""
    qos: str | None = None
    """Slurm: the quality of service of the group's job (`--qos`)."""
    time: Annotated[str | None, BeforeValidator(slurm_time)] = None
    """Slurm: the time limit of the group's job (`--time`, e.g. `30:00`). By default it is
    derived from the timeouts of the group's checks (each run out, retries included, one
    after another), so that the job ends by itself even if matrix is killed; the job ends
    with the run in any case. Unlimited is refused."""
    start_timeout: Duration = 120.0
    """Slurm: how long a node's step may wait to start, held behind the job's prolog on the
    node (or, with PrologFlags=Alloc, the job itself), before the node's gate errors saying
    what held it. Give it at least the prolog's own time budget."""
    gres: str | None = None
    """Slurm: generic resources the job takes on each node (`--gres`), e.g. `gpu:8`: where
    Slurm confines devices to jobs (cgroup ConstrainDevices), a job without GPUs sees none,
    so a GPU group needs this. Every check's step shares them."""


class Drain(str, Enum):
    """Which nodes a check's critical failure may take out of service (`run --drain`)."""

    observed = "observed"  # the node on which this row's probe observed the failure
    named = "named"  # also those a check across the nodes names by evidence (faulty_hosts)
    never = "never"  # none: the row informs, it never drains


class Check(Model):
    """One row of the failure matrix."""

    id: Id
    """Unique id across the spec, used by `needs`, filters and reports."""
    title: str | None = None
    """Short human name, rendered for every result with facts:
    `"Python {{ facts.version | default('3.10+') }}"`. A failing result is titled by the
    check's `failure` when it has one (a failed line never keeps a positive title such as
    "Learning rate converges"); an erroring one did not observe that failure, so it keeps
    its title and its reason says what stopped it. Without a title, or if it cannot render (a
    fact that was not observed), a result is titled by its `category`, then its `id`."""
    category: str | None = None
    """Test category, e.g. `AWS Credentials`; not templated."""
    failure: str | None = None
    """The failure mode this row guards against, e.g. `Invalid/expired credentials`; not
    templated."""
    severity: Severity = Severity.critical
    """critical blocks the deploy, warning asks for caution, info only informs."""
    probe: ProbeRef
    """What to observe: `{kind: ..., <params>}`; params are templated."""
    expect: dict[str, Any] | None = None
    """Matchers over fact paths (`{free_gb: {ge: 100}}`), templated; omitted → the probe's
    default expectation. A given `expect` replaces the default; it is not merged with it."""
    diagnostic: str | None = None
    """Printed when the check fails or errors; sees facts, error, reason, vars, target, check,
    matrix. Without one, or if it cannot render, the raw cause (the unmet matchers or the
    error) is printed instead."""
    fix: str | None = None
    """The fix action printed with the diagnostic (same context)."""
    needs: list[str] = []
    """Checks or phases that must pass first; otherwise this one is skipped as blocked."""
    on: str = "local"
    """Target group to run on: `local`, `controller` (both the machine running matrix) or a
    group under `targets:`; fans out to one task per host. Rendered with vars, env and secret:
    `on: "{{ vars.train_target }}"`."""
    timeout: Duration = 60.0
    """Seconds before the probe (and its processes) is killed and the task errors with
    `timed out after 60s (probe killed)`."""
    retry: Retry | None = None
    """Retry a check that did not pass (failed or errored)."""
    alone: bool | None = None
    """Run with no other task of the run beside it: for a measurement that other checks'
    load would skew (latency percentiles, throughput). It waits for the tasks running to
    end, and none starts until it has. Default: the probe kind's (`http.load` runs alone)."""
    tags: list[Tag] = []
    """Labels for `--tags` / `--skip-tags`."""
    when: str | bool | None = None
    """Template that must render true for the check to run (e.g. `{{ vars.use_gpu }}`)."""
    skip_reason: str | None = None
    """Said instead of the `when` condition when the row is skipped by it: what it could not
    check and what to set to check it (`set trace_downstream_port to test propagation`);
    templated like `when`."""
    across: str | None = None
    """Target group a check spans as one task, for probes that work across hosts
    (`torch.distributed`: ranks on every host, rendezvous on the first); the group's every
    host must be reachable first, and a dead or slow one is named. Rendered like `on`; give
    one of the two."""
    consistent: FactPaths = []
    """Fact paths that must be the same on every host of the check's `on` group (versions of
    torch, CUDA, the driver or Python; GPU count and model): once every host's task has
    finished, one more result, `ID@GROUP:consistent`, compares them and fails naming the hosts
    off the majority and the value the others agree on (`torch "2.4.0" on gpu-07; "2.5.1" on
    the other 15 hosts`). A host that did not observe (unreachable) is listed, not compared;
    when none did, the row is skipped as blocked by the first."""
    matrix: dict[str, list[Any] | str] = {}
    """Axes to expand: `{batch_size: [8, 16]}` → one task per combination; an axis may be a
    template that renders to a list (`"{{ vars.batch_sizes }}"`). Hosts × combinations are
    counted before any task is made: a spec plans at most 500,000 tasks."""
    weight: Weight = 1.0
    """Share of its phase's score relative to sibling checks."""
    drain: Drain = Drain.observed
    """Which Slurm nodes a critical failure of this row drains under `run --drain`:
    `observed` (the default), the node on which the probe ran and observed it — never one it
    could not reach or lost; `named`, also the nodes that a check across the group, or its
    `consistent` row, names at fault by what it measured on them (its `faulty_hosts` fact: the
    outliers, a straggler, a node whose rank failed on its own); `never`, none."""


class Phase(Model):
    """A named group of checks with a weight in the readiness score."""

    id: Id
    """Unique id, referenced by `needs`."""
    title: str | None = None
    """Heading shown in reports; defaults to the id."""
    weight: Weight = 10.0
    """Points this phase contributes to the 100-point readiness score."""
    needs: list[str] = []
    """Phases that must not be blocked (no critical check failed) before this one runs."""
    budget: Duration | None = None
    """Time the phase may take, e.g. 2m: a phase that takes longer makes the verdict at best
    CAUTION, and every report shows its measured time against the budget."""
    checks: list[Check] = []
    """The failure-matrix rows of this phase."""


class Spec(Model):
    """A failure matrix: vars, targets and phases of checks."""

    version: Literal[1]
    """Spec format version; always 1."""
    name: str
    """Name of the pipeline or system under test."""
    description: str | None = None
    """What this spec covers."""
    include: list[str] = []
    """Other spec files merged in (by phase id), relative to this file."""
    vars: dict[str, Any] = {}
    """Defaults for `{{ vars.* }}`; override with `--var k=v` or `--vars file.yaml`. A var may
    use the vars above it: `model_path: "{{ vars.training_dir }}/models"`."""
    secrets: list[EnvName] = []
    """Environment variables whose values are secrets: readable as `{{ secret.NAME }}`,
    replaced by *** in every output."""
    targets: dict[Id, TargetSpec] = {}
    """Named host groups; `local` (alias `controller`, the machine running matrix) always
    exists."""
    phases: list[Phase] = []
    """Phases in report order."""
