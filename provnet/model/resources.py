# The domain's resources as plain dataclasses, with their Neutron API shapes (to_api / from_api). No I/O.
from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime

ROUTER_INTERFACE_OWNERS = (
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
)
OVS_AGENT_TYPE = "Open vSwitch agent"
L3_AGENT_TYPE = "L3 agent"  # neutron-lib constants.AGENT_TYPE_L3
DEFAULT_PROJECT_ID = "fake_project_id"
MTU_BY_TYPE = {"flat": 1500, "vlan": 1500, "local": 1500, "vxlan": 1450, "gre": 1458}


def _ts(value: datetime | None) -> str | None:
    """Neutron's timestamp format: `2017-09-12 19:40:38` (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else None


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


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

    @property
    def mtu(self) -> int:
        return MTU_BY_TYPE.get(self.network_type or "local", 1500)

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "tenant_id": self.project_id,
            "project_id": self.project_id,
            "admin_state_up": self.admin_state_up,
            "status": self.status,
            "shared": self.shared,
            "subnets": list(self.subnets),
            "mtu": self.mtu,
            "router:external": self.router_external,
            "provider:network_type": self.network_type,
            "provider:physical_network": self.physical_network,
            "provider:segmentation_id": self.segmentation_id,
            "port_security_enabled": self.port_security_enabled,
            "description": self.description,
        }

    @classmethod
    def from_api(cls, d: dict) -> Network:
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            project_id=d.get("project_id") or d.get("tenant_id") or DEFAULT_PROJECT_ID,
            admin_state_up=d.get("admin_state_up", True),
            shared=d.get("shared", False),
            router_external=d.get("router:external", False),
            network_type=d.get("provider:network_type"),
            physical_network=d.get("provider:physical_network"),
            segmentation_id=d.get("provider:segmentation_id"),
            port_security_enabled=d.get("port_security_enabled", True),
            status=d.get("status", "ACTIVE"),
            subnets=list(d.get("subnets", [])),
            description=d.get("description") or "",
        )


@dataclass(frozen=True)
class AllocationPool:
    start: str
    end: str

    def to_api(self) -> dict:
        return {"start": self.start, "end": self.end}

    def __contains__(self, ip: object) -> bool:
        addr = ipaddress.ip_address(str(ip))
        return ipaddress.ip_address(self.start) <= addr <= ipaddress.ip_address(self.end)


@dataclass(frozen=True)
class HostRoute:
    destination: str
    nexthop: str

    def to_api(self) -> dict:
        return {"destination": self.destination, "nexthop": self.nexthop}


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

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "network_id": self.network_id,
            "tenant_id": self.project_id,
            "project_id": self.project_id,
            "ip_version": self.ip_version,
            "cidr": self.cidr,
            "gateway_ip": self.gateway_ip,
            "allocation_pools": [p.to_api() for p in self.allocation_pools],
            "dns_nameservers": list(self.dns_nameservers),
            "host_routes": [r.to_api() for r in self.host_routes],
            "enable_dhcp": self.enable_dhcp,
            "ipv6_ra_mode": None,
            "ipv6_address_mode": None,
            "subnetpool_id": None,
            "description": self.description,
        }

    @classmethod
    def from_api(cls, d: dict) -> Subnet:
        return cls(
            id=d["id"],
            network_id=d["network_id"],
            cidr=d["cidr"],
            name=d.get("name", ""),
            project_id=d.get("project_id") or d.get("tenant_id") or DEFAULT_PROJECT_ID,
            ip_version=d.get("ip_version", 4),
            gateway_ip=d.get("gateway_ip"),
            allocation_pools=[AllocationPool(p["start"], p["end"]) for p in d.get("allocation_pools", [])],
            dns_nameservers=list(d.get("dns_nameservers", [])),
            host_routes=[HostRoute(r["destination"], r["nexthop"]) for r in d.get("host_routes", [])],
            enable_dhcp=d.get("enable_dhcp", True),
            description=d.get("description") or "",
        )


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str

    def to_api(self) -> dict:
        return {"subnet_id": self.subnet_id, "ip_address": self.ip_address}


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
    allowed_address_pairs: list[dict] = field(default_factory=list)
    binding_host_id: str = ""
    binding_vnic_type: str = "normal"
    binding_profile: dict = field(default_factory=dict)
    binding_vif_type: str = "unbound"
    binding_vif_details: dict = field(default_factory=dict)
    binding_failure_reason: str | None = None
    description: str = ""

    @property
    def is_router_interface(self) -> bool:
        return self.device_owner in ROUTER_INTERFACE_OWNERS

    def ips(self) -> list[str]:
        return [f.ip_address for f in self.fixed_ips]

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "network_id": self.network_id,
            "tenant_id": self.project_id,
            "project_id": self.project_id,
            "admin_state_up": self.admin_state_up,
            "mac_address": self.mac_address,
            "fixed_ips": [f.to_api() for f in self.fixed_ips],
            "device_id": self.device_id,
            "device_owner": self.device_owner,
            "status": self.status,
            "security_groups": list(self.security_groups),
            "port_security_enabled": self.port_security_enabled,
            "allowed_address_pairs": list(self.allowed_address_pairs),
            "binding:host_id": self.binding_host_id,
            "binding:vnic_type": self.binding_vnic_type,
            "binding:profile": dict(self.binding_profile),
            "binding:vif_type": self.binding_vif_type,
            "binding:vif_details": dict(self.binding_vif_details),
            "binding:failure_reason": self.binding_failure_reason,
            "description": self.description,
        }

    @classmethod
    def from_api(cls, d: dict) -> Port:
        return cls(
            id=d["id"],
            network_id=d["network_id"],
            mac_address=d["mac_address"],
            name=d.get("name", ""),
            project_id=d.get("project_id") or d.get("tenant_id") or DEFAULT_PROJECT_ID,
            admin_state_up=d.get("admin_state_up", True),
            fixed_ips=[FixedIP(f["subnet_id"], f["ip_address"]) for f in d.get("fixed_ips", [])],
            device_id=d.get("device_id", ""),
            device_owner=d.get("device_owner", ""),
            status=d.get("status", "DOWN"),
            security_groups=list(d.get("security_groups", [])),
            port_security_enabled=d.get("port_security_enabled", True),
            allowed_address_pairs=list(d.get("allowed_address_pairs", [])),
            binding_host_id=d.get("binding:host_id", "") or "",
            binding_vnic_type=d.get("binding:vnic_type", "normal"),
            binding_profile=dict(d.get("binding:profile") or {}),
            binding_vif_type=d.get("binding:vif_type", "unbound"),
            binding_vif_details=dict(d.get("binding:vif_details") or {}),
            binding_failure_reason=d.get("binding:failure_reason"),
            description=d.get("description") or "",
        )


@dataclass
class Router:
    id: str
    name: str = ""
    project_id: str = DEFAULT_PROJECT_ID
    admin_state_up: bool = True
    status: str = "ACTIVE"
    description: str = ""

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "tenant_id": self.project_id,
            "project_id": self.project_id,
            "admin_state_up": self.admin_state_up,
            "status": self.status,
            "external_gateway_info": None,
            "routes": [],
            "description": self.description,
        }

    @classmethod
    def from_api(cls, d: dict) -> Router:
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            project_id=d.get("project_id") or d.get("tenant_id") or DEFAULT_PROJECT_ID,
            admin_state_up=d.get("admin_state_up", True),
            status=d.get("status", "ACTIVE"),
            description=d.get("description") or "",
        )


@dataclass
class Agent:
    id: str
    host: str
    agent_type: str = OVS_AGENT_TYPE
    binary: str = "provnet-agent"
    topic: str = "N/A"
    admin_state_up: bool = True
    configurations: dict = field(default_factory=dict)
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

    def to_api(self, agent_down_time: float = 75, now: datetime | None = None) -> dict:
        return {
            "id": self.id,
            "agent_type": self.agent_type,
            "binary": self.binary,
            "topic": self.topic,
            "host": self.host,
            "admin_state_up": self.admin_state_up,
            "alive": self.is_alive(agent_down_time, now),
            "heartbeat_timestamp": _ts(self.heartbeat_timestamp),
            "created_at": _ts(self.created_at),
            "started_at": _ts(self.started_at),
            "configurations": dict(self.configurations),
            "description": None,
        }

    @classmethod
    def from_api(cls, d: dict) -> Agent:
        return cls(
            id=d["id"],
            host=d["host"],
            agent_type=d.get("agent_type", OVS_AGENT_TYPE),
            binary=d.get("binary", "provnet-agent"),
            topic=d.get("topic", "N/A"),
            admin_state_up=d.get("admin_state_up", True),
            configurations=dict(d.get("configurations") or {}),
            heartbeat_timestamp=_parse_ts(d.get("heartbeat_timestamp")),
            created_at=_parse_ts(d.get("created_at")),
            started_at=_parse_ts(d.get("started_at")),
        )


@dataclass(frozen=True)
class KeyPair:
    name: str
    data: str
    type: str = "ssh"

    def to_api(self) -> dict:
        return {"name": self.name, "type": self.type, "data": self.data}


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
    vendor_data: dict = field(default_factory=dict)
    flavor: str = "m1.small"
    password: str | None = None
    created_at: datetime | None = None

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "project_id": self.project_id,
            "tenant_id": self.project_id,
            "availability_zone": self.availability_zone,
            "launch_index": self.launch_index,
            "user_data": base64.b64encode(self.user_data).decode() if self.user_data is not None else None,
            "key_pairs": [k.to_api() for k in self.key_pairs],
            "metadata": dict(self.metadata),
            "vendor_data": self.vendor_data,
            "flavor": self.flavor,
            "has_password": self.password is not None,
            "created_at": _ts(self.created_at),
        }

    @classmethod
    def from_api(cls, d: dict) -> Instance:
        ud = d.get("user_data")
        return cls(
            id=d["id"],
            name=d.get("name", ""),
            hostname=d.get("hostname", ""),
            project_id=d.get("project_id") or d.get("tenant_id") or DEFAULT_PROJECT_ID,
            availability_zone=d.get("availability_zone", "nova"),
            launch_index=d.get("launch_index", 0),
            user_data=base64.b64decode(ud) if ud is not None else None,
            key_pairs=[KeyPair(k["name"], k["data"], k.get("type", "ssh")) for k in d.get("key_pairs", [])],
            metadata=dict(d.get("metadata") or {}),
            vendor_data=d.get("vendor_data") or {},
            flavor=d.get("flavor", "m1.small"),
            created_at=_parse_ts(d.get("created_at")),
        )
