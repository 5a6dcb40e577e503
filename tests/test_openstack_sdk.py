# The seed's network, subnet and ports through the real openstacksdk (auth_type none) against our API.
from __future__ import annotations

import pytest
from api_server import running_api
from conftest import need

try:
    import openstack
    from openstack import exceptions as os_exc
except ImportError:  # reported by the fixture (a failure under CI=true)
    openstack = None


@pytest.fixture
def sdk(db_url: str):
    need(openstack is not None, "needs openstacksdk (pip install -e '.[test]')")
    with running_api(db_url) as (client, registry):
        conn = openstack.connect(auth_type="none", endpoint=client.url, load_yaml_config=False,
                                 load_envvars=False)
        try:
            yield conn, registry
        finally:
            conn.close()


def test_seed_through_openstacksdk(sdk) -> None:
    conn, registry = sdk
    net = conn.network.create_network(name="phy_net", is_router_external=True, provider_network_type="flat",
                                      provider_physical_network="physnet1")
    assert net.is_router_external is True and net.mtu == 1500 and net.provider_physical_network == "physnet1"
    assert conn.network.find_network("phy_net").id == net.id
    subnet = conn.network.create_subnet(
        network_id=net.id, name="phy_subnet_without_dhcp", ip_version=4, cidr="172.16.1.101/24",
        gateway_ip="172.16.1.2", allocation_pools=[{"start": "172.16.1.102", "end": "172.16.1.126"}],
        is_dhcp_enabled=False)
    assert subnet.cidr == "172.16.1.0/24" and subnet.is_dhcp_enabled is False
    port = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": "172.16.1.120"}],
                                    device_id="vm-9", binding_host_id="compute1")
    assert port.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "172.16.1.120"}]
    assert port.binding_host_id == "compute1"
    found = list(conn.network.ports(fixed_ips=["ip_address=172.16.1.120"], network_id=net.id))
    assert [p.id for p in found] == [port.id]
    port = conn.network.update_port(port, name="web")
    assert conn.network.get_port(port.id).name == "web"
    router = conn.network.create_router(name="r1")
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    assert registry.router_network_ids(router.id) == [net.id]
    assert {e.alias for e in conn.network.extensions()} >= {"external-net", "provider", "router", "agent"}
    registry.report_agent_state("compute1", "Open vSwitch agent", "provnet-agent", {})
    agents = list(conn.network.agents(host="compute1"))
    assert [a.agent_type for a in agents] == ["Open vSwitch agent"] and agents[0].is_alive
    conn.network.delete_port(port)
    assert conn.network.find_port(port.id) is None


def test_openstacksdk_gets_neutron_errors(sdk) -> None:
    conn, registry = sdk
    net = conn.network.create_network(name="n")
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.2.0.0/29")  # .2-.6: five addresses
    for _ in range(5):
        conn.network.create_port(network_id=net.id)
    with pytest.raises(os_exc.ConflictException) as info:
        conn.network.create_port(network_id=net.id)
    assert f"No more IP addresses available on network {net.id}." in str(info.value)
    with pytest.raises(os_exc.BadRequestException) as bad:
        conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.3.0.0/24",
                                   allocation_pools=[{"start": "10.3.0.10", "end": "10.4.0.1"}])
    assert "spans beyond the subnet cidr" in str(bad.value)
    with pytest.raises(os_exc.NotFoundException):
        conn.network.get_network("does-not-exist")
    assert len(registry.list_ports({"network_id": [net.id]})) == 5
