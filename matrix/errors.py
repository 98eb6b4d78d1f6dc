"""Error types shared by the probe contract and the transports (a leaf: imports nothing).

A probe raises `ProbeError` when it cannot observe; a transport raises `TransportError` when
it cannot run what a probe asked (host unreachable, connection or Slurm step lost). Both end
as the task's `error` result, so `TransportError` is a kind of `ProbeError`; only the first
is evidence about the target (a program the target lacks is: the target said so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ProbeError(Exception):
    """The probe could not observe; the task becomes an `error` with this message.

    `facts` is what it did see before it stopped (e.g. an AWS `error_code`), kept on the
    result so diagnostics and CI can tell one cause from another."""

    def __init__(self, message: str, facts: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.facts = dict(facts or {})


class TransportError(ProbeError):
    """The target could not run a command: it cannot be reached or went away. Nothing was
    observed on it, so `run --drain` never acts on it."""


class NoAnswer(ProbeError):
    """A remote program printed no result: it was killed (a launcher ended it once another
    task failed, a timeout) or never started."""
