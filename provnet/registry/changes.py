# The change feed's records (pure): what one committed write changed, and a batch of them as readers receive it.
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("network", "subnet", "port", "router", "agent", "instance")
OPS = ("create", "update", "delete")


@dataclass(frozen=True, slots=True)
class Change:
    """One resource touched by the write that committed as `revision`.

    Besides the resource, a change names what caches are keyed on, before and after the write, so that a reader
    drops exactly the entries it touches without reading the store: the network a subnet or port is on (a
    network's own id), a port's fixed IP addresses, MACs and device ids (an instance or a router).
    """

    revision: int
    kind: str
    id: str
    op: str
    network_id: str | None = None
    addresses: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        return {"revision": self.revision, "kind": self.kind, "id": self.id, "op": self.op,
                "network_id": self.network_id, "addresses": list(self.addresses), "macs": list(self.macs),
                "devices": list(self.devices)}

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Change:
        return cls(int(body["revision"]), str(body["kind"]), str(body["id"]), str(body["op"]),
                   body.get("network_id"), tuple(body.get("addresses") or ()), tuple(body.get("macs") or ()),
                   tuple(body.get("devices") or ()))


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """The changes after some revision, up to `revision` (the reader's position once it has applied them).

    `gap`: the changes the reader asked for are no longer kept (it fell too far behind, or the store was
    restored): it must rebuild what it holds from the store, then go on from `revision`.
    """

    revision: int
    changes: tuple[Change, ...] = ()
    gap: bool = False

    def to_api(self) -> dict[str, Any]:
        return {"revision": self.revision, "gap": self.gap, "changes": [c.to_api() for c in self.changes]}

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> ChangeBatch:
        return cls(int(body["revision"]), tuple(Change.from_api(c) for c in body.get("changes") or ()),
                   bool(body.get("gap", False)))


@dataclass(slots=True)
class Pending:
    """The changes one write transaction noted, in order, before its revision is known (the SQL store's side)."""

    items: list[tuple[str, str, str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list)

    def note(self, kind: str, resource_id: str, op: str, network_id: str | None = None,
             addresses: Iterable[str] = (), macs: Iterable[str] = (), devices: Iterable[str] = ()) -> None:
        assert kind in KINDS and op in OPS, (kind, op)
        self.items.append((kind, resource_id, op, network_id, _distinct(addresses), _distinct(macs),
                           _distinct(d for d in devices if d)))

    def rows(self, revision: int) -> list[dict[str, Any]]:
        return [{"revision": revision, "seq": seq, "kind": kind, "resource_id": rid, "op": op, "network_id": net,
                 "addresses": list(addrs), "macs": list(macs), "devices": list(devs)}
                for seq, (kind, rid, op, net, addrs, macs, devs) in enumerate(self.items)]


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))
