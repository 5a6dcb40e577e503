# The one Registry interface the agent, the DHCP server, the API and the CLI depend on (SQL or remote behind it).
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from provnet.model.resources import Agent, Instance, Network, Port, Router, Subnet
from provnet.registry.changes import ChangeBatch


class ReservationRow(NamedTuple):
    """One fixed IP of a port with what a DHCP server needs of it: the lean read behind the DHCP view and exports
    (100,000 of these are read in about a second; full Port objects took 18)."""

    port_id: str
    network_id: str
    subnet_id: str
    mac_address: str
    ip_address: str
    device_id: str
    hostname: str  # the instance's (device_id's) hostname, "" when no instance has that id


# what the registry reads the time from (timestamps, agent liveness); tests inject their own
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)

# API list filters: a key repeated is OR, different keys AND; values are the query strings' values,
# converted per attribute by the implementation (`shared=True`, `fixed_ips=ip_address=X`).
Filters = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class Page:
    """Neutron's pagination and sorting of a list, done by the store: `sort` is (attribute, ascending) pairs (the
    id is always the last key, so the order is total); `marker` the id of the item the page starts after
    (before, with `reverse`: Neutron's page_reverse, the page that ends before it); `limit` None is all."""

    limit: int | None = None
    marker: str | None = None
    sort: tuple[tuple[str, bool], ...] = ()
    reverse: bool = False


@runtime_checkable
class Registry(Protocol):
    """Networks, subnets, ports, routers, agents and instances.

    Lists take filters (below) and, optionally, a Page: the store sorts and cuts, so a page costs what it holds,
    not what is stored; a marker that names nothing is the kind's NotFound.

    Updates take `if_revision` (Neutron's If-Match: revision_number=N): when given and the resource's
    revision_number differs, nothing changes and RevisionNumberConstraintFailed (412) is raised.

    Create and update take Neutron-shaped attribute dicts (the body's inner object, e.g. the value of
    `{"network": {...}}`); they validate with Neutron's rules and raise `provnet.model.errors.NeutronError`
    subclasses. Every write is one transaction: it is all there or not at all.
    """

    # bulk create, Neutron's `{"ports": [...]}`: kind is "network", "subnet", "port" or "router"; the items
    # are created in order in ONE transaction, so another reader sees all of them or (one failed) none
    def create_many(self, kind: str, items: Sequence[Mapping[str, Any]]) -> list[Any]: ...

    # networks
    def create_network(self, attrs: Mapping[str, Any]) -> Network: ...
    def get_network(self, network_id: str) -> Network: ...
    def list_networks(self, filters: Filters | None = None, page: Page | None = None) -> list[Network]: ...
    def update_network(self, network_id: str, attrs: Mapping[str, Any],
                       if_revision: int | None = None) -> Network: ...
    def delete_network(self, network_id: str) -> None: ...

    # subnets
    def create_subnet(self, attrs: Mapping[str, Any]) -> Subnet: ...
    def get_subnet(self, subnet_id: str) -> Subnet: ...
    def list_subnets(self, filters: Filters | None = None, page: Page | None = None) -> list[Subnet]: ...
    def update_subnet(self, subnet_id: str, attrs: Mapping[str, Any],
                      if_revision: int | None = None) -> Subnet: ...
    def delete_subnet(self, subnet_id: str) -> None: ...

    # ports
    def create_port(self, attrs: Mapping[str, Any]) -> Port: ...
    def get_port(self, port_id: str) -> Port: ...
    def list_ports(self, filters: Filters | None = None, page: Page | None = None) -> list[Port]: ...
    def update_port(self, port_id: str, attrs: Mapping[str, Any],
                    if_revision: int | None = None) -> Port: ...
    def delete_port(self, port_id: str) -> None: ...

    # routers
    def create_router(self, attrs: Mapping[str, Any]) -> Router: ...
    def get_router(self, router_id: str) -> Router: ...
    def list_routers(self, filters: Filters | None = None, page: Page | None = None) -> list[Router]: ...
    def update_router(self, router_id: str, attrs: Mapping[str, Any],
                      if_revision: int | None = None) -> Router: ...
    def delete_router(self, router_id: str) -> None: ...
    def add_router_interface(self, router_id: str, subnet_id: str | None = None,
                             port_id: str | None = None) -> dict: ...
    def remove_router_interface(self, router_id: str, subnet_id: str | None = None,
                                port_id: str | None = None) -> dict: ...

    # agents (no create: agents report their state)
    def report_agent_state(self, host: str, agent_type: str, binary: str,
                           configurations: Mapping[str, Any]) -> Agent: ...
    def get_agent(self, agent_id: str) -> Agent: ...
    def list_agents(self, filters: Filters | None = None, page: Page | None = None) -> list[Agent]: ...
    def update_agent(self, agent_id: str, attrs: Mapping[str, Any]) -> Agent: ...
    def delete_agent(self, agent_id: str) -> None: ...

    # L3 agent scheduling (Neutron's l3_agent_scheduler extension): one L3 agent hosts each router
    def list_routers_on_l3_agent(self, agent_id: str) -> list[Router]: ...
    def list_l3_agents_hosting_router(self, router_id: str) -> list[Agent]: ...
    def add_router_to_l3_agent(self, agent_id: str, router_id: str) -> None: ...
    def remove_router_from_l3_agent(self, agent_id: str, router_id: str) -> None: ...

    # instances (Nova's side of the metadata)
    def create_instance(self, attrs: Mapping[str, Any]) -> Instance: ...
    def get_instance(self, instance_id: str) -> Instance: ...
    def list_instances(self, filters: Filters | None = None, page: Page | None = None) -> list[Instance]: ...
    def update_instance(self, instance_id: str, attrs: Mapping[str, Any],
                        if_revision: int | None = None) -> Instance: ...
    def delete_instance(self, instance_id: str) -> None: ...
    def get_instance_password(self, instance_id: str) -> str | None: ...
    def set_instance_password(self, instance_id: str, password: str) -> None:
        """Store once; a second set raises Conflict (409), as Nova's metadata password."""
        ...

    # hot-path lookups (indexed), for the metadata agent and the DHCP server
    def router_network_ids(self, router_id: str) -> list[str]:
        """Networks of the router's interface ports (router_interface owners only)."""
        ...

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]: ...
    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        """The fixed IPs of the ports on `network_ids` (only `port_ids`, when given), except ports owned by
        `network:*` (router interfaces, DHCP ports: agents configure those, not DHCP)."""
        ...

    def find_ports_by_mac(self, mac_address: str, network_ids: Sequence[str] | None = None) -> list[Port]: ...

    def revision(self) -> int:
        """A number that grows with every committed change (the change feed's position)."""
        ...

    # the change feed: what each committed write touched, in commit order (provnet.registry.changes)
    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        """The changes after revision `after` (at most `limit` revisions of them), at once; `gap` when they are
        no longer kept and the reader must rebuild from the store."""
        ...

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        """Like changes_since, but blocks until there is something after `after` or `timeout` seconds passed
        (an early empty answer is allowed). Blocking: async code calls it from a thread (registry.feed)."""
        ...

    def wake_waiters(self) -> None:
        """Make this process's threads blocked in wait_changes return now (used to stop them)."""
        ...

    def close(self) -> None: ...
