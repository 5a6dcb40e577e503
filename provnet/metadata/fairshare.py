# Turns for upstream work by source address: at most `limit` requests in flight, and while more than one address is
# active, at most `per_address` of them from one; addresses that wait are served in rotation. A VM alone may use it
# all; a VM keeping 64 connections busy next to others holds `per_address` places and waits its turn like them.
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

ACTIVE = 1.0  # seconds: an address that asked this recently is a neighbour to share with


class FairShare:
    """`if not share.enter(address): await share.wait(address)`, then `share.release(address)` when done."""

    def __init__(self, limit: int, per_address: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.per_address = per_address
        self.clock = clock
        self.running = 0
        self._flight: dict[str, int] = {}  # places held, by address
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # in rotation order: the next address first
        self._recent = [("", -1e9), ("", -1e9)]  # the two most recent distinct addresses to ask, and when

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def _seen(self, address: str) -> None:
        now = self.clock()
        if self._recent[0][0] == address:
            self._recent[0] = (address, now)
        else:
            self._recent = [(address, now), self._recent[0]]

    def _cap(self, address: str) -> int:
        """`limit` for an address alone, `per_address` while another asked within ACTIVE seconds."""
        now = self.clock()
        for other, when in self._recent:
            if other != address and now - when < ACTIVE:
                return self.per_address
        return self.limit

    def enter(self, address: str) -> bool:
        """Take a place at once if one is free, the address is within its share and nobody waits (no await)."""
        self._seen(address)
        if self.running < self.limit and not self._waiting and self._flight.get(address, 0) < self._cap(address):
            self._take(address)
            return True
        return False

    async def wait(self, address: str) -> None:
        """Wait for this address's turn; the place is taken for it when granted."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(address, deque()).append(granted)
        self._grant()  # (a place may be free for it though others wait, over their share)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(address)  # granted, then cancelled before it ran: give the place on
            else:
                queue = self._waiting.get(address)
                if queue is not None and granted in queue:
                    queue.remove(granted)
                    if not queue:
                        del self._waiting[address]
            raise

    def release(self, address: str) -> None:
        self.running -= 1
        held = self._flight[address] - 1
        if held:
            self._flight[address] = held
        else:
            del self._flight[address]
        self._grant()

    def _grant(self) -> None:
        """Free places to waiting addresses in rotation, one each, skipping those over their share."""
        while self.running < self.limit and self._waiting:
            for address in self._waiting:
                if self._flight.get(address, 0) < self._cap(address):
                    break
            else:
                return  # everyone waiting holds its share already
            queue = self._waiting.pop(address)
            while queue:
                granted = queue.popleft()
                if not granted.done():  # (a waiter cancelled meanwhile is skipped)
                    self._take(address)
                    granted.set_result(None)
                    break
            if queue:
                self._waiting[address] = queue  # to the back of the rotation

    def _take(self, address: str) -> None:
        self.running += 1
        self._flight[address] = self._flight.get(address, 0) + 1
