"""The run's room: tasks run in it side by side, except one that must run alone (a load test
whose tail latency the others would skew). A readers-writer lock on anyio, writers first:
while a task waits to be alone, no other starts, so a stream of short tasks cannot keep it
waiting for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class Room:
    def __init__(self) -> None:
        self._changed = anyio.Condition()
        self._beside = 0  # tasks in the room side by side
        self._alone = False  # a task holds the room by itself
        self._waiting = 0  # tasks waiting to be alone

    @asynccontextmanager
    async def beside(self) -> AsyncIterator[None]:
        """In the room with the other tasks, once no task is alone or waiting to be."""
        async with self._changed:
            while self._alone or self._waiting:
                await self._changed.wait()
            self._beside += 1
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self._beside -= 1
                    self._changed.notify_all()

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """The room to itself, once the tasks in it have left."""
        async with self._changed:
            self._waiting += 1
            try:
                while self._alone or self._beside:
                    await self._changed.wait()
            finally:
                self._waiting -= 1
                self._changed.notify_all()  # a cancelled wait may let others in
            self._alone = True
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self._alone = False
                    self._changed.notify_all()
