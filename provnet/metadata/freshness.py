# The registry revision as the metadata services read it: at most once per event-loop iteration, never older.
from __future__ import annotations

import asyncio

from provnet.registry.base import Registry


class Revision:
    """`registry.revision()`, read once per event-loop iteration and shared by every request handled in it.

    Why this never serves old data to a request sent after a commit returned: a request's first bytes reach
    the process through the poll that starts an iteration, and the value is read during that iteration's
    callbacks, so it was read after the request was sent, hence after the commit. The value is forgotten by a
    callback queued ahead of the next iteration's work. (Bytes can also arrive during a poll's callbacks, but
    only after earlier bytes made the connection readable: a request started before the poll, or a pipelined
    one, which the HTTP edge defers to the next iteration.) One read then serves many requests under load,
    and the agent and API share it under `provnet serve`.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cached: tuple[asyncio.AbstractEventLoop, int] | None = None

    def __call__(self) -> int:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.registry.revision()
        cached = self._cached
        if cached is not None and cached[0] is loop:
            return cached[1]
        value = self.registry.revision()
        entry = (loop, value)
        self._cached = entry
        loop.call_soon(self._forget, entry)
        return value

    def _forget(self, entry: tuple[asyncio.AbstractEventLoop, int]) -> None:
        if self._cached is entry:
            self._cached = None


_SHARED: dict[int, tuple[Registry, Revision]] = {}


def revision_of(registry: Registry) -> Revision:
    """One `Revision` per registry object, so services in one process share their reads."""
    found = _SHARED.get(id(registry))
    if found is None or found[0] is not registry:
        found = _SHARED[id(registry)] = (registry, Revision(registry))
    return found[1]
