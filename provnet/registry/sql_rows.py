# Rows <-> domain objects for the SQL registry, and API list filters turned into SQL conditions.
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from provnet.model.errors import HTTPBadRequest
from provnet.model.resources import (
    Agent,
    AllocationPool,
    FixedIP,
    HostRoute,
    Instance,
    KeyPair,
    Network,
    Port,
    Router,
    Subnet,
)
from provnet.model.validation import Invalid, to_boolean, to_int, to_mac
from provnet.registry import schema as t


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def network_from_row(row: Any, subnet_ids: list[str]) -> Network:
    return Network(
        id=row.id, name=row.name, project_id=row.project_id, admin_state_up=row.admin_state_up,
        shared=row.shared, router_external=row.router_external, network_type=row.network_type,
        physical_network=row.physical_network, segmentation_id=row.segmentation_id,
        port_security_enabled=row.port_security_enabled, status=row.status, subnets=subnet_ids,
        description=row.description,
    )


def subnet_from_row(row: Any) -> Subnet:
    return Subnet(
        id=row.id, network_id=row.network_id, cidr=row.cidr, name=row.name, project_id=row.project_id,
        ip_version=row.ip_version, gateway_ip=row.gateway_ip,
        allocation_pools=[AllocationPool(p["start"], p["end"]) for p in row.allocation_pools],
        dns_nameservers=list(row.dns_nameservers),
        host_routes=[HostRoute(r["destination"], r["nexthop"]) for r in row.host_routes],
        enable_dhcp=row.enable_dhcp, description=row.description,
    )


def subnet_values(subnet: Subnet) -> dict:
    return {
        "id": subnet.id, "network_id": subnet.network_id, "name": subnet.name, "project_id": subnet.project_id,
        "ip_version": subnet.ip_version, "cidr": subnet.cidr, "gateway_ip": subnet.gateway_ip,
        "allocation_pools": [p.to_api() for p in subnet.allocation_pools],
        "dns_nameservers": list(subnet.dns_nameservers),
        "host_routes": [r.to_api() for r in subnet.host_routes], "enable_dhcp": subnet.enable_dhcp,
        "description": subnet.description,
    }


def port_from_row(row: Any, fixed_ips: list[FixedIP]) -> Port:
    return Port(
        id=row.id, network_id=row.network_id, mac_address=row.mac_address, name=row.name,
        project_id=row.project_id, admin_state_up=row.admin_state_up, fixed_ips=fixed_ips,
        device_id=row.device_id, device_owner=row.device_owner, status=row.status,
        security_groups=list(row.security_groups), port_security_enabled=row.port_security_enabled,
        allowed_address_pairs=list(row.allowed_address_pairs), binding_host_id=row.binding_host_id,
        binding_vnic_type=row.binding_vnic_type, binding_profile=dict(row.binding_profile),
        binding_vif_type=row.binding_vif_type, binding_vif_details=dict(row.binding_vif_details),
        binding_failure_reason=row.binding_failure_reason, description=row.description,
    )


def port_values(port: Port) -> dict:
    """The ports row of `port` (fixed IPs live in ip_allocations)."""
    return {
        "id": port.id, "network_id": port.network_id, "name": port.name, "project_id": port.project_id,
        "admin_state_up": port.admin_state_up, "mac_address": port.mac_address, "device_id": port.device_id,
        "device_owner": port.device_owner, "status": port.status, "security_groups": list(port.security_groups),
        "port_security_enabled": port.port_security_enabled,
        "allowed_address_pairs": list(port.allowed_address_pairs), "binding_host_id": port.binding_host_id,
        "binding_vnic_type": port.binding_vnic_type, "binding_profile": dict(port.binding_profile),
        "binding_vif_type": port.binding_vif_type, "binding_vif_details": dict(port.binding_vif_details),
        "binding_failure_reason": port.binding_failure_reason, "description": port.description,
    }


def ports_from_joined(rows: Iterable[Any]) -> list[Port]:
    """Rows of ports LEFT JOIN ip_allocations (ordered by port, then position) -> ports with their fixed IPs."""
    out: dict[str, Port] = {}
    for row in rows:
        port = out.get(row.id)
        if port is None:
            port = out[row.id] = port_from_row(row, [])
        if row.alloc_ip is not None:
            port.fixed_ips.append(FixedIP(row.alloc_subnet_id, row.alloc_ip))
    return list(out.values())


def router_from_row(row: Any) -> Router:
    return Router(id=row.id, name=row.name, project_id=row.project_id, admin_state_up=row.admin_state_up,
                  status=row.status, description=row.description)


def agent_from_row(row: Any) -> Agent:
    return Agent(
        id=row.id, host=row.host, agent_type=row.agent_type, binary=row.binary, topic=row.topic,
        admin_state_up=row.admin_state_up, configurations=dict(row.configurations),
        heartbeat_timestamp=utc(row.heartbeat_timestamp), created_at=utc(row.created_at),
        started_at=utc(row.started_at),
    )


def instance_from_row(row: Any) -> Instance:
    return Instance(
        id=row.id, name=row.name, hostname=row.hostname, project_id=row.project_id,
        availability_zone=row.availability_zone, launch_index=row.launch_index,
        user_data=bytes(row.user_data) if row.user_data is not None else None,
        key_pairs=[KeyPair(k["name"], k["data"], k.get("type", "ssh")) for k in row.key_pairs],
        metadata=dict(row.metadata), vendor_data=row.vendor_data, flavor=row.flavor, password=row.password,
        created_at=utc(row.created_at),
    )


# ---- filters ---------------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return str(value)


def _mac(value: Any) -> str:
    try:
        return to_mac(value)
    except Invalid:
        return str(value).lower()


Column = sa.ColumnElement
# filter key -> (column, converter of one query-string value)
FilterMap = Mapping[str, tuple[Column, Callable[[Any], Any]]]

def _standard_filters(table: sa.Table) -> dict[str, tuple[Column, Callable[[Any], Any]]]:
    """The filters every Neutron resource table answers: id, name, description and the project (both names)."""
    return {"id": (table.c.id, _text), "name": (table.c.name, _text), "description": (table.c.description, _text),
            "project_id": (table.c.project_id, _text), "tenant_id": (table.c.project_id, _text)}


NETWORK_FILTERS: FilterMap = {
    **_standard_filters(t.networks),
    "admin_state_up": (t.networks.c.admin_state_up, to_boolean), "shared": (t.networks.c.shared, to_boolean),
    "router:external": (t.networks.c.router_external, to_boolean),
    "provider:network_type": (t.networks.c.network_type, _text),
    "provider:physical_network": (t.networks.c.physical_network, _text),
    "provider:segmentation_id": (t.networks.c.segmentation_id, to_int),
    "port_security_enabled": (t.networks.c.port_security_enabled, to_boolean),
    "status": (t.networks.c.status, _text),
}

SUBNET_FILTERS: FilterMap = {
    **_standard_filters(t.subnets),
    "network_id": (t.subnets.c.network_id, _text), "ip_version": (t.subnets.c.ip_version, to_int),
    "cidr": (t.subnets.c.cidr, _text), "gateway_ip": (t.subnets.c.gateway_ip, _text),
    "enable_dhcp": (t.subnets.c.enable_dhcp, to_boolean),
}

PORT_FILTERS: FilterMap = {
    **_standard_filters(t.ports),
    "network_id": (t.ports.c.network_id, _text), "admin_state_up": (t.ports.c.admin_state_up, to_boolean),
    "mac_address": (t.ports.c.mac_address, _mac), "device_id": (t.ports.c.device_id, _text),
    "device_owner": (t.ports.c.device_owner, _text), "status": (t.ports.c.status, _text),
    "port_security_enabled": (t.ports.c.port_security_enabled, to_boolean),
    "binding:host_id": (t.ports.c.binding_host_id, _text),
    "binding:vif_type": (t.ports.c.binding_vif_type, _text),
    "binding:vnic_type": (t.ports.c.binding_vnic_type, _text),
}

ROUTER_FILTERS: FilterMap = {
    **_standard_filters(t.routers),
    "admin_state_up": (t.routers.c.admin_state_up, to_boolean), "status": (t.routers.c.status, _text),
}

AGENT_FILTERS: FilterMap = {
    "id": (t.agents.c.id, _text), "host": (t.agents.c.host, _text),
    "agent_type": (t.agents.c.agent_type, _text), "binary": (t.agents.c.binary, _text),
    "topic": (t.agents.c.topic, _text), "admin_state_up": (t.agents.c.admin_state_up, to_boolean),
}

INSTANCE_FILTERS: FilterMap = {
    "id": (t.instances.c.id, _text), "name": (t.instances.c.name, _text),
    "hostname": (t.instances.c.hostname, _text),
    "project_id": (t.instances.c.project_id, _text), "tenant_id": (t.instances.c.project_id, _text),
    "availability_zone": (t.instances.c.availability_zone, _text),
    "launch_index": (t.instances.c.launch_index, to_int),
}


def filter_values(filters: Mapping[str, Any], key: str) -> list:
    raw = filters[key]
    return list(raw) if isinstance(raw, list | tuple) else [raw]


def convert_value(key: str, convert: Callable[[Any], Any], value: Any) -> Any:
    try:
        return convert(value)
    except Invalid as exc:
        raise HTTPBadRequest(msg=f"Invalid input for {key}. Reason: {exc}.") from None


def check_filter_keys(filters: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise HTTPBadRequest(msg=f"{unknown} is invalid attribute for filtering")


def conditions(filters: Mapping[str, Any] | None, fmap: FilterMap,
               special: Mapping[str, Callable[[list], Column]] | None = None,
               extra_keys: Sequence[str] = ()) -> list[Column]:
    """SQL conditions for `filters`: values of one key are OR'ed (IN), keys AND'ed. Unknown key -> 400."""
    if not filters:
        return []
    special = special or {}
    check_filter_keys(filters, [*fmap, *special, *extra_keys])
    out: list[Column] = []
    for key in filters:
        if key in extra_keys:
            continue
        values = filter_values(filters, key)
        if key in special:
            out.append(special[key](values))
            continue
        column, convert = fmap[key]
        out.append(column.in_([convert_value(key, convert, v) for v in values]))
    return out


def fixed_ips_condition(values: list) -> Column:
    """`fixed_ips=ip_address=X&fixed_ips=subnet_id=Y`: ports with an allocation having one of the IPs (if any
    given) on one of the subnets (if any given), as Neutron's port query does."""
    ips: list[str] = []
    subnet_ids: list[str] = []
    for value in values:
        pairs = value.items() if isinstance(value, dict) else [str(value).partition("=")[::2]]
        for key, val in pairs:
            if key == "ip_address":
                ips.append(str(val))
            elif key == "subnet_id":
                subnet_ids.append(str(val))
            else:
                raise HTTPBadRequest(msg=f"Invalid input for fixed_ips. Reason: '{value}' is not of the form "
                                         f"ip_address=IP or subnet_id=ID.")
    sub = sa.select(t.ip_allocations.c.port_id)
    if ips:
        sub = sub.where(t.ip_allocations.c.ip_address.in_(ips))
    if subnet_ids:
        sub = sub.where(t.ip_allocations.c.subnet_id.in_(subnet_ids))
    return t.ports.c.id.in_(sub)


def network_subnets_condition(values: list) -> Column:
    """`subnets=<id>`: networks holding that subnet."""
    return t.networks.c.id.in_(sa.select(t.subnets.c.network_id).where(t.subnets.c.id.in_(values)))
