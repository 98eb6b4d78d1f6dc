"""The async executor: runs a Plan's tasks concurrently and turns each into a Result.

One bad row never sinks the run: a probe that raises, hangs or loses its host becomes an
`error` result, and Ctrl-C, --fail-fast or a crash still leave a Result for every task, so
reporters always have a whole Run to write.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from dataclasses import dataclass, replace
from typing import Any

import anyio

from matrix import held, interrupt
from matrix.errors import NoAnswer, ProbeError, TransportError
from matrix.listener import Listener, Listeners
from matrix.observations import Observation, Observations
from matrix.plan.model import Plan, Task
from matrix.probe import ProbeContext
from matrix.redact import redact
from matrix.results import (
    Attempt,
    Result,
    Run,
    Skip,
    SkipKind,
    Status,
    json_safe,
    phase_infos,
    span,
)
from matrix.room import Room
from matrix.spec import template
from matrix.spec.expect import evaluate, unread
from matrix.spec.models import Check, TargetSpec
from matrix.transport import TargetPool, address, transport
from matrix.transport.base import LOCAL, LOCAL_NAMES, TargetRef

AGENT_TASKS = 64  # a host's tasks at once through its agent, unless `max_sessions` says
CHANNELS = 4  # SSH channels at once per host without the agent (servers allow 10 by default)


def default_concurrency() -> int:
    """Probes mostly wait on subprocesses and sockets, so allow several per core."""
    return max(4, (os.cpu_count() or 2) * 4)


@dataclass
class Options:
    concurrency: int = 0
    fail_fast: bool = False
    handle_signals: bool = True
    node: str | None = None  # the Slurm node a run on it stands for (`--slurm-node`): the
    # host of its `local` results, and a label of every output


class _Execution:
    def __init__(self, plan: Plan, options: Options, listeners: Sequence[Listener] | Listeners):
        self.plan = plan
        self.options = options
        self.listeners = listeners if isinstance(listeners, Listeners) else Listeners(listeners)
        self.results: dict[str, Result] = {}
        self.done = {task_id: anyio.Event() for task_id in plan.tasks}
        self.done.update((name, anyio.Event()) for name in plan.groups)  # set by its last task
        self.unfinished = {name: len(members) for name, members in plan.groups.items()}
        self.member_of: dict[str, list[str]] = {}
        for name, members in plan.groups.items():
            for task_id in members:
                self.member_of.setdefault(task_id, []).append(name)
        self.group_blockers: dict[tuple[str, bool], str | None] = {}
        concurrency = options.concurrency or default_concurrency()
        self.limit = anyio.CapacityLimiter(concurrency)
        self.pool = TargetPool(  # every place a task that is not filtered out runs
            (
                host
                for task in plan.tasks.values()
                if task.skip is None
                for host in task.spans or (task.target,)
            ),
            spec=plan.spec.name,
            budgets=plan.budgets(),
        )
        self.host_limits = {
            name: anyio.CapacityLimiter(_tasks_at_once(ref.options))
            for name, ref in plan.targets.items()
            if transport(ref.via).remote and ref.options is not None
        }
        self.exclusive: dict[str, anyio.Lock] = {}
        self.observations = Observations()
        self.room = Room()
        self.interrupted = False
        self.stopped_early: Skip | None = None
        self.scope = anyio.CancelScope()

    async def run(self) -> Run:
        started_at, started = time.time(), time.perf_counter()
        self.listeners.start(self.plan)
        with self.scope, self._signals(), self._watched():
            async with self.pool, anyio.create_task_group() as work:
                for task in self.plan.tasks.values():
                    if not self.interrupted:
                        work.start_soon(self._run_task, task)
        if self.interrupted:
            unfinished = Skip(SkipKind.interrupted)
        else:
            unfinished = self.stopped_early or Skip(SkipKind.not_run)
        for task_id, task in self.plan.tasks.items():
            if task_id not in self.results:
                self._record(self._result(task, Status.skipped, skip=unfinished))
        run = Run(
            spec_name=self.plan.spec.name,
            spec_path=str(self.plan.spec_path),
            vars=redact(self.plan.vars),
            phases=phase_infos(self.plan.spec.phases),
            results=[self.results[task_id] for task_id in self.plan.tasks],
            order=self.plan.order,
            started_at=started_at,
            duration=time.perf_counter() - started,
            interrupted=self.interrupted,
            stopped_early=self.stopped_early.text if self.stopped_early else None,
            warnings=[*self.plan.warnings, *self.pool.notes],
            node=self.options.node,
        )
        run.warnings += [phase.budget_warning() for phase in run.over_budget()]
        return run

    def _signals(self) -> AbstractContextManager[None]:
        """SIGINT/SIGTERM cancel the run (also one that came while it was planned: then no
        task starts). The handler only schedules the cancel on the loop."""
        if not self.options.handle_signals:
            return nullcontext()
        self.interrupted = interrupt.pending()
        loop = asyncio.get_running_loop()
        return interrupt.listen(lambda: loop.call_soon_threadsafe(self._interrupt))

    def _watched(self) -> AbstractContextManager[None]:
        """A probe that holds the event loop past its timeout is broken off (matrix.held)."""
        if not self.options.handle_signals:
            return nullcontext()
        return held.watching(_Execution._look.__code__, _overdue)

    def _interrupt(self) -> None:
        self.interrupted = True
        self.scope.cancel()

    def _record(self, result: Result) -> None:
        self.results[result.task_id] = result
        self.listeners.task_finished(result)
        if self.options.fail_fast and result.bad and result.severity == "critical":
            self.stopped_early = Skip(SkipKind.stopped, result.task_id)
            self.scope.cancel()

    async def _run_task(self, task: Task) -> None:
        try:
            if task.skip:
                self._record(self._result(task, Status.skipped, skip=task.skip))
                return
            blocker = await self._blocker(task)
            if blocker:
                blocked = Skip(SkipKind.blocked, blocker)
                self._record(self._result(task, Status.skipped, skip=blocked))
                return
            if task.compares:
                self._record(self._compared(task))
                return
            if task.error:
                why = Attempt(
                    time.time(), 0.0, Status.error, task.error, "not-configured", "NotConfigured"
                )
                self._record(
                    self._result(task, Status.error, error=task.error, attempts=1, tries=[why])
                )
                return
            async with self._alone(task), self._turn(task), self._slot(task):
                self.listeners.task_started(task)
                env = self.listeners.probe_env(task)
                self._record(await self._observe(task, env))
        finally:
            self._done(task.id)

    def _done(self, task_id: str) -> None:
        self.done[task_id].set()
        for name in self.member_of.get(task_id, ()):
            self.unfinished[name] -= 1
            if not self.unfinished[name]:
                self.done[name].set()

    def _alone(self, task: Task) -> AbstractAsyncContextManager[None]:
        """Every task holds the run's room beside the others, but one that runs alone holds
        it by itself. Taken before a task's turn and slot, so a task waiting to be alone
        holds nothing another waits for."""
        assert task.params is not None
        alone = task.check.alone if task.check.alone is not None else task.params.alone
        return self.room.alone() if alone else self.room.beside()

    def _turn(self, task: Task) -> AbstractAsyncContextManager[Any]:
        """An exclusive probe waits for its target's previous exclusive task to finish,
        before it takes a slot, so waiting holds no slot from lighter tasks. A task across a
        group takes the turn of every host it spans, in one order for all, so no two
        spanning tasks can each hold a host the other waits for."""
        assert task.params is not None
        if not task.params.exclusive:
            return nullcontext()
        if task.spans:
            return self._turns(sorted({host.name for host in task.spans}))
        where = LOCAL.name if task.params.runs_on == "controller" else task.target.name
        return self.exclusive.setdefault(where, anyio.Lock())

    @asynccontextmanager
    async def _turns(self, names: list[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as held:
            for name in names:
                await held.enter_async_context(self.exclusive.setdefault(name, anyio.Lock()))
            yield

    def _slot(self, task: Task) -> anyio.CapacityLimiter:
        """The limiter a task waits on. `--concurrency` bounds work on this machine; a task
        on an SSH host costs this machine one channel, so only the host's `max_sessions`
        bounds it and a fleet runs all its hosts at once."""
        assert task.params is not None
        if task.params.runs_on == "target" and task.target.name in self.host_limits:
            return self.host_limits[task.target.name]
        return self.limit

    def _compared(self, task: Task) -> Result:
        """A `consistent` row: its hosts' tasks have all finished; compare their facts."""
        from matrix.consistency import compare

        hosts = [self.results[need.task_id] for need in task.needs if not need.blocks]
        status, facts, why = compare(task.compares, hosts)
        if status is Status.error:  # no host observed: their own rows say why
            return self._result(task, Status.skipped, skip=Skip(SkipKind.blocked, hosts[0].task_id))
        return self._result(task, status, facts=facts, reason=why, attempts=1)

    async def _blocker(self, task: Task) -> str | None:
        """The root task whose outcome blocks this one, if any."""
        for need in task.needs:
            finished = self.done[need.task_id]
            if not finished.is_set():  # a group of thousands is waited on as one
                await finished.wait()
            if not need.blocks:
                continue
            if need.task_id in self.plan.groups:
                root = self._group_blocker(need.task_id, need.strict)
            else:
                root = self._blocker_in(need.task_id, need.strict)
            if root:
                return root
        return None

    def _group_blocker(self, name: str, strict: bool) -> str | None:
        """The first root among a finished group's tasks, found once for all who wait on it."""
        key = (name, strict)
        if key not in self.group_blockers:
            members = self.plan.groups[name]
            found = (self._blocker_in(task_id, strict) for task_id in members)
            self.group_blockers[key] = next((root for root in found if root), None)
        return self.group_blockers[key]

    def _blocker_in(self, task_id: str, strict: bool) -> str | None:
        """The root task whose outcome, seen through this finished task, blocks a task that
        needs it: any failure for a strict need, only a critical one otherwise."""
        needed = self.results.get(task_id)
        if needed is None:
            return None
        if needed.skip is not None and needed.skip.kind is SkipKind.blocked:
            root = needed.skip.detail
            cause = self.results.get(root)
            if strict or (cause is not None and cause.severity == "critical"):
                return root
        elif needed.bad and (strict or needed.severity == "critical"):
            return needed.task_id
        return None

    async def _observe(self, task: Task, env: dict[str, str]) -> Result:
        retry = task.check.retry
        allowed = retry.attempts if retry else 1
        started_at, started = time.time(), time.perf_counter()
        tries: list[Attempt] = []
        for attempt in range(1, allowed + 1):
            last, facts = await self._attempt(task, env, first=attempt == 1)
            tries.append(last)
            if last.status is Status.passed or attempt == allowed or retry is None:
                break
            await anyio.sleep(retry.backoff * 2 ** (attempt - 1))
        bad = last.status is Status.error
        return self._result(
            task,
            last.status,
            facts=facts,
            error=last.reason if bad else None,
            reason=None if bad else last.reason,
            attempts=attempt,
            duration=time.perf_counter() - started,
            started_at=started_at,
            tries=tries,
        )

    async def _attempt(
        self, task: Task, env: dict[str, str], first: bool
    ) -> tuple[Attempt, dict[str, Any]]:
        """One try: the probe's observation (shared with the tasks that ask the same, on a
        first try), then the expectation over its facts."""
        seen = await self.observations.answer(
            _question(task) if first else None, lambda: self._look(task, env)
        )

        def ended(status: Status, *why: str | None) -> Attempt:
            return Attempt(seen.began, seen.duration, status, *why)

        facts = seen.facts
        if seen.error:
            return ended(Status.error, *seen.error), facts
        partial = unread(task.expect, facts)
        if partial:
            return ended(Status.error, partial, "incomplete", None), facts
        unmet = evaluate(task.expect, facts)
        if not unmet:
            return ended(Status.passed), facts
        return ended(Status.failed, _explain(facts, unmet), "assertion"), facts

    async def _look(self, task: Task, env: dict[str, str]) -> Observation:
        """The probe under its timeout: its facts, or why it could not observe."""
        assert task.params is not None
        timeout = task.check.timeout
        began, clock = time.time(), time.perf_counter()

        def seen(facts: dict[str, Any], *error: str) -> Observation:
            why = (error[0], error[1], error[2]) if error else None
            return Observation(began, time.perf_counter() - clock, facts, why)

        try:
            ref = LOCAL if task.params.runs_on == "controller" else task.target
            target = self.pool.get(task.spans[0] if task.spans else ref)
            ctx = ProbeContext(target=target, task_id=task.id, env=env, timeout=timeout)
            if task.spans:
                ctx.targets = tuple(self.pool.get(host) for host in task.spans)
                ctx.addresses = tuple(address(host)[0] or "127.0.0.1" for host in task.spans)
            with anyio.fail_after(timeout):
                facts = await task.params.observe(ctx)
            if not isinstance(facts, Mapping):
                why = (
                    f"probe {task.params.kind} crashed: observe() returned "
                    f"{type(facts).__name__}, not a mapping of facts (a bug of the probe)"
                )
                return seen({}, why, "crash", "TypeError")
            return seen(json_safe(facts))
        except TimeoutError:
            why = f"timed out after {span(timeout)} (probe killed)"
            return seen({}, why, "timeout", "TimeoutError")
        except held.Held:
            why = (
                f"timed out after {span(timeout)}: probe {task.params.kind} held matrix's event "
                "loop (a blocking call such as time.sleep in its async observe(): await "
                "anyio.sleep, or run blocking work in anyio.to_thread.run_sync)"
            )
            return seen({}, why, "timeout", "Held")
        except ProbeError as exc:
            why = json_safe(_said(exc))
            return seen(json_safe(exc.facts), why, _error_type(exc), type(exc).__name__)
        except BaseException as exc:  # a plugin may raise anything: SystemExit, GeneratorExit…
            if self._ours(exc):
                raise
            name = type(exc).__name__
            why = json_safe(f"probe {task.params.kind} crashed: {name}: {_said(exc)}")
            return seen({}, why, "crash", name)

    def _ours(self, exc: BaseException) -> bool:
        """Whether `exc` is the run's own way of stopping (a cancellation the run asked for,
        the third Ctrl-C), not something a probe raised of itself."""
        if isinstance(exc, KeyboardInterrupt):
            return interrupt.escaping()
        return isinstance(exc, anyio.get_cancelled_exc_class()) and self.scope.cancel_called

    def _host(self, ref: TargetRef) -> str:
        """A task's host: on a node-local run, the node `local` stands for."""
        if self.options.node and ref.group in LOCAL_NAMES:
            return self.options.node
        return ref.host

    def _result(
        self,
        task: Task,
        status: Status,
        *,
        facts: dict[str, Any] | None = None,
        error: str | None = None,
        reason: str | None = None,
        skip: Skip | None = None,
        attempts: int = 0,
        duration: float = 0.0,
        started_at: float | None = None,
        tries: list[Attempt] | None = None,
    ) -> Result:
        check = task.check
        facts = facts or {}
        cause = error or reason or (skip.text if skip else None)
        bad = status in (Status.failed, Status.error)
        account = _own_account(facts, evaluate(task.expect, facts)) if bad else None
        why = error or account or ""
        context = {**task.context, "facts": facts, "error": why, "reason": cause or ""}
        # a failed line leads with what went wrong; an error did not observe the failure mode,
        # so it keeps the row's own name, and its reason says what stopped the check
        failure = check.failure if status is Status.failed else None
        title = failure or _text(check.title, context) or check.category or check.id
        host, port = address(task.target)
        return Result(
            task_id=task.id,
            check_id=check.id,
            phase_id=task.phase.id,
            target=task.target.name,
            host=self._host(task.target),
            cell=redact(task.cell),
            group=task.target.group,
            status=status,
            severity=check.severity.value,
            title=redact(title),
            name=redact(_name(check)),
            category=check.category,
            failure=check.failure,
            diagnostic=redact((_text(check.diagnostic, context) or cause) if bad else None),
            fix=redact(_text(check.fix, context) if bad else None),
            reason=redact(error or reason),
            facts=redact(facts),
            attempts=attempts,
            duration=duration,
            started_at=started_at,
            tries=[replace(t, reason=redact(t.reason)) for t in tries or []],
            error_type=tries[-1].error_type if tries else None,
            exception=tries[-1].exception if tries else None,
            skip=skip,
            address=host,
            port=port,
        )


def _question(task: Task) -> tuple[Any, ...] | None:
    """What a task asks: its probe and params, where, and the timeout (a probe may bound
    itself by it); None for a task that must look for itself (it retries, or its probe
    acts)."""
    assert task.params is not None
    if task.check.retry is not None or not task.params.shared:
        return None
    where = LOCAL.name if task.params.runs_on == "controller" else task.target.name
    params = json.dumps(task.params.model_dump(mode="json"), sort_keys=True, default=str)
    spans = tuple(host.name for host in task.spans)
    return (where, spans, task.params.kind, task.check.timeout, params)


def _said(exc: BaseException) -> str:
    """An exception's message, or a safe account of it when its __str__ itself raises."""
    try:
        return str(exc)
    except Exception as broken:
        return f"(its message cannot be shown: {type(broken).__name__} in __str__)"


def _error_type(exc: ProbeError) -> str:
    """`transport` when the probe's target could not run it, `no-answer` when its program
    ended without a result, else `probe-error`: only the last is evidence about the target."""
    if isinstance(exc, TransportError):
        return "transport"
    return "no-answer" if isinstance(exc, NoAnswer) else "probe-error"


def _tasks_at_once(options: TargetSpec) -> int:
    """A remote host's bound: its `max_sessions`; unset, all its ready tasks with the agent
    (one session carries them), 4 SSH channels without."""
    if options.max_sessions is not None:
        return options.max_sessions
    return AGENT_TASKS if options.agent else CHANNELS


def _name(check: Check) -> str:
    """The check's title as written when it is plain text, else its id."""
    plain = check.title and not template.is_template(check.title)
    return str(check.title) if plain else check.id


def _own_account(facts: dict[str, Any], unmet: Mapping[str, str]) -> str | None:
    """The probe's own account of what is wrong, when it gave one. By convention a probe
    says it in a `problems` fact, a sentence per fact ({"missing.text": "Records missing
    'text' field: 3 of 10"}), of which the one for the first unmet fact (or its nearest
    parent) speaks for the check; else in a `problem` or `error` fact, e.g. "PORT='abc' is
    not an int" or "AccessDenied: ..."."""
    said = facts.get("problems")
    if isinstance(said, dict):
        for path in unmet:
            parts = path.split(".")
            for end in range(len(parts), 0, -1):
                sentence = said.get(".".join(parts[:end]))
                if isinstance(sentence, str) and sentence:
                    return sentence
    detail = facts.get("problem") or facts.get("error")
    return detail if isinstance(detail, str) and detail else None


def _explain(facts: dict[str, Any], unmet: Mapping[str, str]) -> str:
    """Unmet matchers, led by the probe's own account of what is wrong."""
    detail = _own_account(facts, unmet)
    problems = "; ".join(unmet.values())
    return f"{detail} ({problems})" if detail else problems


def _text(source: str | None, context: dict[str, Any]) -> str | None:
    """Render a diagnostic/fix/title; a template naming a fact that was not observed falls
    back to None so the caller shows the raw cause instead of crashing."""
    if source is None:
        return None
    try:
        return template.render_text(source, context)
    except template.RenderError:
        return None


def _overdue(frame: dict[str, Any]) -> bool:
    """Whether the observation `_look` is making (its locals) is past its timeout."""
    timeout, clock = frame.get("timeout"), frame.get("clock")
    return (
        timeout is not None
        and clock is not None
        and (time.perf_counter() - clock > timeout + held.GRACE)
    )


async def execute(
    plan: Plan, options: Options | None = None, listeners: Sequence[Listener] | Listeners = ()
) -> Run:
    """Run every task of the plan; always returns a complete Run."""
    return await _Execution(plan, options or Options(), listeners).run()
