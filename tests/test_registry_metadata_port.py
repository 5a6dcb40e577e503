# The registry's metadata port (network mode), on SQLite and PostgreSQL: made, kept, guarded, removed, raced.
from __future__ import annotations

import threading

import pytest
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet

from provnet.model.resources import METADATA_PORT_OWNER, metadata_device_id
from provnet.registry.metadata_reads import read_metadata_hops


def md_ports(reg, network_id: str) -> list:
    return reg.list_ports({"network_id": [network_id], "device_owner": [METADATA_PORT_OWNER]})


def seed(reg):
    net = reg.create_network(SEED_NETWORK)
    return net, reg.create_subnet(seed_subnet(net.id))


def hops(reg, mode: str, network_id: str) -> dict[str, str]:
    return read_metadata_hops(reg, mode, reg.list_subnets({"network_id": [network_id]}))


def test_the_first_subnet_makes_the_metadata_port_in_neutrons_shape(reg):
    net, subnet = seed(reg)
    [port] = md_ports(reg, net.id)
    body = port.to_api()
    assert (body["device_owner"], body["device_id"], body["name"]) == (
        "network:distributed", f"provnet-metadata-{net.id}", "metadata")
    assert body["binding:host_id"] == "" and body["port_security_enabled"] is False
    assert body["security_groups"] == [] and body["project_id"] == net.project_id
    # the pool's first free address, like Neutron's DHCP port: predictable for operators who pick fixed IPs
    assert body["fixed_ips"] == [{"subnet_id": subnet.id, "ip_address": "172.16.1.102"}]
    assert port in reg.list_ports()  # port-list shows it like any port
    assert hops(reg, "auto", net.id) == {subnet.id: "172.16.1.102"}


def test_router_mode_makes_no_metadata_port(db_url):
    reg = open_registry(db_url, metadata_mode="router")
    try:
        net, _ = seed(reg)
        assert md_ports(reg, net.id) == []
        assert hops(reg, "router", net.id) == {}
    finally:
        reg.close()


def test_its_address_is_taken_from_the_pool_and_dhcp_has_no_reservation_for_it(reg):
    net = reg.create_network({"name": "small"})
    subnet = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.9.0.0/24",
                                "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.11"}]})
    vm = reg.create_port({"network_id": net.id, "device_owner": "compute:nova"})
    assert vm.fixed_ips[0].ip_address == "10.9.0.11"  # the metadata port holds .10
    expect("IpAddressGenerationFailure", 409, None, reg.create_port, {"network_id": net.id})
    expect("IpAddressAlreadyAllocated", 409, None, reg.create_port,
           {"network_id": net.id, "fixed_ips": [{"ip_address": "10.9.0.10"}]})
    rows = reg.reservation_rows([net.id])
    assert [(r.port_id, r.ip_address) for r in rows] == [(vm.id, "10.9.0.11")]  # no reservation for .10
    assert {p.id for p in reg.find_ports_by_ip("10.9.0.10", [net.id])} == {md_ports(reg, net.id)[0].id}
    assert subnet.id in hops(reg, "auto", net.id)


def test_each_ipv4_subnet_gives_it_one_address_ipv6_none_and_it_goes_with_the_last_subnet(reg):
    net, first = seed(reg)
    second = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.1.0.0/24"})
    v6 = reg.create_subnet({"network_id": net.id, "ip_version": 6, "cidr": "fd00:1::/64"})
    [port] = md_ports(reg, net.id)
    assert sorted((f.subnet_id, f.ip_address) for f in port.fixed_ips) == sorted(
        [(first.id, "172.16.1.102"), (second.id, "10.1.0.2")])
    reg.delete_subnet(first.id)  # its address is no reason to refuse the delete (SubnetInUse)
    assert [f.subnet_id for f in md_ports(reg, net.id)[0].fixed_ips] == [second.id]
    reg.delete_subnet(second.id)
    assert md_ports(reg, net.id)[0].fixed_ips == []  # the IPv6 subnet remains: the device answers fe80::a9fe:a9fe
    reg.delete_subnet(v6.id)
    assert md_ports(reg, net.id) == []


def test_an_ipv6_only_network_gets_a_port_without_addresses(reg):
    net = reg.create_network({"name": "v6"})
    reg.create_subnet({"network_id": net.id, "ip_version": 6, "cidr": "fd00:2::/64"})
    [port] = md_ports(reg, net.id)
    assert port.fixed_ips == []


def test_deleting_the_network_removes_it(reg):
    net, _ = seed(reg)
    reg.delete_network(net.id)  # not NetworkInUse
    assert reg.list_ports() == []


def test_auto_mode_keeps_the_port_when_a_router_takes_the_gateway_and_moves_only_the_route(reg):
    net, subnet = seed(reg)
    [port] = md_ports(reg, net.id)
    router = reg.create_router({"name": "r1"})
    before = reg.revision()
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    # the subnet's route changed: its subnet is noted, so DHCP views and metadata caches re-read it
    assert ("subnet", subnet.id) in {(c.kind, c.id) for c in reg.changes_since(before).changes}
    assert md_ports(reg, net.id) == [port]  # kept: VMs keep their lease's route to it until they renew
    assert hops(reg, "auto", net.id) == {}  # new leases: via the router interface
    assert hops(reg, "network", net.id) == {subnet.id: "172.16.1.102"}
    before = reg.revision()
    reg.remove_router_interface(router.id, subnet_id=subnet.id)
    assert ("subnet", subnet.id) in {(c.kind, c.id) for c in reg.changes_since(before).changes}
    assert md_ports(reg, net.id) == [port]  # the same port: nothing to allocate when switching back
    assert hops(reg, "auto", net.id) == {subnet.id: "172.16.1.102"}


def test_deleting_it_by_hand_is_refused_in_network_mode_and_allowed_in_router_mode(reg):
    net, subnet = seed(reg)
    [port] = md_ports(reg, net.id)
    exc = expect("ServicePortInUse", 409, None, reg.delete_port, port.id)
    assert f"metadata port of network {net.id}" in exc.message and "phy_subnet_without_dhcp" in exc.message
    assert md_ports(reg, net.id) == [port]
    router = reg.create_router({"name": "r1"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    reg.delete_port(port.id)  # every subnet in router mode: an operator may reclaim the address
    assert md_ports(reg, net.id) == []
    reg.remove_router_interface(router.id, subnet_id=subnet.id)  # network mode again: a new one
    [again] = md_ports(reg, net.id)
    assert again.id != port.id and again.fixed_ips[0].ip_address == "172.16.1.102"


def test_network_mode_refuses_deleting_it_even_with_a_router(db_url):
    reg = open_registry(db_url, metadata_mode="network")
    try:
        net, subnet = seed(reg)
        router = reg.create_router({"name": "r1"})
        reg.add_router_interface(router.id, subnet_id=subnet.id)
        [port] = md_ports(reg, net.id)
        expect("ServicePortInUse", 409, None, reg.delete_port, port.id)
        assert hops(reg, "network", net.id) == {subnet.id: "172.16.1.102"}
    finally:
        reg.close()


def test_updates_that_would_break_it_are_refused_and_others_allowed(reg):
    net, subnet = seed(reg)
    second = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.1.0.0/24"})
    [port] = md_ports(reg, net.id)
    expect("Conflict", 409, None, reg.update_port, port.id, {"device_owner": "compute:nova"})
    expect("Conflict", 409, None, reg.update_port, port.id, {"device_id": "somewhere"})
    exc = expect("Conflict", 409, None, reg.update_port, port.id, {"fixed_ips": [{"subnet_id": subnet.id}]})
    assert "exactly one address on each IPv4 subnet" in exc.message and "10.1.0.0/24" in exc.message
    expect("Conflict", 409, None, reg.update_port, port.id, {"fixed_ips": [
        {"ip_address": "172.16.1.110"}, {"ip_address": "172.16.1.111"}, {"subnet_id": second.id}]})
    assert md_ports(reg, net.id) == [port]
    moved = reg.update_port(port.id, {"fixed_ips": [{"ip_address": "172.16.1.126"}, {"subnet_id": second.id}],
                                      "name": "metadata", "description": "moved to the pool's end"})
    assert moved.fixed_ips[0].ip_address == "172.16.1.126"
    assert hops(reg, "auto", net.id)[subnet.id] == "172.16.1.126"


@pytest.mark.parametrize("how", ["create", "bulk", "update"])
def test_its_device_id_is_reserved(reg, how):
    net, _ = seed(reg)
    body = {"network_id": net.id, "device_id": metadata_device_id(net.id), "device_owner": METADATA_PORT_OWNER}
    before = reg.list_ports()
    if how == "create":
        exc = expect("InvalidInput", 400, None, reg.create_port, body)
    elif how == "bulk":
        exc = expect("InvalidInput", 400, None, reg.create_many, "port", [{"network_id": net.id}, body])
    else:
        vm = reg.create_port({"network_id": net.id})
        before = reg.list_ports()
        exc = expect("InvalidInput", 400, None, reg.update_port, vm.id, {"device_id": metadata_device_id("x")})
    assert "reserved for the metadata ports provnet makes itself" in exc.message
    assert reg.list_ports() == before


def test_no_free_address_for_it_is_a_clear_error_and_leaves_nothing_half_done(reg):
    """auto mode: the port was reclaimed while a router held the gateway; VMs then filled the pool; removing the
    router interface would put the subnet in network mode with nowhere for the metadata port: refused whole."""
    net = reg.create_network({"name": "full"})
    subnet = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.9.0.0/24", "name": "tiny",
                                "gateway_ip": "10.9.0.1",
                                "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.11"}]})
    router = reg.create_router({"name": "r1"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    reg.delete_port(md_ports(reg, net.id)[0].id)
    reg.create_port({"network_id": net.id})
    reg.create_port({"network_id": net.id})
    ports, revision = reg.list_ports(), reg.revision()
    exc = expect("IpAddressGenerationFailure", 409, None, reg.remove_router_interface, router.id,
                 subnet_id=subnet.id)
    assert exc.message.startswith("No free address in the allocation pool of subnet tiny (10.9.0.0/24) for the "
                                  f"metadata port of network {net.id}")
    assert "[metadata] mode = router" in exc.message
    assert reg.list_ports() == ports and reg.revision() == revision  # the interface is still there


def test_a_subnet_create_needing_an_address_on_a_full_subnet_is_refused_whole(db_url):
    """The store was filled in router mode; in network mode the next subnet needs the port on every subnet."""
    routed = open_registry(db_url, metadata_mode="router")
    net = routed.create_network({"name": "n"})
    full = routed.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.9.0.0/24", "name": "full",
                                 "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.10"}]})
    routed.create_port({"network_id": net.id})
    routed.close()
    reg = open_registry(db_url, metadata_mode="network")
    try:
        subnets, revision = reg.list_subnets(), reg.revision()
        exc = expect("IpAddressGenerationFailure", 409, None, reg.create_subnet,
                     {"network_id": net.id, "ip_version": 4, "cidr": "10.10.0.0/24"})
        assert "subnet full (10.9.0.0/24)" in exc.message
        assert reg.list_subnets() == subnets and reg.revision() == revision and md_ports(reg, net.id) == []
        assert [s.id for s in subnets] == [full.id]
    finally:
        reg.close()


def test_a_subnet_update_repairs_a_missing_metadata_port(db_url):
    """doctor's metadata.port-missing fix: a store made in router mode, opened in auto mode."""
    routed = open_registry(db_url, metadata_mode="router")
    net, subnet = seed(routed)
    routed.close()
    reg = open_registry(db_url)
    try:
        assert md_ports(reg, net.id) == []
        reg.update_subnet(subnet.id, {"description": "repair"})
        assert md_ports(reg, net.id)[0].fixed_ips[0].ip_address == "172.16.1.102"
    finally:
        reg.close()


def test_a_bad_mode_is_refused_at_once(db_url):
    with pytest.raises(ValueError, match="must be router, network or auto, got 'routers'"):
        open_registry(db_url, metadata_mode="routers")


def test_concurrent_subnet_creates_make_one_port_with_an_address_on_each(db_url):
    setup = open_registry(db_url)
    net = setup.create_network({"name": "raced"})
    setup.close()
    count = 6
    regs = [open_registry(db_url) for _ in range(count)]
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            regs[i].create_subnet({"network_id": net.id, "ip_version": 4, "cidr": f"10.{i}.0.0/24"})
        except BaseException as exc:  # noqa: BLE001 -- reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        subnets = regs[0].list_subnets({"network_id": [net.id]})
        [port] = md_ports(regs[0], net.id)
        assert len(subnets) == count
        assert sorted(f.subnet_id for f in port.fixed_ips) == sorted(s.id for s in subnets)
        assert sorted(f.ip_address for f in port.fixed_ips) == sorted(f"10.{i}.0.2" for i in range(count))
    finally:
        for r in regs:
            r.close()
