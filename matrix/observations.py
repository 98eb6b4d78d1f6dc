"""One observation per question a run asks: checks that ask the same probe the same thing on
the same place (pipeline.yaml's pytorch, cuda and gpu-memory rows all read `torch.env`; one
soak judged both for a leak and for running out of memory) share one run of it, and each
judges the facts by its own expectation. A check with `retry` looks for itself after its
first try, since a retry is a fresh observation by definition."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio


@dataclass(frozen=True)
class Observation:
    """What one run of a probe gave: its facts, or why it could not observe (the reason,
    the error type and the exception's class), and when it ran."""

    began: float
    duration: float
    facts: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str, str] | None = None


class Observations:
    """The run's observations by question. The first task to ask makes the observation;
    one that asks while it is under way waits for it, and one that asks later reads it."""

    def __init__(self) -> None:
        self._asked: dict[Hashable, tuple[anyio.Event, list[Observation]]] = {}

    async def answer(
        self, question: Hashable | None, look: Callable[[], Awaitable[Observation]]
    ) -> Observation:
        """The observation for `question`, made by `look` unless it was made already; a
        question of None is never shared."""
        if question is None:
            return await look()
        asked = self._asked.get(question)
        if asked is not None:
            await asked[0].wait()
            if asked[1]:
                return asked[1][0]
            return await look()  # the first asker was cancelled before it saw anything
        made, box = anyio.Event(), []
        self._asked[question] = (made, box)
        try:
            box.append(await look())
        finally:
            made.set()
            if not box:
                del self._asked[question]
        return box[0]
