# Subnet rules (Neutron's subnet checks), pure: CIDR normalisation, gateway, allocation pools, limits.
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from provnet.model.errors import (
    DNSNameServersExhausted,
    GatewayConflictWithAllocationPools,
    HostRoutesExhausted,
    InvalidAllocationPool,
    InvalidInput,
    OutOfBoundsAllocationPool,
    OverlappingAllocationPools,
)
from provnet.model.ipam import iter_pool_overlaps, pool_ranges
from provnet.model.resources import AllocationPool, HostRoute, Subnet

MAX_DNS_NAMESERVERS = 5
MAX_HOST_ROUTES = 20


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _invalid(msg: str) -> InvalidInput:
    return InvalidInput(error_message=msg)


def _pool_text(pool: AllocationPool) -> str:
    return f"{pool.start}-{pool.end}"


def host_bounds(net: IpNetwork) -> tuple[int, int]:
    """First and last address a pool may hold: the network address (and the IPv4 broadcast) excluded."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def default_pools(net: IpNetwork, gateway_ip: str | None) -> list[AllocationPool]:
    """The whole host range minus the gateway (192.168.199.0/24, gateway .1 -> .2-.254)."""
    first, last = host_bounds(net)
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    ranges = [(first, last)] if first <= last else []
    if gateway_ip is not None:
        gw = int(ipaddress.ip_address(gateway_ip))
        split: list[tuple[int, int]] = []
        for start, end in ranges:
            if start <= gw <= end:
                split += [r for r in ((start, gw - 1), (gw + 1, end)) if r[0] <= r[1]]
            else:
                split.append((start, end))
        ranges = split
    return [AllocationPool(str(make(s)), str(make(e))) for s, e in ranges]


def _check_version(name: str, value: str, version: int) -> None:
    if ipaddress.ip_address(value).version != version:
        raise _invalid(f"{name} '{value}' does not match the ip_version '{version}'")


def check_gateway(net: IpNetwork, gateway_ip: str | None) -> None:
    """A gateway may lie outside the CIDR (on-link); inside it must not be the network or broadcast address."""
    if gateway_ip is None:
        return
    _check_version("gateway_ip", gateway_ip, net.version)
    gw = ipaddress.ip_address(gateway_ip)
    if gw in net and net.prefixlen < net.max_prefixlen - 1:
        if gw == net.network_address or (net.version == 4 and gw == net.broadcast_address):
            raise _invalid("Gateway is not valid on subnet")


def check_pools(net: IpNetwork, pools: Sequence[AllocationPool], gateway_ip: str | None) -> None:
    first, last = host_bounds(net)
    for pool in pools:
        if ipaddress.ip_address(pool.start).version != net.version or \
                ipaddress.ip_address(pool.end).version != net.version:
            raise InvalidAllocationPool(pool=_pool_text(pool))
        start, end = pool_ranges([pool])[0]
        if start > end:
            raise InvalidAllocationPool(pool=_pool_text(pool))
        if start < first or end > last:
            raise OutOfBoundsAllocationPool(pool=_pool_text(pool), subnet_cidr=str(net))
    for i, j in iter_pool_overlaps(pool_ranges(pools)):
        raise OverlappingAllocationPools(pool_1=_pool_text(pools[i]), pool_2=_pool_text(pools[j]),
                                         subnet_cidr=str(net))
    if gateway_ip is not None:
        for pool in pools:
            if gateway_ip in pool:
                raise GatewayConflictWithAllocationPools(ip_address=gateway_ip, pool=_pool_text(pool))


def check_subnet(subnet: Subnet) -> None:
    """Every rule a stored subnet must satisfy (create and update)."""
    net = subnet.network
    if net.version == 4 and subnet.enable_dhcp and net.prefixlen > 30:
        raise _invalid("Subnet has a prefix length that is incompatible with DHCP service enabled")
    check_gateway(net, subnet.gateway_ip)
    check_pools(net, subnet.allocation_pools, subnet.gateway_ip)
    if len(subnet.dns_nameservers) > MAX_DNS_NAMESERVERS:
        raise DNSNameServersExhausted(subnet_id=subnet.id, quota=MAX_DNS_NAMESERVERS)
    if len(subnet.host_routes) > MAX_HOST_ROUTES:
        raise HostRoutesExhausted(subnet_id=subnet.id, quota=MAX_HOST_ROUTES)
    for ns in subnet.dns_nameservers:
        _check_version("dns_nameserver", ns, net.version)
    for route in subnet.host_routes:
        _check_version("nexthop", route.nexthop, net.version)
        _check_version("destination", str(ipaddress.ip_network(route.destination).network_address), net.version)


def normalise_cidr(cidr: str, ip_version: int) -> IpNetwork:
    """`172.16.1.101/24` -> 172.16.1.0/24; the version must match; /0 is refused."""
    net = ipaddress.ip_interface(cidr).network
    if net.version != ip_version:
        raise _invalid(f"cidr '{cidr}' does not match the ip_version '{ip_version}'")
    if net.prefixlen == 0:
        raise _invalid("0 is not allowed as CIDR prefix length")
    return net


def check_no_overlap(net: IpNetwork, network_id: str, siblings: Sequence[Subnet]) -> None:
    for other in siblings:
        if other.ip_version == net.version and other.network.overlaps(net):
            raise _invalid(f"Requested subnet with cidr: {net} for network: {network_id} overlaps with "
                           f"another subnet")


def build_subnet(subnet_id: str, attrs: Mapping[str, Any], siblings: Sequence[Subnet]) -> Subnet:
    """A new subnet from parsed create attributes (validation.parse_create) and the network's other subnets."""
    net = normalise_cidr(attrs["cidr"], attrs["ip_version"])
    check_no_overlap(net, attrs["network_id"], siblings)
    if "gateway_ip" in attrs:
        gateway = attrs["gateway_ip"]
    else:
        gateway = str(net.network_address + 1) if net.num_addresses > 2 else None
    pools = [AllocationPool(p["start"], p["end"]) for p in attrs.get("allocation_pools") or []]
    if gateway is not None:
        check_gateway(net, gateway)
    if not pools:
        pools = default_pools(net, gateway if gateway and ipaddress.ip_address(gateway) in net else None)
    subnet = Subnet(
        id=subnet_id, network_id=attrs["network_id"], cidr=str(net), name=attrs.get("name", ""),
        project_id=attrs["project_id"], ip_version=attrs["ip_version"], gateway_ip=gateway,
        allocation_pools=pools, dns_nameservers=list(attrs.get("dns_nameservers") or []),
        host_routes=[HostRoute(r["destination"], r["nexthop"]) for r in attrs.get("host_routes") or []],
        enable_dhcp=attrs.get("enable_dhcp", True), description=attrs.get("description", ""),
    )
    check_subnet(subnet)
    return subnet


def updated_subnet(subnet: Subnet, changes: Mapping[str, Any]) -> Subnet:
    """`subnet` with parsed update attributes applied, checked again (allocated addresses may leave the pools)."""
    fields: dict[str, Any] = {}
    for key in ("name", "description", "gateway_ip", "dns_nameservers", "enable_dhcp"):
        if key in changes:
            fields[key] = changes[key]
    if "allocation_pools" in changes:
        fields["allocation_pools"] = [AllocationPool(p["start"], p["end"]) for p in changes["allocation_pools"]]
    if "host_routes" in changes:
        fields["host_routes"] = [HostRoute(r["destination"], r["nexthop"]) for r in changes["host_routes"]]
    new = replace(subnet, **fields)
    check_subnet(new)
    return new
