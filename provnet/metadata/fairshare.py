# Turns for upstream work by source address: at most `limit` requests in flight, and when more wait, each waiting
# address is served in rotation, so a VM with 64 busy connections gets one turn in a round, like any neighbour.
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FairShare:
    """`async with share.turn(address):` holds one of `limit` places; waiting addresses are served round-robin."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiting: dict[str, deque[asyncio.Future]] = {}  # in rotation order: the next address first

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        if self.running < self.limit and not self._waiting:
            self.running += 1
        else:
            granted = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(address, deque()).append(granted)
            try:
                await granted  # the place is counted for us when granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release()  # granted, then cancelled before it ran: give the place on
                else:
                    self._forget(address, granted)
                raise
        try:
            yield
        finally:
            self._release()

    def _forget(self, address: str, granted: asyncio.Future) -> None:
        queue = self._waiting.get(address)
        if queue is not None and granted in queue:
            queue.remove(granted)
            if not queue:
                del self._waiting[address]

    def _release(self) -> None:
        self.running -= 1
        while self._waiting and self.running < self.limit:
            address = next(iter(self._waiting))
            queue = self._waiting.pop(address)
            granted = queue.popleft()
            if queue:
                self._waiting[address] = queue  # to the back of the rotation
            if not granted.done():
                self.running += 1
                granted.set_result(None)
