# [metadata] mode: whether a subnet's VMs reach 169.254.169.254 via a router interface or the metadata port.
"""The rules of network mode, as pure functions over a network's subnets and its service ports.

- `router`: metadata is served by routers only (the `qrouter-` namespace behind the subnet's gateway).
- `network`: every network with a subnet has a metadata port (device_owner `network:distributed`, one fixed IP
  from each IPv4 subnet's pool) and its VMs route 169.254.169.254/32 via that IP, routers or not.
- `auto` (the default): network mode applies to an IPv4 subnet whose gateway_ip no router interface holds; a
  subnet with such an interface is in router mode. The registry makes the port when a subnet arrives (at that
  instant no router can hold the new subnet's gateway) and keeps it while the network has subnets, so that a
  router interface added later changes only the route *new* leases get: VMs still holding a lease with the
  metadata port's route keep reaching it until they renew.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from provnet.model.resources import METADATA_PORT_OWNER, Port, Subnet, metadata_device_id

MODES = ("router", "network", "auto")
DEFAULT_MODE = "auto"


def check_mode(value: object) -> str:
    """`value` as a mode; ValueError naming the three for anything else."""
    text = str(value).strip().lower()
    if text not in MODES:
        raise ValueError(f"must be router, network or auto, got {value!r}")
    return text


def metadata_port(ports: Iterable[Port], network_id: str) -> Port | None:
    """The network's metadata port among `ports`: provnet's own (its device id), else any `network:distributed`
    port on the network (OVN's, when provnet reads a cloud's Neutron)."""
    candidates = [p for p in ports if p.network_id == network_id and p.device_owner == METADATA_PORT_OWNER]
    own = [p for p in candidates if p.device_id == metadata_device_id(network_id)]
    found = own or candidates
    return found[0] if found else None


def router_holds_gateway(subnet: Subnet, ports: Iterable[Port]) -> bool:
    """A router interface port has the subnet's gateway_ip (the seed's router: the VMs' path to its proxy)."""
    if not subnet.gateway_ip:
        return False
    return any(p.is_router_interface and any(f.subnet_id == subnet.id and f.ip_address == subnet.gateway_ip
                                             for f in p.fixed_ips) for p in ports)


def network_mode_applies(mode: str, subnet: Subnet, ports: Iterable[Port]) -> bool:
    """Network mode is the mode of `subnet` (IPv4 or IPv6) under `mode`, given the network's service ports."""
    if mode == "network":
        return True
    if mode == "auto":
        return not router_holds_gateway(subnet, ports)
    return False


def port_address(port: Port, subnet: Subnet) -> str | None:
    """The port's IPv4 address on `subnet` (the first, if a hand-made port has several)."""
    if subnet.ip_version != 4:
        return None
    return next((f.ip_address for f in port.fixed_ips if f.subnet_id == subnet.id), None)


def metadata_hops(mode: str, subnets: Sequence[Subnet], ports: Sequence[Port]) -> dict[str, str]:
    """For each IPv4 subnet in network mode whose network has a metadata port with an address on it: that address
    (the next hop of 169.254.169.254/32 for the subnet's VMs). A subnet not listed routes metadata the router way."""
    out: dict[str, str] = {}
    for subnet in subnets:
        if subnet.ip_version != 4 or not network_mode_applies(mode, subnet, ports):
            continue
        port = metadata_port(ports, subnet.network_id)
        ip = port_address(port, subnet) if port is not None else None
        if ip is not None:
            out[subnet.id] = ip
    return out


def subnet_mode(mode: str, subnet: Subnet, ports: Sequence[Port]) -> str:
    """"network" or "router": what `subnet` is in (for doctor and logs)."""
    return "network" if network_mode_applies(mode, subnet, ports) else "router"


def address_lookups(subnets: Iterable[Subnet]) -> list[str]:
    """`fixed_ips` list filters (`ip_address=X`) finding the ports that hold the subnets' gateways."""
    return [f"ip_address={ip}" for ip in sorted({s.gateway_ip for s in subnets if s.gateway_ip})]
