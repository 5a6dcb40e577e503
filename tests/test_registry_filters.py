# List filters on SQLite and PostgreSQL: repeated key = OR, keys AND, converted values, fixed_ips, unknown = 400.
from __future__ import annotations

import pytest
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet


@pytest.fixture
def reg(db_url: str):
    """Neutron's rules with exact port counts and addresses: [metadata] mode = router keeps network mode's metadata
    port out of them (it is tested in test_registry_metadata_port.py)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


@pytest.fixture
def world(db_url: str):
    reg = open_registry(db_url, metadata_mode="router")  # exact port lists: no metadata port
    phy = reg.create_network(SEED_NETWORK)
    private = reg.create_network({"name": "private", "shared": True, "tenant_id": "p2"})
    subnet = reg.create_subnet(seed_subnet(phy.id))
    other = reg.create_subnet({"network_id": private.id, "ip_version": 4, "cidr": "10.0.0.0/24"})
    ports = {
        "a": reg.create_port({"network_id": phy.id, "name": "a", "device_id": "vm-a", "device_owner": "compute:nova",
                              "fixed_ips": [{"ip_address": "172.16.1.103"}]}),
        "b": reg.create_port({"network_id": phy.id, "name": "b", "device_id": "vm-b", "admin_state_up": False,
                              "fixed_ips": [{"ip_address": "172.16.1.104"}]}),
        "c": reg.create_port({"network_id": private.id, "name": "c", "device_id": "vm-a",
                              "fixed_ips": [{"ip_address": "10.0.0.104"}]}),
    }
    yield reg, phy, private, subnet, other, ports
    reg.close()


def names(items) -> list[str]:
    return sorted(i.name for i in items)


def test_network_filters(world) -> None:
    reg, phy, private, *_ = world
    assert names(reg.list_networks({"name": ["phy_net"]})) == ["phy_net"]
    assert names(reg.list_networks({"name": ["phy_net", "private"]})) == ["phy_net", "private"]
    assert names(reg.list_networks({"router:external": ["True"]})) == ["phy_net"]
    assert names(reg.list_networks({"shared": ["true"], "router:external": ["False"]})) == ["private"]
    assert names(reg.list_networks({"shared": ["true"], "name": ["phy_net"]})) == []
    assert names(reg.list_networks({"tenant_id": ["p2"]})) == ["private"]
    assert names(reg.list_networks({"project_id": ["fake_project_id"]})) == ["phy_net"]
    assert names(reg.list_networks({"provider:network_type": ["flat"],
                                    "provider:physical_network": ["physnet1"]})) == ["phy_net"]
    assert names(reg.list_networks({"id": [private.id]})) == ["private"]
    assert names(reg.list_networks({"subnets": [world[3].id]})) == ["phy_net"]
    assert names(reg.list_networks({})) == ["phy_net", "private"]


def test_port_filters(world) -> None:
    reg, phy, private, subnet, other, ports = world
    assert names(reg.list_ports({"device_id": ["vm-a"]})) == ["a", "c"]
    assert names(reg.list_ports({"device_id": ["vm-a"], "network_id": [phy.id]})) == ["a"]
    assert names(reg.list_ports({"admin_state_up": ["False"]})) == ["b"]
    assert names(reg.list_ports({"device_owner": ["compute:nova", ""]})) == ["a", "b", "c"]
    assert names(reg.list_ports({"mac_address": [ports["b"].mac_address.upper()]})) == ["b"]
    assert names(reg.list_ports({"fixed_ips": ["ip_address=172.16.1.103"]})) == ["a"]
    assert names(reg.list_ports({"fixed_ips": ["ip_address=172.16.1.103", "ip_address=10.0.0.104"]})) == ["a", "c"]
    assert names(reg.list_ports({"fixed_ips": [f"subnet_id={subnet.id}"]})) == ["a", "b"]
    assert names(reg.list_ports({"fixed_ips": [f"subnet_id={other.id}", "ip_address=172.16.1.103"]})) == []
    assert names(reg.list_ports({"fixed_ips": ["ip_address=172.16.1.104"], "network_id": [phy.id]})) == ["b"]
    assert names(reg.list_ports({"binding:vif_type": ["unbound"], "status": ["DOWN"]})) == ["a", "b", "c"]


def test_other_resources(world) -> None:
    reg, phy, private, subnet, other, _ = world
    assert [s.id for s in reg.list_subnets({"network_id": [phy.id]})] == [subnet.id]
    assert [s.id for s in reg.list_subnets({"enable_dhcp": ["True"]})] == [other.id]
    assert [s.id for s in reg.list_subnets({"ip_version": ["4"], "cidr": ["10.0.0.0/24"]})] == [other.id]


@pytest.mark.parametrize(("method", "filters", "message"), [
    ("list_networks", {"colour": ["red"]}, "['colour'] is invalid attribute for filtering"),
    ("list_ports", {"fixed_ips": ["mac=1"]}, "Invalid input for fixed_ips. Reason: 'mac=1' is not of the form "
                                            "ip_address=IP or subnet_id=ID."),
    ("list_networks", {"shared": ["maybe"]}, "Invalid input for shared. Reason: 'maybe' cannot be converted to "
                                            "boolean."),
    ("list_subnets", {"ip_version": ["four"]}, "Invalid input for ip_version. Reason: 'four' is not an integer."),
    ("list_routers", {"b": ["1"], "a": ["2"]}, "['a', 'b'] is invalid attribute for filtering"),
    ("list_instances", {"fixed_ips": ["x"]}, "['fixed_ips'] is invalid attribute for filtering"),
    ("list_agents", {"name": ["x"]}, "['name'] is invalid attribute for filtering"),
])
def test_bad_filters_are_400(world, method: str, filters: dict, message: str) -> None:
    reg = world[0]
    expect("HTTPBadRequest", 400, message, getattr(reg, method), filters)
