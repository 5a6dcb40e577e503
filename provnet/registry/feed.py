# Following the change feed: one thread per process waits on the registry and hands each batch to the subscribers
# (caches, the DHCP view, host agents, watchers) on their event loop.
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from provnet.registry.base import Registry
from provnet.registry.changes import Change, ChangeBatch

log = logging.getLogger(__name__)

WAIT = 25.0  # seconds one wait_changes call may block (under HTTP long-poll limits)
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)  # seconds between attempts while the registry is unreachable


class Subscriber(Protocol):
    def apply(self, changes: Sequence[Change]) -> None:
        """Called on the event loop with each batch, in commit order; must be quick (work per change)."""

    def resync(self) -> None:
        """The feed lost track (changes pruned, store restored): forget or rebuild everything derived."""


class ChangeFeed:
    """The registry's changes, delivered in order on the event loop that started the feed.

    Delivery is at least once: a subscriber may see a change it already reflects (after a resync, or when its
    initial read raced with the change), so subscribers apply changes idempotently (drop a cache key, re-read a
    port). `revision` is the position applied so far; `healthy` is False while the registry is unreachable, and
    the subscribers keep what they have meanwhile.
    """

    def __init__(self, registry: Registry, name: str = "feed") -> None:
        self.registry = registry
        self.name = name
        self.revision: int | None = None
        self.healthy = True
        self.batches = 0
        self.resyncs = 0
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._advanced: asyncio.Condition | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    async def start(self, revision: int | None = None) -> None:
        """Follow from `revision` (default: the registry's current one, read here; if the registry cannot be
        read now, from whenever it can, with a resync)."""
        self._loop = asyncio.get_running_loop()
        self._advanced = asyncio.Condition()
        if revision is None:
            try:
                revision = await asyncio.wait_for(asyncio.to_thread(self.registry.revision), 10.0)
            except Exception as exc:
                log.warning("%s: the registry cannot be read at start (%s); following it when it can", self.name,
                            exc)
        self.revision = revision
        self._thread = threading.Thread(target=self._run, name=f"provnet-{self.name}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        wake = getattr(self.registry, "wake_waiters", None)
        if wake is not None:
            wake()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        self._thread = None

    # --- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        after = self.revision
        while not self._stopping.is_set():
            try:
                if after is None:
                    after = self.registry.revision()
                    batch = ChangeBatch(after, (), True)  # we do not know what we missed
                else:
                    batch = self.registry.wait_changes(after, WAIT)
            except Exception as exc:
                if not self._stopping.is_set():
                    self._outage(exc, failures)
                failures += 1
                self._stopping.wait(BACKOFF[min(failures - 1, len(BACKOFF) - 1)])
                continue
            if failures:
                log.info("%s: the registry answers again; following from revision %s", self.name, after)
                failures = 0
                self._set_health(True)
            if self._stopping.is_set():
                return
            if batch.changes or batch.gap or batch.revision != after:
                after = batch.revision
                self._post(batch)

    def _outage(self, exc: Exception, failures: int) -> None:
        if failures == 0:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("%s: cannot read the registry's changes (%s); serving what is known, retrying", self.name,
                        reason)
            self._set_health(False)

    def _set_health(self, healthy: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(setattr, self, "healthy", healthy)

    def _post(self, batch: ChangeBatch) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:  # the loop closed meanwhile
            pass

    # --- on the loop --------------------------------------------------------------------------------------------
    def _deliver(self, batch: ChangeBatch) -> None:
        self.batches += 1
        for subscriber in list(self._subscribers):
            try:
                if batch.gap:
                    subscriber.resync()
                elif batch.changes:
                    subscriber.apply(batch.changes)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("%s: a subscriber failed on revision %s", self.name, batch.revision)
        if batch.gap:
            self.resyncs += 1
            log.info("%s: changes before revision %s are gone; subscribers rebuilt", self.name, batch.revision)
        self.revision = batch.revision
        if self._advanced is not None:
            asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        assert self._advanced is not None
        async with self._advanced:
            self._advanced.notify_all()

    async def wait_beyond(self, revision: int, timeout: float) -> int | None:
        """Wait until the feed applied something after `revision` (or `timeout`); the position then."""
        assert self._advanced is not None, "start() first"
        try:
            async with self._advanced:
                await asyncio.wait_for(self._advanced.wait_for(
                    lambda: self.revision is not None and self.revision > revision), timeout)
        except TimeoutError:
            pass
        return self.revision


FRESH, LAGGING, UNKNOWN = "fresh", "lagging", "unknown"


class Freshness:
    """Read-after-commit for caches kept by a ChangeFeed: `await fresh()` says whether the feed has applied every
    change committed before the call.

    One revision read (off the loop, through `areg`) serves every caller that arrived before it started; while
    it runs, new callers wait for the next one. Answers: FRESH (the cache may answer), LAGGING (the registry
    answers but the feed is more than `wait` seconds behind: ask the registry), UNKNOWN (the registry did not
    answer within `wait`: the caller decides how stale it may serve). After an UNKNOWN, callers get UNKNOWN at
    once, without waiting, until a background read succeeds again: a hung database costs the first requests
    `wait` seconds and the rest nothing.
    """

    def __init__(self, areg, feed: ChangeFeed, wait: float = 1.0) -> None:  # areg: provnet.registry.aio
        self.areg = areg
        self.feed = feed
        self.wait = wait
        self.reads = 0
        self._next: asyncio.Future[str] | None = None
        self._running: asyncio.Future | None = None
        self._degraded = False

    async def __call__(self) -> str:
        if self._degraded:
            if self._running is None:
                self._next = asyncio.get_running_loop().create_future()
                self._start()
            return UNKNOWN
        future = self._next
        if future is None:
            future = self._next = asyncio.get_running_loop().create_future()
            if self._running is None:
                self._start()
        return await asyncio.shield(future)

    def _start(self) -> None:
        future, self._next = self._next, None
        assert future is not None
        self._running = asyncio.ensure_future(self._read(future))

    async def _read(self, future: asyncio.Future[str]) -> None:
        self.reads += 1
        try:
            revision = await self.areg(self.areg.registry.revision, timeout=self.wait)
        except Exception:  # noqa: BLE001 - unreachable, hung, or the threads are all stuck
            self._degraded = True
            answer = UNKNOWN
        else:
            self._degraded = False
            applied = self.feed.revision
            if applied is None or applied < revision:
                applied = await self.feed.wait_beyond(revision - 1, self.wait)
            answer = FRESH if applied is not None and applied >= revision else LAGGING
        if not future.done():
            future.set_result(answer)
        self._running = None
        if self._next is not None:
            self._start()
