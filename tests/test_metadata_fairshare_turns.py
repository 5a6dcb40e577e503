# The proxy's turns for requests to the agent (provnet/metadata/fairshare.py), with an injected clock: an address
# alone may use every place, next to others it holds its share, waiting addresses are served in rotation, and a
# request cancelled while it waits (its VM went away) never keeps a place.
from __future__ import annotations

import asyncio

import pytest

from provnet.metadata.fairshare import ACTIVE, FairShare


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_alone_may_use_every_place():
    share = FairShare(limit=8, per_address=2, clock=Clock())
    assert all(share.enter("10.0.0.1") for _ in range(8))
    assert not share.enter("10.0.0.1") and share.running == 8


def test_next_to_a_neighbour_an_address_holds_its_share_and_turns_rotate():
    clock = Clock()
    share = FairShare(limit=4, per_address=1, clock=clock)

    async def go() -> list[str]:
        order: list[str] = []
        for _ in range(4):
            assert share.enter("abuser")  # alone: it takes all four places
        waiters = []

        async def ask(address: str) -> None:
            if not share.enter(address):
                await share.wait(address)
            order.append(address)

        for address in ["abuser"] * 5 + ["vm1", "vm2"]:
            waiters.append(asyncio.ensure_future(ask(address)))
        await asyncio.sleep(0)
        assert share.queued == 7 and order == []
        for _ in range(3):  # three of the abuser's requests finish: its neighbours are served first
            share.release("abuser")
            await asyncio.sleep(0)
        assert order == ["vm1", "vm2"]  # the abuser holds one place (its share now) and waits
        share.release("abuser")
        await asyncio.sleep(0)
        assert order == ["vm1", "vm2", "abuser"]
        clock.now += ACTIVE + 1  # the neighbours went quiet: the abuser alone may take the free places again
        share.release("vm1")
        share.release("vm2")
        await asyncio.sleep(0)
        assert order[3:] == ["abuser"] * 3 and share.running == 4
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        return order

    asyncio.run(go())


def test_a_cancelled_waiter_never_keeps_a_place():
    share = FairShare(limit=1, per_address=1, clock=Clock())

    async def go() -> None:
        assert share.enter("a")
        gone = asyncio.ensure_future(share.wait("b"))
        served = asyncio.ensure_future(share.wait("c"))
        await asyncio.sleep(0)
        gone.cancel()  # its VM closed the connection while it waited
        await asyncio.sleep(0)
        share.release("a")
        await asyncio.wait_for(served, 1)
        assert share.running == 1 and share.queued == 0
        late = asyncio.ensure_future(share.wait("d"))
        await asyncio.sleep(0)
        share.release("c")  # granted to d ...
        late.cancel()  # ... which is cancelled before it runs: the place is given on, not lost
        with pytest.raises(asyncio.CancelledError):
            await late
        assert share.running == 0 and share.enter("e")

    asyncio.run(go())
