"""Breaks a probe's hold on the event loop: a plugin whose async `observe()` makes a blocking
call (`time.sleep(3600)`, a socket read without a timeout, a busy loop) stops every other
task and every timer, its own timeout included, so `anyio.fail_after` can never fire.

A thread watches the loop's heartbeat. When the loop has not beaten for GRACE seconds and
the main thread's stack is inside a probe's observation that is past its timeout (the
engine says which frames those are, and when one is overdue), it sends the main thread
SIGNAL; the handler raises `Held` there — in the middle of the blocking call, which a signal
interrupts — and the engine turns it into that task's timeout error. Blocking anywhere else
(matrix's own code, a probe within its time) is left alone. Only a loop run by the main
thread can be helped: signal handlers run there.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

GRACE = 1.0  # seconds the loop may go without a beat, and a probe past its timeout
BEAT = 0.25
SIGNAL = getattr(signal, "SIGRTMIN", signal.SIGALRM)


class Held(BaseException):
    """Raised into a probe that held the event loop past its timeout. A BaseException, so a
    plugin's `except Exception` does not swallow it."""


Overdue = Callable[[dict[str, Any]], bool]
"""The locals of a watched frame → whether its observation is past its timeout (+ GRACE)."""


@contextmanager
def watching(code: CodeType, overdue: Overdue) -> Iterator[None]:
    """Watch the running loop for the length of the block; nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    watch = _Watch(asyncio.get_running_loop(), code, overdue)
    previous = signal.signal(SIGNAL, watch.interrupt)
    watch.start()
    try:
        yield
    finally:
        watch.stop()
        signal.signal(SIGNAL, previous)


class _Watch:
    def __init__(self, loop: asyncio.AbstractEventLoop, code: CodeType, overdue: Overdue):
        self.loop, self.code, self.overdue = loop, code, overdue
        self.beat = time.monotonic()
        self.stopped = threading.Event()
        self.main = threading.main_thread().ident
        self.thread = threading.Thread(target=self._watch, name="matrix-held", daemon=True)
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.timer is not None:
            self.timer.cancel()
        self.thread.join()

    def _beat(self) -> None:
        self.beat = time.monotonic()
        self.timer = self.loop.call_later(BEAT, self._beat)

    def _watch(self) -> None:
        while not self.stopped.wait(BEAT):
            if time.monotonic() - self.beat < GRACE or self.main is None:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is not None and self._held_by_overdue(frame):
                signal.pthread_kill(self.main, SIGNAL)

    def _held_by_overdue(self, frame: FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code is self.code:
                return self.overdue(frame.f_locals)
            frame = frame.f_back
        return False

    def interrupt(self, signum: int, frame: FrameType | None) -> None:
        """In the main thread: raise only if it is still held by an overdue observation (the
        hold may have ended between the watch's look and this moment)."""
        if time.monotonic() - self.beat >= GRACE and self._held_by_overdue(frame):
            raise Held
