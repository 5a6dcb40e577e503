# How the API calls the (synchronous) registry: writes in worker threads, and a wake-up for revision long-polls.
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from provnet.registry.base import Registry

T = TypeVar("T")


class Backend:
    """The registry as the API's handlers see it.

    Writes (and lists, which may be long) run in a worker thread so the event loop keeps serving; single-row
    reads run inline. After each write the revision waiters are woken at once; changes written by other
    processes are noticed by polling `revision()` (cheap by the Registry's contract).
    """

    poll_interval = 0.2

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._changed: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            event = self._event()
            event.set()
            self._changed = asyncio.Event()

    async def read_many(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def wait_revision(self, after: int, timeout: float) -> int:
        """The registry's revision as soon as it is greater than `after`, or the current one at `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            revision = self.registry.revision()
            remaining = deadline - time.monotonic()
            if revision > after or remaining <= 0:
                return revision
            try:
                await asyncio.wait_for(self._event().wait(), min(self.poll_interval, remaining))
            except TimeoutError:
                pass
