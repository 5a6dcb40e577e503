# The domain's resources as plain dataclasses; their Neutron API shapes come from the declared attributes. No I/O.
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from provnet.model.forms import FORMS
from provnet.model.values import DEFAULT_PROJECT_ID, AllocationPool, FixedIP, HostRoute, KeyPair

__all__ = ["DEFAULT_PROJECT_ID", "L3_AGENT_TYPE", "METADATA_PORT_OWNER", "MTU_BY_TYPE", "OVS_AGENT_TYPE",
           "PORT_STATUSES", "ROUTER_INTERFACE_OWNERS", "Agent", "AllocationPool", "FixedIP", "HostRoute", "Instance",
           "KeyPair", "Network", "Port", "Router", "Subnet", "metadata_device_id"]

ROUTER_INTERFACE_OWNERS = (
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
)
OVS_AGENT_TYPE = "Open vSwitch agent"
L3_AGENT_TYPE = "L3 agent"  # neutron-lib constants.AGENT_TYPE_L3
METADATA_PORT_OWNER = "network:distributed"  # the per-network metadata port (network mode), as OVN's


def metadata_device_id(network_id: str) -> str:
    return "provnet-metadata-" + network_id


PORT_STATUSES = ("ACTIVE", "DOWN", "BUILD", "ERROR")  # what an L2 agent may report (neutron-lib PORT_STATUS_*)


MTU_BY_TYPE = {"flat": 1500, "vlan": 1500, "local": 1500, "vxlan": 1450, "gre": 1458}


@dataclass
class Network:
    id: str
    name: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    admin_state_up: bool = True
    shared: bool = False
    router_external: bool = False
    network_type: str | None = None
    physical_network: str | None = None
    segmentation_id: int | None = None
    port_security_enabled: bool = True
    status: str = "ACTIVE"
    subnets: list[str] = field(default_factory=list)
    description: str = ""
    created_at: datetime | None = None  # Neutron's standard attributes: set by the registry
    updated_at: datetime | None = None
    revision_number: int = 0

    @property
    def mtu(self) -> int:
        return MTU_BY_TYPE.get(self.network_type or "local", 1500)

    def to_api(self) -> dict[str, Any]:
        return FORMS["network"].dump(self)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Network:
        return FORMS["network"].load(cls, d)


@dataclass
class Subnet:
    id: str
    network_id: str
    cidr: str
    name: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    ip_version: int = 4
    gateway_ip: str | None = None
    allocation_pools: list[AllocationPool] = field(default_factory=list)
    dns_nameservers: list[str] = field(default_factory=list)
    host_routes: list[HostRoute] = field(default_factory=list)
    enable_dhcp: bool = True
    description: str = ""
    created_at: datetime | None = None  # Neutron's standard attributes: set by the registry
    updated_at: datetime | None = None
    revision_number: int = 0

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    def to_api(self) -> dict[str, Any]:
        return FORMS["subnet"].dump(self)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Subnet:
        return FORMS["subnet"].load(cls, d)


@dataclass
class Port:
    id: str
    network_id: str
    mac_address: str
    name: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    admin_state_up: bool = True
    fixed_ips: list[FixedIP] = field(default_factory=list)
    device_id: str = ""
    device_owner: str = ""
    status: str = "DOWN"
    security_groups: list[str] = field(default_factory=list)
    port_security_enabled: bool = True
    allowed_address_pairs: list[dict[str, str]] = field(default_factory=list)
    binding_host_id: str = ""
    binding_vnic_type: str = "normal"
    binding_profile: dict[str, Any] = field(default_factory=dict)
    binding_vif_type: str = "unbound"
    binding_vif_details: dict[str, Any] = field(default_factory=dict)
    binding_failure_reason: str | None = None
    description: str = ""
    created_at: datetime | None = None  # Neutron's standard attributes: set by the registry
    updated_at: datetime | None = None
    revision_number: int = 0

    @property
    def is_router_interface(self) -> bool:
        return self.device_owner in ROUTER_INTERFACE_OWNERS

    def ips(self) -> list[str]:
        return [f.ip_address for f in self.fixed_ips]

    def to_api(self) -> dict[str, Any]:
        return FORMS["port"].dump(self)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Port:
        return FORMS["port"].load(cls, d)


@dataclass
class Router:
    id: str
    name: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    admin_state_up: bool = True
    status: str = "ACTIVE"
    description: str = ""
    created_at: datetime | None = None  # Neutron's standard attributes: set by the registry
    updated_at: datetime | None = None
    revision_number: int = 0

    def to_api(self) -> dict[str, Any]:
        return FORMS["router"].dump(self)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Router:
        return FORMS["router"].load(cls, d)


@dataclass
class Agent:
    id: str
    host: str
    agent_type: str = OVS_AGENT_TYPE
    binary: str = "provnet-agent"
    topic: str = "N/A"
    admin_state_up: bool = True
    configurations: dict[str, Any] = field(default_factory=dict)
    heartbeat_timestamp: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None

    def is_alive(self, agent_down_time: float, now: datetime | None = None) -> bool:
        """Neutron's rule: alive while the last heartbeat is no older than agent_down_time."""
        if self.heartbeat_timestamp is None:
            return False
        now = now or datetime.now(UTC)
        return (now - self.heartbeat_timestamp).total_seconds() <= agent_down_time

    def heartbeat_age(self, now: datetime | None = None) -> float | None:
        if self.heartbeat_timestamp is None:
            return None
        return ((now or datetime.now(UTC)) - self.heartbeat_timestamp).total_seconds()

    def to_api(self, agent_down_time: float = 75, now: datetime | None = None) -> dict[str, Any]:
        body = FORMS["agent"].dump(self)
        body["alive"] = self.is_alive(agent_down_time, now)
        return body

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Agent:
        return FORMS["agent"].load(cls, d)


@dataclass
class Instance:
    """Nova's side: what the metadata API renders for one VM."""

    id: str  # uuid
    name: str = ""
    hostname: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    availability_zone: str = "nova"
    launch_index: int = 0
    user_data: bytes | None = None
    key_pairs: list[KeyPair] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    vendor_data: dict[str, Any] = field(default_factory=dict)
    flavor: str = "m1.small"
    password: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    revision_number: int = 0

    def to_api(self) -> dict[str, Any]:
        return FORMS["instance"].dump(self)

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> Instance:
        return FORMS["instance"].load(cls, d)
