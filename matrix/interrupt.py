"""Ctrl-C, SIGTERM and SIGHUP (a dropped terminal or SSH session), taken as "stop and
report", whenever they come.

The CLI calls `defer()` before its first heavy import: a signal during imports, loading or
planning is kept (`pending`), not obeyed at once, so the run that follows starts interrupted,
runs nothing and still writes every report (exit 130). During the run, the engine `listen`s:
the signal cancels the tasks still going. After it, the reports are written all the same. A
third signal is the way out that writes nothing: KeyboardInterrupt.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
ESCAPE = 3  # the signal that stops at once, reports or not

_received: list[int] = []
_callbacks: list[Callable[[], None]] = []


def _on_signal(signum: int, frame: Any) -> None:
    _received.append(signum)
    if len(_received) >= ESCAPE:
        raise KeyboardInterrupt
    for callback in list(_callbacks):
        callback()


def defer() -> None:
    """Keep SIGINT, SIGTERM and SIGHUP from now on instead of dying of them (main thread only); what
    came before belongs to an earlier command."""
    _received.clear()
    _install()


def _install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)


def escaping() -> bool:
    """Whether enough signals came that the run is to stop at once (KeyboardInterrupt)."""
    return len(_received) >= ESCAPE


def pending() -> bool:
    """Whether a signal has come (the run should stop, and the exit code be 130)."""
    return bool(_received)


@contextmanager
def listen(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` on each signal while inside (at once, when one already came); the
    handlers there were before come back after. The callback runs in a signal handler: it may
    only hand work to the event loop (`loop.call_soon_threadsafe`). The signals it saw are
    the caller's to record: they are not `pending` after it."""
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _install()
    _callbacks.append(callback)
    try:
        if _received:
            callback()
        yield
    finally:
        _callbacks.remove(callback)
        _received.clear()
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(sig, handler)
