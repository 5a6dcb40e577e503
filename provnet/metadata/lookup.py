# The metadata agent's attribution cache: (router|network, address) -> the port's instance, kept exact by the
# change feed (a changed port drops only the entries it touches), served stale for a bounded time while the
# registry is unreachable.
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from provnet.metadata.attribution import Answer, Identity, Miss, is_link_local, mac_from_link_local, walk
from provnet.metadata.observe import Metrics
from provnet.model.errors import ServiceUnavailable
from provnet.registry.aio import AsyncRegistry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed, Touched

log = logging.getLogger("provnet.metadata.agent")

MAX_ENTRIES = 200_000  # about 0.5 KB each; past this the oldest entries go first
Key = tuple[str, str, str]  # ("router"|"network", scope id, address), an IPv6 link-local one as "address@mac"


__all__ = ["Answer", "Identity", "Lookup", "Miss", "mac_from_link_local"]


class Lookup:
    """Answers from memory when it can, from the registry (off the event loop, one read per key however many
    requests wait for it) when it must.

    Exactness: every entry is dropped by the change feed when a change names its address (or MAC) or its scope
    (a router whose interfaces changed, a network), so a change is seen as soon as the feed delivers it
    (milliseconds after the commit, in every process) and churn elsewhere leaves other VMs' entries warm. A
    registry read that a change overtook is answered but not kept (`Touched`). While the feed cannot reach the
    registry, entries are served for `stale_if_error` seconds; after that, and for any address not cached, the
    answer is 503.
    """

    def __init__(self, areg: AsyncRegistry, metrics: Metrics, *, feed: ChangeFeed,
                 stale_if_error: float = 600.0) -> None:
        self.areg = areg
        self.registry = areg.registry
        self.metrics = metrics
        self.feed = feed
        self.stale_if_error = stale_if_error
        self.touched = Touched()
        self._cache: dict[Key, Answer] = {}
        # indexes kept small (an entry costs about 0.5 KB in all): the (kind, scope) pairs in use with their entry
        # counts (few: one per router or network), and the keys of IPv6 link-local addresses by their MAC
        self._scopes: dict[tuple[str, str], int] = {}
        self._link_local: dict[str, set[Key]] = {}
        self._networks: dict[str, list[str]] = {}  # router id -> its interface networks
        self._pending: dict[Key, asyncio.Future[Answer]] = {}
        self.invalidated = 0

    # --- answers ---------------------------------------------------------------------------------------------
    def cached(self, kind: str, scope_id: str, address: str) -> Answer | None:
        """The answer from memory, if there is one that may be served (no await: the hot path)."""
        found = self._cache.get((kind, scope_id, address))
        if found is not None and (self.feed.healthy or self.feed.stale_for() <= self.stale_if_error):
            self.metrics.cache_hit.inc()
            return found
        return None

    @staticmethod
    def subject(address: str, mac: str | None = None) -> str:
        """The key's address part: the address, or for an IPv6 link-local one "address@MAC" with the MAC that
        finds its port (the proxy's, else the EUI-64 one, else none: such a key always misses)."""
        if not is_link_local(address):
            return address
        return f"{address}@{(mac or mac_from_link_local(address) or '').lower()}"

    async def __call__(self, kind: str, scope_id: str, address: str, mac: str | None = None) -> Answer:
        """The answer for a source; `mac` (the proxy's header) finds an IPv6 link-local source's port."""
        subject = self.subject(address, mac)
        found = self.cached(kind, scope_id, subject)
        if found is not None:
            return found
        key = (kind, scope_id, subject)
        pending = self._pending.get(key)
        if pending is not None:  # another request is already asking: share its answer
            self.metrics.cache_hit.inc()
            return await asyncio.shield(pending)
        self.metrics.cache_miss.inc()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        mark = self.touched.mark()
        try:
            answer, networks = await self.areg(self._find, kind, scope_id, subject)
        except ServiceUnavailable as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: sharers re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._pending.pop(key, None)
        if not self.touched.since(mark, self._names(key)):  # no change meanwhile that this read could have missed
            if kind == "router":
                self._networks[scope_id] = networks
            self._store(key, answer)
        future.set_result(answer)
        return answer

    def _find(self, kind: str, scope_id: str, subject: str) -> tuple[Answer, list[str]]:
        """In a worker thread: the registry's answer for one key (attribution.walk, as metadata-explain walks it),
        and the networks it looked on."""
        address, _, mac = subject.partition("@")
        found = walk(self.registry, kind, scope_id, address,
                     self._networks.get(scope_id) if kind == "router" else None, mac or None)
        answer = found.answer
        if isinstance(answer, Identity):  # cached by the hundred thousand: the port id is only for explain
            answer = Identity(answer.instance_id, answer.tenant_id, mac=answer.mac)
        self.metrics.lookup(answer.result if isinstance(answer, Miss) else "found")
        return answer, found.networks

    def _store(self, key: Key, answer: Answer) -> None:
        if len(self._cache) >= MAX_ENTRIES:
            for old in list(self._cache)[:MAX_ENTRIES // 10]:  # the oldest tenth
                self._drop(old)
        if key in self._cache:
            self._drop(key)
        self._cache[key] = answer
        scope = (key[0], key[1])
        self._scopes[scope] = self._scopes.get(scope, 0) + 1
        mac = self._mac(key)
        if mac:
            self._link_local.setdefault(mac, set()).add(key)

    def _drop(self, key: Key) -> None:
        if self._cache.pop(key, None) is None:
            return
        self.invalidated += 1
        scope = (key[0], key[1])
        left = self._scopes.get(scope, 1) - 1
        if left:
            self._scopes[scope] = left
        else:
            self._scopes.pop(scope, None)
        mac = self._mac(key)
        if mac:
            keys = self._link_local.get(mac)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._link_local[mac]

    def _drop_address(self, address: str) -> None:
        """Every entry for `address` (IPv4 or IPv6, any router or network): one dictionary probe per scope."""
        for kind, scope_id in list(self._scopes):
            self._drop((kind, scope_id, address))

    def _drop_scope(self, scope_id: str) -> None:
        """Every entry of a router or network (its interfaces changed): rare, so a scan of the cache."""
        if any(sid == scope_id for _, sid in self._scopes):
            for key in [k for k in self._cache if k[1] == scope_id]:
                self._drop(key)

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _mac(key: Key) -> str:
        """The MAC an IPv6 link-local key's port is found by ("" for other keys)."""
        return key[2].partition("@")[2]

    @classmethod
    def _names(cls, key: Key) -> list[str]:
        mac = cls._mac(key)
        return [key[1], key[2].partition("@")[0], *([mac] if mac else [])]

    # --- the change feed (ChangeFeed subscriber) ---------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        names: set[str] = set()
        for change in changes:
            names.update((change.id, *change.addresses, *change.macs, *change.devices))
            if change.kind == "port":
                for address in change.addresses:
                    self._drop_address(address)
                for mac in change.macs:
                    for key in list(self._link_local.get(mac, ())):
                        self._drop(key)
                for device in change.devices:  # a router's interface came or went: its networks changed
                    if self._networks.pop(device, None) is not None:
                        self._drop_scope(device)
            elif change.kind in ("router", "network") and change.op == "delete":
                self._networks.pop(change.id, None)
                self._drop_scope(change.id)
        self.touched.add(frozenset(names))

    def resync(self) -> None:
        self.touched.add(None)
        self.invalidated += len(self._cache)
        self._cache.clear()
        self._scopes.clear()
        self._link_local.clear()
        self._networks.clear()
