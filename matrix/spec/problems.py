"""Spec problems that point at file:line:col, collected so `validate` reports all at once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Position:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """What is wrong and where. `code` names a kind of problem that a program acts on
    (`unknown-need`: a `needs:` entry names no phase or check); most have none."""

    where: Position
    key: str
    message: str
    code: str = ""

    def __str__(self) -> str:
        prefix = f"{self.key}: " if self.key else ""
        return f"{self.where}: {prefix}{self.message}"


class SpecInvalid(Exception):
    """The spec (or a vars file) cannot be used; every problem found is attached."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.where, p.message))
        super().__init__("\n".join(map(str, self.problems)))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{hint[0]}'?)" if hint else ""
