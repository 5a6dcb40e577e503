# The seed's `neutron net-create` / `subnet-create` bodies sent by the real python-neutronclient library (noauth).
from __future__ import annotations

import pytest
from api_server import running_api
from conftest import need

try:
    from neutronclient.common import exceptions as nc_exc
    from neutronclient.v2_0 import client as client_mod
except ImportError:  # reported by the fixture (a failure under CI=true)
    client_mod = None


@pytest.fixture
def neutron(db_url: str):
    need(client_mod is not None, "needs python-neutronclient (pip install -e '.[test]')")
    with running_api(db_url) as (client, registry):
        yield client_mod.Client(auth_strategy="noauth", endpoint_url=client.url), registry


def test_seed_bodies_through_python_neutronclient(neutron) -> None:
    nc, registry = neutron
    # `neutron net-create phy_net -- --router:external=True --provider:network_type flat
    #  --provider:physical_network physnet1`: the options after `--` pass through as strings
    net = nc.create_network({"network": {"name": "phy_net", "admin_state_up": True, "router:external": "True",
                                         "provider:network_type": "flat",
                                         "provider:physical_network": "physnet1"}})["network"]
    assert net["router:external"] is True and net["provider:network_type"] == "flat"
    # the old CLI's name lookup before subnet-create
    assert nc.list_networks(name="phy_net", fields="id") == {"networks": [{"id": net["id"]}]}
    # `neutron subnet-create --allocation-pool start=172.16.1.102,end=172.16.1.126 --gateway 172.16.1.2 phy_net
    #  172.16.1.101/24 --enable_dhcp=False --name=phy_subnet_without_dhcp` (reference §1: note "False")
    subnet = nc.create_subnet({"subnet": {
        "network_id": net["id"], "ip_version": 4, "cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2",
        "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}], "enable_dhcp": "False",
        "name": "phy_subnet_without_dhcp"}})["subnet"]
    assert subnet["cidr"] == "172.16.1.0/24" and subnet["enable_dhcp"] is False
    assert subnet["allocation_pools"] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    port = nc.create_port({"port": {"network_id": net["id"], "device_id": "vm-1",
                                    "fixed_ips": [{"ip_address": "172.16.1.105"}]}})["port"]
    found = nc.list_ports(fixed_ips="ip_address=172.16.1.105")["ports"]
    assert [p["id"] for p in found] == [port["id"]]
    router = nc.create_router({"router": {"name": "r1"}})["router"]
    nc.add_interface_router(router["id"], {"subnet_id": subnet["id"]})
    assert registry.router_network_ids(router["id"]) == [net["id"]]
    nc.remove_interface_router(router["id"], {"subnet_id": subnet["id"]})
    nc.update_port(port["id"], {"port": {"name": "web"}})
    assert nc.show_port(port["id"])["port"]["name"] == "web"
    nc.delete_port(port["id"])
    assert nc.list_ports(device_id="vm-1")["ports"] == []


def test_python_neutronclient_sees_neutron_errors(neutron) -> None:
    nc, registry = neutron
    nc.create_network({"network": {"name": "a", "provider:network_type": "flat",
                                   "provider:physical_network": "physnet1"}})
    with pytest.raises(nc_exc.Conflict) as info:
        nc.create_network({"network": {"name": "b", "provider:network_type": "flat",
                                       "provider:physical_network": "physnet1"}})
    assert info.value.status_code == 409
    assert "Physical network physnet1 is in use" in str(info.value)
    with pytest.raises(nc_exc.NetworkNotFoundClient):
        nc.show_network("nope")
    with pytest.raises(nc_exc.BadRequest) as bad:
        nc.create_network({"network": {"name": "c", "colour": "red"}})
    assert "Unrecognized attribute(s) 'colour'" in str(bad.value)
    assert [n.name for n in registry.list_networks()] == ["a"]
