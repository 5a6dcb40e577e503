# SqlRegistry networks and subnets on SQLite and PostgreSQL: the seed's objects, provider rules, in-use deletes.
from __future__ import annotations

import pytest
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet

from provnet.registry.sql import SqlRegistry


@pytest.fixture
def reg(db_url: str):
    """Neutron's rules with exact port counts and addresses: [metadata] mode = router keeps network mode's metadata
    port out of them (it is tested in test_registry_metadata_port.py)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


def test_seed_network_and_subnet(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    api = net.to_api()
    assert (api["router:external"], api["provider:network_type"], api["provider:physical_network"]) == \
        (True, "flat", "physnet1")
    assert api["mtu"] == 1500 and api["status"] == "ACTIVE" and api["subnets"] == []
    subnet = reg.create_subnet(seed_subnet(net.id))
    assert subnet.cidr == "172.16.1.0/24" and subnet.gateway_ip == "172.16.1.2"
    assert [p.to_api() for p in subnet.allocation_pools] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    assert subnet.enable_dhcp is False and subnet.name == "phy_subnet_without_dhcp"
    assert reg.get_network(net.id).subnets == [subnet.id]
    assert reg.get_subnet(subnet.id) == subnet


def test_one_flat_network_per_physnet_and_vlan_ids_unique(reg: SqlRegistry) -> None:
    reg.create_network(SEED_NETWORK)
    expect("FlatNetworkInUse", 409, "Unable to create the flat network. Physical network physnet1 is in use.",
           reg.create_network, {**SEED_NETWORK, "name": "again"})
    vlan = {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": "100"}
    assert reg.create_network(vlan).segmentation_id == 100
    expect("VlanIdInUse", 409, "Unable to create the network. The VLAN 100 on physical network physnet1 is in use.",
           reg.create_network, vlan)
    assert reg.create_network({**vlan, "provider:segmentation_id": 101}).mtu == 1500
    assert len(reg.list_networks()) == 3


def test_config_limits_provider_networks(db_url: str) -> None:
    reg = open_registry(db_url, flat_networks=("physnet1",), network_vlan_ranges=("physnet2:10:11",))
    try:
        expect("InvalidInput", 400, "Invalid input for operation: physical_network 'physnet9' unknown for flat "
                                    "provider network.", reg.create_network,
               {"provider:network_type": "flat", "provider:physical_network": "physnet9"})
        ids = [reg.create_network({"provider:network_type": "vlan", "provider:physical_network": "physnet2"})
               .segmentation_id for _ in range(2)]
        assert ids == [10, 11]
        expect("NoNetworkAvailable", 503, None, reg.create_network,
               {"provider:network_type": "vlan", "provider:physical_network": "physnet2"})
    finally:
        reg.close()


def test_tunnel_networks_mtu(reg: SqlRegistry) -> None:
    vx = reg.create_network({"provider:network_type": "vxlan"})
    assert (vx.segmentation_id, vx.mtu) == (1, 1450)
    assert reg.create_network({"provider:network_type": "gre", "provider:segmentation_id": 9}).mtu == 1458


def test_update_network(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    updated = reg.update_network(net.id, {"name": "renamed", "shared": "True", "router:external": False})
    assert (updated.name, updated.shared, updated.router_external) == ("renamed", True, False)
    assert reg.update_network(net.id, {"provider:network_type": "flat"}).network_type == "flat"  # unchanged: ok
    expect("InvalidInput", 400, "Invalid input for operation: Plugin does not support updating provider "
                                "attributes.", reg.update_network, net.id, {"provider:physical_network": "x"})
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute mtu", reg.update_network, net.id, {"mtu": 9000})
    expect("NetworkNotFound", 404, "Network nope could not be found.", reg.update_network, "nope", {"name": "x"})


def test_delete_network_in_use(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    subnet = reg.create_subnet(seed_subnet(net.id))
    router = reg.create_router({"name": "r"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    dhcp = reg.create_port({"network_id": net.id, "device_owner": "network:dhcp"})
    vm = reg.create_port({"network_id": net.id, "device_id": "vm-1", "device_owner": "compute:nova"})
    expect("NetworkInUse", 409, f"Unable to complete operation on network {net.id}. There are one or more ports "
                                f"still in use on the network.", reg.delete_network, net.id)
    assert len(reg.list_ports()) == 3  # the refused delete removed nothing
    reg.delete_port(vm.id)
    reg.delete_network(net.id)  # router interface and DHCP ports go with it
    expect("NetworkNotFound", 404, None, reg.get_network, net.id)
    expect("SubnetNotFound", 404, None, reg.get_subnet, subnet.id)
    expect("PortNotFound", 404, None, reg.get_port, dhcp.id)
    assert reg.router_network_ids(router.id) == []


def test_subnet_create_errors_write_nothing(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    missing = "1b4a3f42-7b7d-4a0b-9b4b-3f0f5b0a6c11"
    expect("NetworkNotFound", 404, f"Network {missing} could not be found.", reg.create_subnet,
           {**seed_subnet(net.id), "network_id": missing})
    before = reg.revision()
    expect("GatewayConflictWithAllocationPools", 409, None, reg.create_subnet,
           {**seed_subnet(net.id), "gateway_ip": "172.16.1.110"})
    assert reg.list_subnets() == [] and reg.revision() == before
    reg.create_subnet(seed_subnet(net.id))
    expect("InvalidInput", 400, f"Invalid input for operation: Requested subnet with cidr: 172.16.1.0/25 for "
                                f"network: {net.id} overlaps with another subnet.", reg.create_subnet,
           {**seed_subnet(net.id), "cidr": "172.16.1.0/25", "allocation_pools": []})
    other = reg.create_network({"name": "other"})
    assert reg.create_subnet({**seed_subnet(other.id)}).cidr == "172.16.1.0/24"  # other network: no overlap


def test_subnet_update_and_delete_in_use(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    subnet = reg.create_subnet(seed_subnet(net.id))
    updated = reg.update_subnet(subnet.id, {"dns_nameservers": ["8.8.8.8"], "enable_dhcp": True,
                                            "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}],
                                            "allocation_pools": [{"start": "172.16.1.150", "end": "172.16.1.160"}]})
    assert reg.get_subnet(subnet.id) == updated and updated.enable_dhcp is True
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute cidr", reg.update_subnet, subnet.id,
           {"cidr": "10.0.0.0/24"})
    expect("DNSNameServersExhausted", 400, None, reg.update_subnet, subnet.id,
           {"dns_nameservers": [f"10.0.0.{i}" for i in range(6)]})
    assert reg.get_subnet(subnet.id).dns_nameservers == ["8.8.8.8"]
    port = reg.create_port({"network_id": net.id})
    expect("SubnetInUse", 409, f"Unable to complete operation on subnet {subnet.id}: One or more ports have an IP "
                               f"allocation from this subnet.", reg.delete_subnet, subnet.id)
    reg.delete_port(port.id)
    reg.delete_subnet(subnet.id)
    assert reg.get_network(net.id).subnets == []
