# [metadata] mode's pure rules: which subnets are in network mode, their next hop, the routes, the option's values.
from __future__ import annotations

import pytest

from provnet.config import ConfigError, load_config
from provnet.model.metadata_mode import check_mode, metadata_hops, metadata_port, network_mode_applies
from provnet.model.resources import METADATA_PORT_OWNER, FixedIP, HostRoute, Port, Subnet, metadata_device_id
from provnet.model.routes import default_gateway, port_routes

SEED = Subnet(id="s1", network_id="n1", cidr="172.16.1.0/24", gateway_ip="172.16.1.2",
              host_routes=[HostRoute("0.0.0.0/0", "172.16.1.1")])
V6 = Subnet(id="s6", network_id="n1", cidr="fd00::/64", ip_version=6, gateway_ip="fd00::1")


def md_port(ip: str = "172.16.1.102", network_id: str = "n1") -> Port:
    return Port(id="md", network_id=network_id, mac_address="fa:16:3e:00:00:01", device_owner=METADATA_PORT_OWNER,
                device_id=metadata_device_id(network_id), fixed_ips=[FixedIP("s1", ip)])


def router_port(ip: str = "172.16.1.2") -> Port:
    return Port(id="rp", network_id="n1", mac_address="fa:16:3e:00:00:02", device_owner="network:router_interface",
                device_id="r1", fixed_ips=[FixedIP("s1", ip)])


def text(routes) -> list[str]:
    return [f"{r.destination} via {r.nexthop}" for r in routes]


def test_network_mode_routes_metadata_via_the_metadata_port_and_keeps_the_default():
    assert text(port_routes(SEED, "172.16.1.102")) == ["169.254.169.254/32 via 172.16.1.102",
                                                       "0.0.0.0/0 via 172.16.1.1"]
    # a subnet whose default route is its gateway still needs the metadata route in network mode
    plain = Subnet(id="s", network_id="n", cidr="10.0.0.0/24", gateway_ip="10.0.0.1")
    assert text(port_routes(plain, "10.0.0.2")) == ["169.254.169.254/32 via 10.0.0.2", "0.0.0.0/0 via 10.0.0.1"]
    assert text(port_routes(plain)) == ["0.0.0.0/0 via 10.0.0.1"]
    assert str(default_gateway(SEED)) == "172.16.1.1"


def test_an_operators_own_metadata_host_route_wins_in_network_mode_too():
    own = Subnet(id="s", network_id="n", cidr="172.16.1.0/24", gateway_ip="172.16.1.2",
                 host_routes=[HostRoute("169.254.169.254/32", "172.16.1.9"), HostRoute("0.0.0.0/0", "172.16.1.1")])
    assert text(port_routes(own, "172.16.1.102")) == ["169.254.169.254/32 via 172.16.1.9", "0.0.0.0/0 via 172.16.1.1"]


@pytest.mark.parametrize(("mode", "ports", "expected"), [
    ("auto", [md_port()], {"s1": "172.16.1.102"}),  # no router: network mode
    ("auto", [md_port(), router_port()], {}),  # a router interface holds the gateway: router mode
    ("auto", [md_port(), router_port("172.16.1.3")], {"s1": "172.16.1.102"}),  # an interface, not on the gateway
    ("network", [md_port(), router_port()], {"s1": "172.16.1.102"}),  # network mode whatever the routers
    ("router", [md_port()], {}),  # router mode never routes to a metadata port
    ("auto", [], {}),  # network mode, but no port to route to (doctor: metadata.port-missing)
    ("auto", [md_port(network_id="other")], {}),  # another network's port is not this one's
])
def test_metadata_hops_follow_the_mode_and_the_service_ports(mode, ports, expected):
    assert metadata_hops(mode, [SEED, V6], ports) == expected


def test_the_metadata_port_is_provnets_own_before_a_foreign_distributed_port():
    ovn = Port(id="ovn", network_id="n1", mac_address="fa:16:3e:00:00:09", device_owner=METADATA_PORT_OWNER,
               device_id="ovnmeta-n1", fixed_ips=[FixedIP("s1", "172.16.1.50")])
    assert metadata_port([ovn, md_port()], "n1").id == "md"
    assert metadata_port([ovn], "n1").id == "ovn"  # companion mode on an OVN cloud: its metadata port
    assert metadata_port([router_port()], "n1") is None


def test_a_subnet_without_gateway_is_in_network_mode_under_auto():
    isolated = Subnet(id="s", network_id="n", cidr="10.0.0.0/24", gateway_ip=None)
    assert network_mode_applies("auto", isolated, [router_port()])
    assert network_mode_applies("auto", V6, [])
    assert not network_mode_applies("router", isolated, [])


@pytest.mark.parametrize("value", ["router", "network", "auto", " Network ", "AUTO"])
def test_mode_values(value):
    assert check_mode(value) == value.strip().lower()


@pytest.mark.parametrize("value", ["", "routed", "both", "network,router", "1", "none"])
def test_a_bad_mode_is_refused_with_the_three_values(value):
    with pytest.raises(ValueError, match="must be router, network or auto"):
        check_mode(value)


def test_mode_in_the_configuration_file(tmp_path):
    f = tmp_path / "provnet.conf"
    assert load_config(files=[], env={}).get("metadata.mode") == "auto"
    f.write_text("[metadata]\nmode = network\n")
    assert load_config(files=[f], env={}).get("metadata.mode") == "network"
    f.write_text("[metadata]\nmode = routers\n")
    with pytest.raises(ConfigError) as exc:
        load_config(files=[f], env={})
    assert str(exc.value) == (f"[metadata] mode in {f}:2 must be router, network or auto, got 'routers'")
