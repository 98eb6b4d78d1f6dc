"""Spec problems that point at file:line:col, collected so `validate` reports all at once."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True, order=True)
class Position:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_LAST_KEY = re.compile(r"[.\]]")
SHOWN_PLACES = 8  # other places a repeated problem lists by line


@dataclass(frozen=True)
class Problem:
    """What is wrong and where. `code` names a kind of problem that a program acts on
    (`unknown-need`: a `needs:` entry names no phase or check); most have none. `also`: the
    other places the very same problem was found."""

    where: Position
    key: str
    message: str
    code: str = ""
    also: tuple[Position, ...] = ()

    def __str__(self) -> str:
        prefix = f"{self.key}: " if self.key else ""
        return f"{self.where}: {prefix}{self.message}{self._elsewhere()}"

    def _elsewhere(self) -> str:
        """` (and 19 more places: lines 215, 233, … 572)`; another file's places by name."""
        if not self.also:
            return ""
        shown = [
            str(p.line) if p.file == self.where.file else f"{p.file}:{p.line}" for p in self.also
        ]
        if len(shown) > SHOWN_PLACES:
            shown = [*shown[: SHOWN_PLACES - 1], "…", shown[-1]]
        count = len(self.also)
        places = "place" if count == 1 else "places"
        return f" (and {count} more {places}: line{'s' if count > 1 else ''} {', '.join(shown)})"


def merged(problems: Iterable[Problem]) -> list[Problem]:
    """One problem per distinct message and kind of key, at its first place, counting the
    others: a target group with no hosts that 20 checks run `on` is one thing to fix, so it
    is one line; "no values" for two different matrix axes stays two."""
    places: dict[tuple[str, str, str], list[Problem]] = {}
    for problem in sorted(set(problems), key=lambda p: (p.where, p.key, p.message)):
        kind = _LAST_KEY.split(problem.key)[-1]  # `on` of phases[p].checks[c].on
        places.setdefault((problem.message, problem.code, kind), []).append(problem)
    firsts = []
    for same in places.values():
        others = tuple(dict.fromkeys(p.where for p in same[1:] if p.where != same[0].where))
        firsts.append(replace(same[0], also=others))
    return sorted(firsts, key=lambda p: (p.where, p.message))


class SpecInvalid(Exception):
    """The spec (or a vars file) cannot be used; every problem found is attached, a problem
    found at many places once (see `merged`)."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = merged(problems)
        super().__init__("\n".join(map(str, self.problems)))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
