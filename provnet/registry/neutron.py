# NeutronRegistry: companion mode, the Registry interface read-only over any cloud's Neutron (standard v2.0 API only).
"""provnet's tools against an OpenStack cloud that has no provnet: doctor, the DHCP exports and the DHCP server read
networks, subnets, ports, routers and agents through Neutron's standard API, found in the Keystone catalog as the
`network` service. Nothing here calls /provnet/v1, and nothing writes.

Neutron has no change feed. `revision()` is a counter that moves when the cloud changed, and `changes_since` /
`wait_changes` answer every move with a gap (the reader rebuilds from the store): at most every `poll_interval`
seconds (2 s) the registry lists networks, subnets and ports with `fields=id&fields=revision_number` (two short
columns per row, scoped to the watched network when one is given) and compares a digest of them with the last one.
A cloud whose API does not return `revision_number` (a Neutron without the standard-attributes extension) is
digested on the attributes the DHCP server and the exports use instead, still with `fields=`. So a
port created in the cloud reaches `provnet dhcp` within poll_interval plus one rebuild of its view. Nova's
instances are not Neutron's: there are none here, and hostnames in DHCP replies are Neutron's own `host-<ip>` form.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from provnet.model import errors
from provnet.model.resources import Agent, Instance, Network, Port, Router, Subnet
from provnet.registry.base import Filters, Page, ReservationRow
from provnet.registry.changes import ChangeBatch
from provnet.registry.remote import RemoteRegistry, TokenSource

ROUTER_INTERFACE_OWNERS = ("network:router_interface", "network:router_interface_distributed",
                           "network:ha_router_replicated_interface")
RESERVATION_FIELDS = ("id", "network_id", "mac_address", "fixed_ips", "device_id", "device_owner")
RESERVATION_CHUNK = 100  # port ids per request (each id is ~40 bytes of query string)
# what the DHCP view and the exports read, for clouds without revision_number
FALLBACK_FIELDS: dict[str, tuple[str, ...]] = {
    "networks": ("id", "name", "mtu", "provider:network_type", "router:external", "shared"),
    "subnets": ("id", "network_id", "cidr", "ip_version", "gateway_ip", "allocation_pools", "dns_nameservers",
                "host_routes", "enable_dhcp"),
    "ports": ("id", "network_id", "mac_address", "fixed_ips", "device_id", "device_owner", "name"),
}


def digest(collection: str, items: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> bytes:
    """Pure: one digest of a listing (order-independent), over `fields` of each item."""
    rows = sorted(json.dumps([item.get(f) for f in fields], sort_keys=True, default=str) for item in items)
    h = hashlib.sha256(collection.encode())
    for row in rows:
        h.update(row.encode())
        h.update(b"\n")
    return h.digest()


class NeutronRegistry:
    """Read-only Registry over Neutron's v2.0 API at `url` (a catalog endpoint), authenticated by `auth`."""

    poll_interval = 2.0

    def __init__(self, url: str, auth: TokenSource | None = None, ssl_context=None, *,
                 watch_network: str | None = None, timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._api = RemoteRegistry(url, timeout=timeout, auth=auth, ssl_context=ssl_context)
        self._api.what = "Neutron"
        self.url = self._api.url
        self.watch_network = watch_network
        self._clock = clock
        self._lock = threading.Lock()
        self._counter = 0
        self._digest: bytes | None = None
        self._checked_at: float | None = None
        self._without_revision: set[str] = set()
        self._woken = threading.Event()

    # transport
    def _list(self, collection: str, filters: Filters | None = None, fields: Sequence[str] = (),
              page: Page | None = None) -> list[dict]:
        """One page when `page` is given; else the whole list, following the `next` links a Neutron with
        pagination (or pagination_max_limit) gives."""
        if fields:
            filters = {**(filters or {}), "fields": list(fields)}
        return self._api._list(collection, filters, page=page)

    def _get(self, collection: str, member: str, obj_id: str) -> dict:
        return self._api.request("GET", f"/v2.0/{collection}/{urllib.parse.quote(obj_id, safe='')}")[member]

    @staticmethod
    def _read_only(what: str) -> errors.NeutronError:
        return errors.ReadOnly(what=what)

    # networks, subnets, ports, routers, agents: reads
    def get_network(self, network_id: str) -> Network:
        return Network.from_api(self._get("networks", "network", network_id))

    def list_networks(self, filters: Filters | None = None, page: Page | None = None) -> list[Network]:
        return [Network.from_api(d) for d in self._list("networks", filters, page=page)]

    def get_subnet(self, subnet_id: str) -> Subnet:
        return Subnet.from_api(self._get("subnets", "subnet", subnet_id))

    def list_subnets(self, filters: Filters | None = None, page: Page | None = None) -> list[Subnet]:
        return [Subnet.from_api(d) for d in self._list("subnets", filters, page=page)]

    def get_port(self, port_id: str) -> Port:
        return Port.from_api(self._get("ports", "port", port_id))

    def list_ports(self, filters: Filters | None = None, page: Page | None = None) -> list[Port]:
        return [Port.from_api(d) for d in self._list("ports", filters, page=page)]

    def get_router(self, router_id: str) -> Router:
        return Router.from_api(self._get("routers", "router", router_id))

    def list_routers(self, filters: Filters | None = None, page: Page | None = None) -> list[Router]:
        return [Router.from_api(d) for d in self._list("routers", filters, page=page)]

    def get_agent(self, agent_id: str) -> Agent:
        return Agent.from_api(self._get("agents", "agent", agent_id))

    def list_agents(self, filters: Filters | None = None, page: Page | None = None) -> list[Agent]:
        return [Agent.from_api(d) for d in self._list("agents", filters, page=page)]

    # L3 agent scheduling (Neutron's l3_agent_scheduler extension): reads
    def list_routers_on_l3_agent(self, agent_id: str) -> list[Router]:
        path = f"/v2.0/agents/{urllib.parse.quote(agent_id, safe='')}/l3-routers"
        return [Router.from_api(d) for d in self._api.request("GET", path)["routers"]]

    def list_l3_agents_hosting_router(self, router_id: str) -> list[Agent]:
        path = f"/v2.0/routers/{urllib.parse.quote(router_id, safe='')}/l3-agents"
        return [Agent.from_api(d) for d in self._api.request("GET", path)["agents"]]

    # the hot-path lookups, as Neutron's own list filters
    def router_network_ids(self, router_id: str) -> list[str]:
        ports = self._list("ports", {"device_id": [router_id], "device_owner": list(ROUTER_INTERFACE_OWNERS)},
                           fields=("network_id",))
        return sorted({p["network_id"] for p in ports})

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]:
        if not network_ids:
            return []
        return self.list_ports({"fixed_ips": [f"ip_address={ip_address}"], "network_id": list(network_ids)})

    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        """The DHCP view's rows from Neutron's port list (`fields=` only what a reservation needs; ids asked for
        RESERVATION_CHUNK at a time so no URL grows past what servers take). No Nova here: hostname is ""."""
        if not network_ids or (port_ids is not None and not port_ids):
            return []
        chunks: list[list[str] | None] = [None] if port_ids is None else [
            list(port_ids[i:i + RESERVATION_CHUNK]) for i in range(0, len(port_ids), RESERVATION_CHUNK)]
        rows = []
        for chunk in chunks:
            filters: dict[str, list[str]] = {"network_id": list(network_ids)}
            if chunk is not None:
                filters["id"] = chunk
            for port in self._list("ports", filters, fields=RESERVATION_FIELDS):
                if str(port.get("device_owner") or "").startswith("network:"):
                    continue
                for fixed in port.get("fixed_ips") or ():
                    rows.append(ReservationRow(port["id"], port["network_id"], fixed["subnet_id"],
                                               str(port["mac_address"]).lower(), fixed["ip_address"],
                                               port.get("device_id") or "", ""))
        rows.sort(key=lambda row: row.port_id)  # (stable: a port's addresses keep their order), as the SQL store
        return rows

    def find_ports_by_mac(self, mac_address: str, network_ids: Sequence[str] | None = None) -> list[Port]:
        filters: dict[str, list[str]] = {"mac_address": [mac_address]}
        if network_ids is not None:
            if not network_ids:
                return []
            filters["network_id"] = list(network_ids)
        return self.list_ports(filters)

    # instances are Nova's: none through Neutron
    def get_instance(self, instance_id: str) -> Instance:
        raise errors.InstanceNotFound(instance_id=instance_id)

    def list_instances(self, filters: Filters | None = None, page: Page | None = None) -> list[Instance]:
        return []

    def get_instance_password(self, instance_id: str) -> str | None:
        raise errors.InstanceNotFound(instance_id=instance_id)

    # change detection
    def revision(self) -> int:
        """A counter that moves when the watched networks, subnets or ports changed (checked at most every
        poll_interval seconds; between checks the last value)."""
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self.poll_interval:
                return self._counter
            current = self._fingerprint()
            self._checked_at = now
            if current != self._digest:
                self._digest = current
                self._counter += 1
            return self._counter

    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        """Neutron cannot say what changed, only that something did: a gap (rebuild) whenever the counter moved."""
        current = self.revision()
        return ChangeBatch(current, (), gap=current > after)

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        """Poll (at most every poll_interval) until the cloud changed after `after` (a gap: rebuild), `timeout`
        passed or wake_waiters() was called (an empty batch)."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.revision()
            if current > after:
                return ChangeBatch(current, (), gap=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._woken.is_set():
                self._woken.clear()
                return ChangeBatch(current)
            self._woken.wait(min(remaining, self.poll_interval))

    def wake_waiters(self) -> None:
        self._woken.set()

    def _fingerprint(self) -> bytes:
        scope: dict[str, list[str]] = {}
        if self.watch_network:
            ids = self._watched_ids()
            if not ids:  # the network is gone (or not visible): that is a state too
                return digest("networks", [], ("id",))
            scope = {"network_id": ids}
        h = hashlib.sha256()
        for collection in ("networks", "subnets", "ports"):
            filters = ({"id": scope["network_id"]} if collection == "networks" else scope) if scope else None
            h.update(self._collection_digest(collection, filters))
        return h.digest()

    def _watched_ids(self) -> list[str]:
        name = self.watch_network or ""
        by_id = self._list("networks", {"id": [name]}, fields=("id",))
        return [n["id"] for n in by_id] or [n["id"] for n in self._list("networks", {"name": [name]}, fields=("id",))]

    def _collection_digest(self, collection: str, filters: Filters | None) -> bytes:
        if collection not in self._without_revision:
            items = self._list(collection, filters, fields=("id", "revision_number"))
            if all("revision_number" in item for item in items):
                return digest(collection, items, ("id", "revision_number"))
            self._without_revision.add(collection)  # this API does not have it: digest what consumers read
        fields = FALLBACK_FIELDS[collection]
        return digest(collection, self._list(collection, filters, fields=fields), fields)

    # writes: never (companion mode reads the cloud, the cloud's own tools change it)
    def create_many(self, kind: str, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        raise self._read_only(f"create {kind}s")

    def create_network(self, attrs: Mapping[str, Any]) -> Network:
        raise self._read_only("create networks")

    def update_network(self, network_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Network:
        raise self._read_only("update networks")

    def delete_network(self, network_id: str) -> None:
        raise self._read_only("delete networks")

    def create_subnet(self, attrs: Mapping[str, Any]) -> Subnet:
        raise self._read_only("create subnets")

    def update_subnet(self, subnet_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Subnet:
        raise self._read_only("update subnets")

    def delete_subnet(self, subnet_id: str) -> None:
        raise self._read_only("delete subnets")

    def create_port(self, attrs: Mapping[str, Any]) -> Port:
        raise self._read_only("create ports")

    def update_port(self, port_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Port:
        raise self._read_only("update ports")

    def delete_port(self, port_id: str) -> None:
        raise self._read_only("delete ports")

    def update_port_status(self, port_id: str, status: str, host: str = "") -> Port:
        raise self._read_only("update port statuses")

    def create_router(self, attrs: Mapping[str, Any]) -> Router:
        raise self._read_only("create routers")

    def update_router(self, router_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Router:
        raise self._read_only("update routers")

    def delete_router(self, router_id: str) -> None:
        raise self._read_only("delete routers")

    def add_router_interface(self, router_id: str, subnet_id: str | None = None,
                             port_id: str | None = None) -> dict:
        raise self._read_only("add router interfaces")

    def remove_router_interface(self, router_id: str, subnet_id: str | None = None,
                                port_id: str | None = None) -> dict:
        raise self._read_only("remove router interfaces")

    def report_agent_state(self, host: str, agent_type: str, binary: str,
                           configurations: Mapping[str, Any]) -> Agent:
        raise self._read_only("report agent states")

    def update_agent(self, agent_id: str, attrs: Mapping[str, Any]) -> Agent:
        raise self._read_only("update agents")

    def delete_agent(self, agent_id: str) -> None:
        raise self._read_only("delete agents")

    def add_router_to_l3_agent(self, agent_id: str, router_id: str) -> None:
        raise self._read_only("schedule routers to L3 agents")

    def remove_router_from_l3_agent(self, agent_id: str, router_id: str) -> None:
        raise self._read_only("remove routers from L3 agents")

    def create_instance(self, attrs: Mapping[str, Any]) -> Instance:
        raise self._read_only("create instances")

    def update_instance(self, instance_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Instance:
        raise self._read_only("update instances")

    def delete_instance(self, instance_id: str) -> None:
        raise self._read_only("delete instances")

    def set_instance_password(self, instance_id: str, password: str) -> None:
        raise self._read_only("set instance passwords")

    def close(self) -> None:
        self._api.close()
