# How the API calls the (blocking) registry: every call off the event loop with a deadline, and the change feed.
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from provnet.registry.aio import DEFAULT_TIMEOUT, AsyncRegistry, RegistryTimeout
from provnet.registry.base import Registry, utc_now
from provnet.registry.changes import ChangeBatch
from provnet.registry.feed import ChangeFeed
from provnet.registry.sql_engine import WriteWouldWait

T = TypeVar("T")
MAX_CHANGES = 10_000  # revisions of changes one /provnet/v1/changes answer carries at most
LIST_THREADS = 2  # lists read, shaped and encoded at once (the handlers queue on a semaphore of the same size)
LIST_NICE = 10  # how much nicer the list threads are than the API (see read_many)


class Backend:
    """The registry as the API's handlers see it.

    Reads run in the AsyncRegistry's threads with a deadline (a hung database is a 503 within `timeout`, and
    /healthz keeps answering). Writes run in their own threads: `writers` bounds how many write at once (1 suits
    SQLite: one writer at a time anyway, and queueing here beats sleeping in its busy handler; None: the
    default pool, PostgreSQL writes in parallel).

    With SQLite (writers 1, a registry with `without_waiting`) a write is first tried inline on the event loop,
    without waiting for SQLite's lock: handing each write to a thread cost a third of the API's create rate
    (measured 410-440/s against 600-900/s inline). Only when another process holds the write lock does the
    write go to the thread, so the loop never sleeps in SQLite's busy handler. The networking API's loop serves
    only the API (the metadata and DHCP services run in processes of their own), so this costs them nothing.

    The change feed (`feed`) is followed while the app runs; remote agents long-poll it (/provnet/v1/changes).
    """

    def __init__(self, registry: Registry, writers: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.registry = registry
        self.timeout = timeout
        self.areg = AsyncRegistry(registry, timeout=timeout, threads=16, name="api-read")
        self.lists = AsyncRegistry(registry, timeout=timeout, threads=LIST_THREADS, name="api-list", nice=LIST_NICE)
        self._writers = ThreadPoolExecutor(writers or 16, thread_name_prefix="provnet-api-write")
        self._inline_first = writers == 1 and hasattr(registry, "without_waiting")
        self.feed = ChangeFeed(registry, "api feed")

    def now(self) -> datetime:
        """The registry's time (its injected clock when it has one): what an agent's liveness is judged by."""
        clock = getattr(self.registry, "clock", None)
        return clock() if clock is not None else utc_now()

    async def start(self) -> None:
        await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()

    async def write(self, fn: Callable[..., T], *args: Any, inline: bool = True) -> T:
        """`inline` False: always in the writer thread (a bulk create, which may take seconds, never runs on the
        loop, even on SQLite)."""
        if self._inline_first and inline:
            try:
                # without_waiting is SqlRegistry's, not the Registry interface's (checked by hasattr in __init__)
                return self.registry.without_waiting(fn, *args)  # type: ignore[attr-defined]
            except WriteWouldWait:
                pass  # another process is writing: wait for it in the writer thread, not on the loop
        future = asyncio.get_running_loop().run_in_executor(self._writers, fn, *args)
        try:
            # a write's deadline is generous (a bulk create of thousands of ports takes seconds); past it the caller
            # gets a 503, and the write, which cannot be interrupted, still commits or rolls back as a whole
            return await asyncio.wait_for(asyncio.shield(future), self.timeout * 6)
        except TimeoutError:
            raise RegistryTimeout(f"The registry did not finish the write within {self.timeout * 6:g} s; "
                                  "it may still complete.") from None

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.areg(fn, *args)

    async def read_many(self, fn: Callable[..., T], *args: Any) -> T:
        """A list (a page of up to pagination_max_limit items, read, shaped and encoded): in threads of their own at
        a lower CPU priority, so clients paging through 100,000 ports take the CPU the host's metadata and DHCP
        services leave, not the other way round (issue 10 row 10)."""
        return await self.lists(fn, *args)

    def close(self) -> None:
        self.areg.close()
        self.lists.close()
        self._writers.shutdown(wait=True)

    async def changes(self, after: int, timeout: float, limit: int) -> ChangeBatch:
        """The changes after `after`; with `timeout`, wait up to that long for some (the feed wakes every waiter
        at once, whatever their number: one registry read per change, not per waiter)."""
        if timeout > 0:
            position = self.feed.revision
            if position is not None and position <= after:
                await self.feed.wait_beyond(after, timeout)
        return await self.areg(self.registry.changes_since, after, min(limit, MAX_CHANGES))
