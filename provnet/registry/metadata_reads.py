# The ports a subnet's route to 169.254.169.254 depends on, read through the Registry interface (DHCP, metadata API).
from __future__ import annotations

from collections.abc import Sequence

from provnet.model.metadata_mode import address_lookups, metadata_hops
from provnet.model.resources import Port, Subnet, metadata_device_id
from provnet.registry.base import Registry


def service_ports(registry: Registry, subnets: Sequence[Subnet]) -> list[Port]:
    """The metadata ports of the subnets' networks and the router interfaces holding their gateways: two indexed
    list reads (the ports by device id, the interfaces by address), whatever the number of VM ports."""
    network_ids = sorted({s.network_id for s in subnets})
    if not network_ids:
        return []
    ports = registry.list_ports({"device_id": [metadata_device_id(n) for n in network_ids]})
    lookups = address_lookups(subnets)
    if lookups:
        ports += [p for p in registry.list_ports({"fixed_ips": lookups, "network_id": network_ids})
                  if p.is_router_interface]
    return ports


def read_metadata_hops(registry: Registry, mode: str, subnets: Sequence[Subnet]) -> dict[str, str]:
    """Subnet id -> the metadata port's address its VMs route 169.254.169.254/32 via (network mode only)."""
    if mode == "router" or not subnets:
        return {}
    return metadata_hops(mode, subnets, service_ports(registry, subnets))
