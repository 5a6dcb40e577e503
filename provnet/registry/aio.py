# The one way async code calls the (blocking) Registry: in a bounded pool of threads, with a deadline, never inline.
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from provnet.model.errors import ServiceUnavailable
from provnet.registry.base import Registry

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds a registry call may take before its caller gets ServiceUnavailable
DEFAULT_THREADS = 8


class RegistryTimeout(ServiceUnavailable):
    """The registry did not answer within the deadline (a hung database, a stalled API): 503, and on the wire
    Neutron's ServiceUnavailable (clients know that type, not ours)."""

    @property
    def type(self) -> str:
        return "ServiceUnavailable"


def lower_priority(nice: int) -> None:
    """Make the calling thread `nice` steps nicer than its process (Linux schedules threads one by one): a pool for
    bulk work gives way to every other process on the host when the CPUs are contended, and costs nothing when
    they are not. Best effort: a platform without per-thread priorities keeps the thread as it is."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.debug("thread priority not lowered: %s", exc)


class AsyncRegistry:
    """`await areg(registry.method, *args)` runs the call in this facade's threads and waits at most `timeout`.

    The event loop never waits on the database or on HTTP. Calls beyond the threads queue (a boot storm's misses
    are many and short). A call that overruns its deadline keeps its thread until the store answers (a thread
    cannot be interrupted); once every thread holds such a call, the store is hung, and new calls fail at once
    instead of queueing behind them: a hung store costs callers a fast 503, not a growing backlog.
    """

    def __init__(self, registry: Registry, *, timeout: float = DEFAULT_TIMEOUT, threads: int = DEFAULT_THREADS,
                 name: str = "registry", clock: Callable[[], float] = time.monotonic, nice: int = 0) -> None:
        self.registry = registry
        self.timeout = timeout
        self.threads = threads
        self.clock = clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"provnet-{name}",
                                        initializer=functools.partial(lower_priority, nice) if nice else None)
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}  # running calls: id -> when their thread took them
        self.timeouts = 0

    @property
    def stuck(self) -> bool:
        """Every thread holds a call older than the timeout: the store is not answering."""
        with self._lock:
            return self._stuck()

    def _stuck(self) -> bool:
        now = self.clock()
        return len(self._started) >= self.threads and all(now - t > self.timeout for t in self._started.values())

    async def __call__(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        with self._lock:
            if self._stuck():
                raise RegistryTimeout(f"The registry is not answering ({len(self._started)} calls pending "
                                      f"for more than {self.timeout:g} s).")
        try:
            future = self._pool.submit(self._run, fn, *args)
        except RuntimeError:  # shut down
            raise RegistryTimeout("The registry is closed.") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout or self.timeout)
        except TimeoutError:
            self.timeouts += 1
            raise RegistryTimeout(
                f"The registry did not answer within {timeout or self.timeout:g} s.") from None

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        key = threading.get_ident()
        with self._lock:
            self._started[key] = self.clock()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._started.pop(key, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
