# The one function that says which routes a VM on a subnet has; DHCP options 121/249 and network_data.json use it.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from provnet.model.resources import Subnet

METADATA_CIDR = ipaddress.IPv4Network("169.254.169.254/32")
DEFAULT_CIDR = ipaddress.IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class Route:
    destination: ipaddress.IPv4Network
    nexthop: ipaddress.IPv4Address

    @property
    def is_default(self) -> bool:
        return self.destination.prefixlen == 0


def port_routes(subnet: Subnet, metadata_ip: str | None = None) -> list[Route]:
    """Routes a VM on `subnet` must end up with, in the order they are handed out.

    - `169.254.169.254/32` via `metadata_ip` when the subnet is in network mode (the network's metadata port's
      address on it, `metadata_mode.metadata_hops`), else via the subnet's gateway_ip (the router interface that
      hosts the metadata proxy) unless the default route already goes there; either way not when a host route of
      the subnet names a next hop for it (the operator's own route wins);
    - every host route of the subnet other than the default one, in the subnet's order;
    - the default route last: the subnet's `0.0.0.0/0` host route if it has one (the seed's external router),
      else the gateway_ip. RFC 3442 clients ignore option 3 once they get 121, so the default must be in the list.

    An IPv6 subnet, or a subnet with neither gateway nor default host route, yields only what it can.
    """
    if subnet.ip_version != 4:
        return []
    gateway = ipaddress.IPv4Address(subnet.gateway_ip) if subnet.gateway_ip else None
    default_hop: ipaddress.IPv4Address | None = gateway
    explicit: list[Route] = []
    for hr in subnet.host_routes:
        dest = ipaddress.IPv4Network(hr.destination, strict=False)
        hop = ipaddress.IPv4Address(hr.nexthop)
        if dest.prefixlen == 0:
            default_hop = hop
        elif all(r.destination != dest for r in explicit):
            explicit.append(Route(dest, hop))
    routes: list[Route] = []
    has_metadata_route = any(r.destination == METADATA_CIDR for r in explicit)
    if metadata_ip is not None and not has_metadata_route:
        routes.append(Route(METADATA_CIDR, ipaddress.IPv4Address(metadata_ip)))
    elif gateway is not None and default_hop != gateway and not has_metadata_route:
        routes.append(Route(METADATA_CIDR, gateway))
    routes.extend(explicit)
    if default_hop is not None:
        routes.append(Route(DEFAULT_CIDR, default_hop))
    return routes


def default_gateway(subnet: Subnet) -> ipaddress.IPv4Address | None:
    """The default route's next hop (what DHCP option 3 carries; network mode does not change it)."""
    for r in port_routes(subnet):
        if r.is_default:
            return r.nexthop
    return None
