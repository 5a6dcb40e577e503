# How the API calls the (synchronous) registry: writes in worker threads, and a wake-up for revision long-polls.
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from provnet.registry.base import Registry

T = TypeVar("T")


class Backend:
    """The registry as the API's handlers see it.

    Writes (and lists, which may be long) run in a worker thread so the event loop keeps serving; single-row
    reads run inline. `writers` bounds the threads that write at once: 1 suits SQLite (one writer at a time
    anyway, so queueing here beats sleeping in its busy handler: measured p99 0.15 s instead of 1.2 s); None
    uses asyncio's default pool (PostgreSQL writes in parallel).

    After each write the revision waiters are woken at once; changes written by other processes are noticed by
    polling `revision()` (cheap by the Registry's contract).
    """

    poll_interval = 0.2

    def __init__(self, registry: Registry, writers: int | None = None) -> None:
        self.registry = registry
        self._changed: asyncio.Event | None = None
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="provnet-api-write") if writers else None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if self._writers is None:
                return await asyncio.to_thread(fn, *args)
            return await asyncio.get_running_loop().run_in_executor(self._writers, fn, *args)
        finally:
            event = self._event()
            event.set()
            self._changed = asyncio.Event()

    def close(self) -> None:
        if self._writers is not None:
            self._writers.shutdown(wait=True)

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
