# port_routes: the routes a VM gets (DHCP 121/249 and network_data.json both use it).
from __future__ import annotations

import ipaddress

from provnet.model.resources import HostRoute, Subnet
from provnet.model.routes import default_gateway, port_routes


def subnet(gateway: str | None = "172.16.1.2", routes: list[tuple[str, str]] | None = None) -> Subnet:
    return Subnet(id="s", network_id="n", cidr="172.16.1.0/24", gateway_ip=gateway,
                  host_routes=[HostRoute(d, n) for d, n in (routes or [])])


def as_text(s: Subnet) -> list[str]:
    return [f"{r.destination} via {r.nexthop}" for r in port_routes(s)]


def test_seed_subnet_gets_metadata_via_gateway_and_default_via_external_router():
    seed = subnet(routes=[("0.0.0.0/0", "172.16.1.1")])
    assert as_text(seed) == ["169.254.169.254/32 via 172.16.1.2", "0.0.0.0/0 via 172.16.1.1"]
    assert default_gateway(seed) == ipaddress.IPv4Address("172.16.1.1")


def test_plain_subnet_default_via_gateway_needs_no_metadata_route():
    assert as_text(subnet()) == ["0.0.0.0/0 via 172.16.1.2"]
    assert default_gateway(subnet()) == ipaddress.IPv4Address("172.16.1.2")


def test_other_host_routes_kept_in_order_between_metadata_and_default():
    s = subnet(routes=[("10.0.0.0/8", "172.16.1.5"), ("0.0.0.0/0", "172.16.1.1"), ("192.168.0.0/16", "172.16.1.6")])
    assert as_text(s) == ["169.254.169.254/32 via 172.16.1.2", "10.0.0.0/8 via 172.16.1.5",
                          "192.168.0.0/16 via 172.16.1.6", "0.0.0.0/0 via 172.16.1.1"]


def test_explicit_metadata_host_route_wins_over_gateway():
    s = subnet(routes=[("169.254.169.254/32", "172.16.1.10"), ("0.0.0.0/0", "172.16.1.1")])
    assert as_text(s) == ["169.254.169.254/32 via 172.16.1.10", "0.0.0.0/0 via 172.16.1.1"]


def test_no_gateway_no_default_route():
    assert as_text(subnet(gateway=None)) == []
    assert default_gateway(subnet(gateway=None)) is None
    assert as_text(subnet(gateway=None, routes=[("0.0.0.0/0", "172.16.1.1")])) == ["0.0.0.0/0 via 172.16.1.1"]


def test_host_bits_in_destination_are_masked():
    s = subnet(routes=[("10.1.2.3/8", "172.16.1.5")])
    assert as_text(s)[0] == "10.0.0.0/8 via 172.16.1.5"


def test_ipv6_subnet_yields_nothing():
    s = Subnet(id="s", network_id="n", cidr="2001:db8::/64", ip_version=6, gateway_ip="2001:db8::1")
    assert port_routes(s) == []
