# The one way async code calls the (blocking) Registry: in a bounded pool of threads, with a deadline, never inline.
from __future__ import annotations

import asyncio
import logging
import threading
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


class AsyncRegistry:
    """`await areg(registry.method, *args)` runs the call in this facade's threads and waits at most `timeout`.

    The event loop never waits on the database or on HTTP. A call that overruns its deadline keeps its thread
    until the store answers (a thread cannot be interrupted), so when every thread is stuck the next call fails
    at once instead of queueing behind them: a hung store costs callers a fast 503, not a growing backlog.
    """

    def __init__(self, registry: Registry, *, timeout: float = DEFAULT_TIMEOUT, threads: int = DEFAULT_THREADS,
                 name: str = "registry") -> None:
        self.registry = registry
        self.timeout = timeout
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"provnet-{name}")
        self._lock = threading.Lock()
        self._running = 0  # calls whose thread has not returned (including those whose caller gave up)
        self.timeouts = 0

    @property
    def stuck(self) -> bool:
        """Every thread is busy: the store is not answering (or the load is more than the threads can take)."""
        return self._running >= self.threads

    async def __call__(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        with self._lock:
            if self._running >= self.threads:
                raise RegistryTimeout(f"The registry is not answering ({self._running} calls pending).")
            self._running += 1
        try:
            future = self._pool.submit(fn, *args)
        except RuntimeError:  # shut down
            with self._lock:
                self._running -= 1
            raise RegistryTimeout("The registry is closed.") from None
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout or self.timeout)
        except TimeoutError:
            self.timeouts += 1
            raise RegistryTimeout(
                f"The registry did not answer within {timeout or self.timeout:g} s.") from None

    def _done(self, _future: object) -> None:
        with self._lock:
            self._running -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
