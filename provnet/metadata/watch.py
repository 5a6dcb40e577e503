# Watch (GCE's long-poll) and ETags: the query of a waiting request, If-None-Match, and the waiters woken by the
# change feed (no database read per waiter), bounded per instance and in all.
from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs


class WatchRefused(Exception):
    """Over a bound: the message is the 429's."""


@dataclass(frozen=True, slots=True)
class WatchQuery:
    wait: bool = False
    last_etag: str | None = None
    timeout: float = 0.0


def parse_watch(query: str, max_timeout: float) -> WatchQuery:
    """`wait_for_change=true&last_etag=E&timeout_sec=N` (GCE's names); ValueError with the 400's message."""
    if not query or "wait_for_change" not in query:
        return WatchQuery()
    params = parse_qs(query, keep_blank_values=True, max_num_fields=16)
    for name in ("wait_for_change", "last_etag", "timeout_sec"):
        if len(params.get(name, ())) > 1:
            raise ValueError(f"{name} is given more than once")
    wait = params.get("wait_for_change", ["false"])[0].lower()
    if wait not in ("true", "false"):
        raise ValueError("wait_for_change must be true or false")
    if wait == "false":
        return WatchQuery()
    last = params.get("last_etag", [None])[0]
    if last is not None and (not last or len(last) > 128 or not last.isascii() or not last.isprintable()):
        raise ValueError("last_etag must be an ETag this service sent")
    raw = params.get("timeout_sec", [None])[0]
    timeout = float(max_timeout)
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 86400:
            raise ValueError("timeout_sec must be a whole number of seconds from 1")
        timeout = min(float(raw), max_timeout)
    return WatchQuery(True, None if last is None else bare(last), timeout)


def bare(etag: str) -> str:
    """An ETag without W/ and quotes (GCE clients send them bare in last_etag)."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def not_modified(if_none_match: list[str], etag: str) -> bool:
    """If-None-Match (RFC 9110, weak comparison) against the current ETag."""
    if not if_none_match or not etag:
        return False
    current = bare(etag)
    for header in if_none_match:
        for candidate in header.split(","):
            candidate = candidate.strip()
            if candidate == "*" or (candidate and bare(candidate) == current):
                return True
    return False


class Watchers:
    """Waiting requests by instance (and the networks and subnets their answers depend on). A waiter is a future
    set when something it depends on changed; it then re-renders its answer and compares ETags."""

    def __init__(self, max_per_instance: int, max_total: int) -> None:
        self.max_per_instance = max_per_instance
        self.max_total = max_total
        self.total = 0
        self.woken = 0
        self._by_instance: dict[str, set[asyncio.Future[None]]] = {}
        self._by_network: dict[str, dict[str, int]] = {}  # network/subnet id -> instance id -> waiters

    def join(self, instance_id: str, networks: Iterable[str]) -> asyncio.Future[None]:
        mine = self._by_instance.get(instance_id)
        if mine is not None and len(mine) >= self.max_per_instance:
            raise WatchRefused(f"This instance already has {len(mine)} waiting requests (the limit).")
        if self.total >= self.max_total:
            raise WatchRefused("The metadata service holds as many waiting requests as it takes; try again.")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_instance.setdefault(instance_id, set()).add(future)
        for net in networks:
            held = self._by_network.setdefault(net, {})
            held[instance_id] = held.get(instance_id, 0) + 1
        self.total += 1
        return future

    def leave(self, instance_id: str, networks: Iterable[str], future: asyncio.Future[None]) -> None:
        mine = self._by_instance.get(instance_id)
        if mine is None or future not in mine:
            return
        mine.discard(future)
        if not mine:
            del self._by_instance[instance_id]
        for net in networks:
            held = self._by_network.get(net)
            if held is not None and instance_id in held:
                held[instance_id] -= 1
                if held[instance_id] <= 0:
                    del held[instance_id]
                if not held:
                    del self._by_network[net]
        self.total -= 1

    def rearm(self, instance_id: str, old: asyncio.Future[None]) -> asyncio.Future[None]:
        """A fresh future in place of a fired one (the waiter keeps its place and its count)."""
        mine = self._by_instance[instance_id]
        mine.discard(old)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        mine.add(future)
        return future

    def wake(self, instance_id: str) -> None:
        for future in self._by_instance.get(instance_id, ()):
            if not future.done():
                future.set_result(None)
                self.woken += 1

    def wake_network(self, network_id: str) -> None:
        for instance_id in list(self._by_network.get(network_id, ())):
            self.wake(instance_id)

    def wake_all(self) -> None:
        for instance_id in list(self._by_instance):
            self.wake(instance_id)
