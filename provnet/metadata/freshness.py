# The registry revision as the metadata services read it: at most once per event-loop iteration, never older.
from __future__ import annotations

import asyncio

from provnet.registry.base import Registry


class Revision:
    """`registry.revision()`, read once per event-loop iteration and shared by every request handled in it.

    Why this never serves old data: every request handled in an iteration was received before the iteration's
    callbacks started running (bytes arrive through the poll that precedes them), and the value is read during
    those callbacks, so it is at least as new as any commit that finished before such a request was sent. The
    value is forgotten by a callback queued ahead of the next iteration's work. This halves or better the
    per-request database work under load (one read serves many requests, and the agent and API share it in
    `provnet serve`).
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
