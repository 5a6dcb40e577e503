# SqlRegistry router interfaces on SQLite and PostgreSQL: the gateway port, adoption, removal, in-use rules.
from __future__ import annotations

import pytest
from registry_support import SEED_NETWORK, expect, seed_subnet

from provnet.registry.sql import SqlRegistry


@pytest.fixture
def seed(reg: SqlRegistry):
    net = reg.create_network(SEED_NETWORK)
    return net, reg.create_subnet(seed_subnet(net.id)), reg.create_router({"name": "router1"})


def test_interface_by_subnet_holds_the_gateway(reg: SqlRegistry, seed) -> None:
    net, subnet, router = seed
    body = reg.add_router_interface(router.id, subnet_id=subnet.id)
    assert set(body) == {"id", "tenant_id", "project_id", "port_id", "network_id", "subnet_id", "subnet_ids"}
    assert (body["id"], body["network_id"], body["subnet_id"], body["subnet_ids"]) == \
        (router.id, net.id, subnet.id, [subnet.id])
    port = reg.get_port(body["port_id"])
    assert port.ips() == ["172.16.1.2"] and port.device_owner == "network:router_interface"
    assert port.device_id == router.id and port.is_router_interface
    assert reg.router_network_ids(router.id) == [net.id]
    [found] = reg.find_ports_by_ip("172.16.1.2", reg.router_network_ids(router.id))
    assert found.id == port.id
    expect("BadRequest", 400, f"Bad router request: Router already has a port on subnet {subnet.id}.",
           reg.add_router_interface, router.id, subnet_id=subnet.id)


def test_gateway_taken_or_missing(reg: SqlRegistry, seed) -> None:
    net, subnet, router = seed
    squatter = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.2"}]})
    before = reg.revision()
    expect("IpAddressAlreadyAllocated", 409, f"IP address 172.16.1.2 already allocated in subnet {subnet.id}",
           reg.add_router_interface, router.id, subnet_id=subnet.id)
    assert reg.router_network_ids(router.id) == [] and reg.revision() == before
    reg.delete_port(squatter.id)
    other = reg.create_network({"name": "nogw"})
    nogw = reg.create_subnet({"network_id": other.id, "ip_version": 4, "cidr": "10.5.0.0/24", "gateway_ip": None})
    expect("BadRequest", 400, "Bad router request: Subnet for router interface must have a gateway IP.",
           reg.add_router_interface, router.id, subnet_id=nogw.id)
    expect("RouterNotFound", 404, "Router nope could not be found.", reg.add_router_interface, "nope",
           subnet_id=subnet.id)
    expect("SubnetNotFound", 404, "Subnet nope could not be found.", reg.add_router_interface, router.id,
           subnet_id="nope")
    expect("BadRequest", 400, "Bad router request: Either subnet_id or port_id must be specified.",
           reg.add_router_interface, router.id)
    expect("BadRequest", 400, "Bad router request: Cannot specify both subnet-id and port-id.",
           reg.add_router_interface, router.id, subnet_id=subnet.id, port_id="p")


def test_interface_by_port_adopts_it(reg: SqlRegistry, seed) -> None:
    net, subnet, router = seed
    port = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.2"}]})
    body = reg.add_router_interface(router.id, port_id=port.id)
    assert body["port_id"] == port.id and body["subnet_ids"] == [subnet.id]
    adopted = reg.get_port(port.id)
    assert (adopted.device_id, adopted.device_owner) == (router.id, "network:router_interface")
    other_router = reg.create_router({"name": "r2"})
    expect("PortInUse", 409, f"Unable to complete operation on port {port.id} for network {net.id}. Port already "
                             f"has an attached device {router.id}.",
           reg.add_router_interface, other_router.id, port_id=port.id)
    bare = reg.create_port({"network_id": net.id, "fixed_ips": []})
    expect("BadRequest", 400, "Bad router request: Router port must have at least one fixed IP.",
           reg.add_router_interface, other_router.id, port_id=bare.id)


def test_remove_interface_and_router_in_use(reg: SqlRegistry, seed) -> None:
    net, subnet, router = seed
    body = reg.add_router_interface(router.id, subnet_id=subnet.id)
    expect("RouterInUse", 409, f"Router {router.id} still has ports", reg.delete_router, router.id)
    expect("ServicePortInUse", 409, f"Port {body['port_id']} cannot be deleted directly via the port API: has "
                                    f"device owner network:router_interface.", reg.delete_port, body["port_id"])
    expect("SubnetInUse", 409, None, reg.delete_subnet, subnet.id)
    assert reg.remove_router_interface(router.id, subnet_id=subnet.id) == body
    expect("PortNotFound", 404, None, reg.get_port, body["port_id"])
    expect("RouterInterfaceNotFoundForSubnet", 404, f"Router {router.id} has no interface on subnet {subnet.id}",
           reg.remove_router_interface, router.id, subnet_id=subnet.id)
    again = reg.add_router_interface(router.id, subnet_id=subnet.id)
    expect("RouterInterfaceNotFound", 404, f"Router {router.id} does not have an interface with id nope",
           reg.remove_router_interface, router.id, port_id="nope")
    assert reg.remove_router_interface(router.id, port_id=again["port_id"])["port_id"] == again["port_id"]
    reg.delete_router(router.id)
    expect("RouterNotFound", 404, None, reg.get_router, router.id)


def test_router_crud(reg: SqlRegistry) -> None:
    router = reg.create_router({"name": "r", "tenant_id": "p1", "admin_state_up": "false"})
    assert (router.project_id, router.admin_state_up, router.status) == ("p1", False, "ACTIVE")
    assert reg.update_router(router.id, {"name": "r2"}).name == "r2"
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute routes", reg.update_router, router.id,
           {"routes": []})
    assert [r.name for r in reg.list_routers({"name": ["r2"]})] == ["r2"]
