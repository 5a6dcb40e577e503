# Automatic port creates stay right when another process changes the network under them (PostgreSQL caches a
# per-network plan for its one-statement create; every case here runs on SQLite too, where no plan exists).
from __future__ import annotations

import ipaddress

import pytest
from registry_support import expect, open_registry

from provnet.registry.sql import SqlRegistry


@pytest.fixture
def reg(db_url: str):
    """Neutron's rules with exact port counts and addresses: [metadata] mode = router keeps network mode's metadata
    port out of them (it is tested in test_registry_metadata_port.py)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


@pytest.fixture
def pair(db_url: str):
    """Two registries on one store: `a` creates ports (and caches), `b` is another process changing things."""
    a, b = open_registry(db_url, metadata_mode="router"), open_registry(db_url, metadata_mode="router")
    yield a, b
    a.close()
    b.close()


def _network(reg: SqlRegistry, cidr: str = "10.20.0.0/24", **pools) -> tuple[str, str]:
    net = reg.create_network({"name": "n"})
    subnet = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": cidr, **pools})
    return net.id, subnet.id


def _auto(reg: SqlRegistry, net_id: str):
    return reg.create_port({"network_id": net_id})


def test_pools_changed_elsewhere_are_used_by_the_next_create(pair) -> None:
    a, b = pair
    net_id, subnet_id = _network(a, allocation_pools=[{"start": "10.20.0.10", "end": "10.20.0.20"}])
    assert 10 <= int(ipaddress.ip_address(_auto(a, net_id).fixed_ips[0].ip_address)) % 256 <= 20
    b.update_subnet(subnet_id, {"allocation_pools": [{"start": "10.20.0.200", "end": "10.20.0.204"}]})
    got = sorted(int(ipaddress.ip_address(_auto(a, net_id).fixed_ips[0].ip_address)) % 256 for _ in range(5))
    assert got == [200, 201, 202, 203, 204]
    expect("IpAddressGenerationFailure", 409, None, _auto, a, net_id)  # the new pool is full; nothing written
    assert len(b.list_ports()) == 6


def test_network_port_security_changed_elsewhere_is_the_new_default(pair) -> None:
    a, b = pair
    net_id, _ = _network(a)
    assert _auto(a, net_id).port_security_enabled is True
    b.update_network(net_id, {"port_security_enabled": False})
    port = _auto(a, net_id)
    assert port.port_security_enabled is False and b.get_port(port.id).port_security_enabled is False


def test_subnet_replaced_elsewhere_gives_addresses_from_the_new_one(pair) -> None:
    a, b = pair
    net_id, old_subnet = _network(a)
    a.delete_port(_auto(a, net_id).id)  # `a` has now planned for the old subnet
    b.delete_subnet(old_subnet)
    new_subnet = b.create_subnet({"network_id": net_id, "ip_version": 4, "cidr": "10.30.0.0/24"})
    port = _auto(a, net_id)
    assert port.fixed_ips[0].subnet_id == new_subnet.id
    assert ipaddress.ip_address(port.fixed_ips[0].ip_address) in ipaddress.ip_network("10.30.0.0/24")
    assert b.get_port(port.id).fixed_ips == port.fixed_ips


def test_an_ipv4_subnet_added_after_an_ipv6_one_is_preferred(pair) -> None:
    a, b = pair
    net = a.create_network({"name": "dual"})
    a.create_subnet({"network_id": net.id, "ip_version": 6, "cidr": "2001:db8:1::/64"})
    assert ipaddress.ip_address(_auto(a, net.id).fixed_ips[0].ip_address).version == 6
    v4 = b.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.40.0.0/24"})
    assert _auto(a, net.id).fixed_ips[0].subnet_id == v4.id


def test_network_deleted_elsewhere_is_not_found_and_nothing_is_written(pair) -> None:
    a, b = pair
    net_id, _ = _network(a)
    a.delete_port(_auto(a, net_id).id)
    rev = b.revision()
    b.delete_network(net_id)
    expect("NetworkNotFound", 404, f"Network {net_id} could not be found.", _auto, a, net_id)
    assert b.list_ports() == [] and b.revision() == rev + 1  # only the delete moved it
