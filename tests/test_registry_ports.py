# SqlRegistry ports on SQLite and PostgreSQL: IPAM, MACs, requested addresses, exhaustion, updates, lookups.
from __future__ import annotations

import pytest
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet

from provnet.registry.sql import SqlRegistry, SqlTx


@pytest.fixture
def reg(db_url: str):
    """Neutron's rules with exact port counts and addresses: [metadata] mode = router keeps network mode's metadata
    port out of them (it is tested in test_registry_metadata_port.py)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


@pytest.fixture
def seed(reg: SqlRegistry):
    net = reg.create_network(SEED_NETWORK)
    return net, reg.create_subnet(seed_subnet(net.id))


def test_automatic_address_from_the_pool(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    port = reg.create_port({"network_id": net.id, "name": "vm1", "device_id": "i-1"})
    assert len(port.fixed_ips) == 1 and port.fixed_ips[0].subnet_id == subnet.id
    assert port.fixed_ips[0].ip_address in subnet.allocation_pools[0]
    assert port.mac_address.startswith("fa:16:3e:") and port.status == "DOWN"
    assert port.binding_vif_type == "unbound" and port.port_security_enabled is True
    assert reg.get_port(port.id) == port


def test_pool_exhaustion_is_409_and_addresses_distinct(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    ports = [reg.create_port({"network_id": net.id}) for _ in range(25)]  # .102-.126
    ips = {p.fixed_ips[0].ip_address for p in ports}
    assert ips == {f"172.16.1.{i}" for i in range(102, 127)}
    assert len({p.mac_address for p in ports}) == 25
    before = reg.revision()
    expect("IpAddressGenerationFailure", 409, f"No more IP addresses available on network {net.id}.",
           reg.create_port, {"network_id": net.id})
    assert len(reg.list_ports()) == 25 and reg.revision() == before
    # an address outside the pools may still be requested
    extra = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.200"}]})
    assert extra.fixed_ips[0].subnet_id == subnet.id


def test_requested_addresses(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    port = reg.create_port({"network_id": net.id, "fixed_ips": [{"subnet_id": subnet.id,
                                                                  "ip_address": "172.16.1.103"}]})
    assert port.ips() == ["172.16.1.103"]
    expect("IpAddressAlreadyAllocated", 409, f"IP address 172.16.1.103 already allocated in subnet {subnet.id}",
           reg.create_port, {"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.103"}]})
    expect("InvalidIpForSubnet", 400, "IP address 172.16.2.5 is not a valid IP for the specified subnet.",
           reg.create_port, {"network_id": net.id, "fixed_ips": [{"subnet_id": subnet.id,
                                                                   "ip_address": "172.16.2.5"}]})
    expect("InvalidIpForSubnet", 400, "IP address 172.16.1.255 is not a valid IP for the specified subnet.",
           reg.create_port, {"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.255"}]})
    expect("InvalidIpForNetwork", 400, "IP address 10.1.1.1 is not a valid IP for any of the subnets on the "
                                       "specified network.",
           reg.create_port, {"network_id": net.id, "fixed_ips": [{"ip_address": "10.1.1.1"}]})
    other = reg.create_network({"name": "other"})
    other_subnet = reg.create_subnet({"network_id": other.id, "ip_version": 4, "cidr": "10.9.0.0/24"})
    expect("InvalidInput", 400, f"Invalid input for operation: Failed to create port on network {net.id}, because "
                                f"fixed_ips included invalid subnet {other_subnet.id}.",
           reg.create_port, {"network_id": net.id, "fixed_ips": [{"subnet_id": other_subnet.id}]})
    by_subnet = reg.create_port({"network_id": net.id, "fixed_ips": [{"subnet_id": subnet.id}]})
    assert by_subnet.fixed_ips[0].ip_address in subnet.allocation_pools[0]
    assert reg.create_port({"network_id": net.id, "fixed_ips": []}).fixed_ips == []
    assert len(reg.list_ports()) == 3


def test_a_failed_two_address_create_leaves_nothing(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.110"}]})
    before = reg.revision()
    expect("IpAddressAlreadyAllocated", 409, None, reg.create_port, {"network_id": net.id, "fixed_ips": [
        {"ip_address": "172.16.1.111"}, {"ip_address": "172.16.1.110"}]})
    assert [p.ips() for p in reg.list_ports()] == [["172.16.1.110"]] and reg.revision() == before
    assert reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.111"}]}).ips() == \
        ["172.16.1.111"]  # .111 was not kept by the failed request


def test_mac_addresses(reg: SqlRegistry, seed) -> None:
    net, _ = seed
    port = reg.create_port({"network_id": net.id, "mac_address": "FA:16:3E:AA:BB:CC"})
    assert port.mac_address == "fa:16:3e:aa:bb:cc"
    expect("MacAddressInUse", 409, f"Unable to complete operation for network {net.id}. The mac address "
                                   f"fa:16:3e:aa:bb:cc is in use.",
           reg.create_port, {"network_id": net.id, "mac_address": "fa:16:3e:aa:bb:cc"})
    other = reg.create_network({"name": "other"})
    assert reg.create_port({"network_id": other.id, "mac_address": "fa:16:3e:aa:bb:cc"}).fixed_ips == []
    assert [p.id for p in reg.find_ports_by_mac("FA:16:3E:AA:BB:CC", [net.id])] == [port.id]
    assert len(reg.find_ports_by_mac("fa:16:3e:aa:bb:cc")) == 2


def test_port_security_rules(reg: SqlRegistry, seed) -> None:
    net, _ = seed
    expect("PortSecurityPortHasSecurityGroup", 409, None, reg.create_port,
           {"network_id": net.id, "port_security_enabled": False, "security_groups": ["sg1"]})
    expect("AddressPairAndPortSecurityRequired", 409, "Port Security must be enabled in order to have allowed "
                                                      "address pairs on a port.", reg.create_port,
           {"network_id": net.id, "port_security_enabled": "False",
            "allowed_address_pairs": [{"ip_address": "10.0.0.0/24"}]})
    insecure_net = reg.create_network({"name": "open", "port_security_enabled": False})
    assert reg.create_port({"network_id": insecure_net.id}).port_security_enabled is False
    assert reg.list_ports() and len(reg.list_ports()) == 1


def test_port_needs_an_existing_network(reg: SqlRegistry) -> None:
    missing = "1b4a3f42-7b7d-4a0b-9b4b-3f0f5b0a6c11"
    expect("NetworkNotFound", 404, f"Network {missing} could not be found.", reg.create_port,
           {"network_id": missing})
    expect("HTTPBadRequest", 400, "Failed to parse request. Required attribute 'network_id' not specified",
           reg.create_port, {"name": "x"})


def test_update_port_fixed_ips_and_fields(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    port = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.105"}]})
    moved = reg.update_port(port.id, {"fixed_ips": [{"ip_address": "172.16.1.105"}, {"ip_address": "172.16.1.120"}],
                                      "name": "two", "device_id": "vm-9"})
    assert moved.ips() == ["172.16.1.105", "172.16.1.120"] and moved.name == "two"
    kept = reg.update_port(port.id, {"fixed_ips": [{"subnet_id": subnet.id}]})
    assert kept.ips() == ["172.16.1.105"]  # a subnet-only entry keeps the port's address on that subnet
    assert reg.find_ports_by_ip("172.16.1.120", [net.id]) == []  # released
    blocker = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.121"}]})
    expect("IpAddressAlreadyAllocated", 409, None, reg.update_port, port.id,
           {"fixed_ips": [{"ip_address": "172.16.1.121"}]})
    assert reg.get_port(port.id).ips() == ["172.16.1.105"]
    expect("MacAddressInUse", 409, None, reg.update_port, port.id, {"mac_address": blocker.mac_address})
    assert reg.update_port(port.id, {"mac_address": "fa:16:3e:00:00:99"}).mac_address == "fa:16:3e:00:00:99"
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute binding:vif_type", reg.update_port, port.id,
           {"binding:vif_type": "ovs"})
    expect("PortNotFound", 404, "Port nope could not be found.", reg.update_port, "nope", {"name": "x"})


def test_find_ports_by_ip_scoped_to_networks(reg: SqlRegistry, seed) -> None:
    net, subnet = seed
    other = reg.create_network({"name": "other"})
    reg.create_subnet({**seed_subnet(other.id), "name": "same-cidr"})
    a = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.103"}]})
    b = reg.create_port({"network_id": other.id, "fixed_ips": [{"ip_address": "172.16.1.103"}]})
    assert [p.id for p in reg.find_ports_by_ip("172.16.1.103", [net.id])] == [a.id]
    assert [p.id for p in reg.find_ports_by_ip("172.16.1.103", [other.id])] == [b.id]
    assert {p.id for p in reg.find_ports_by_ip("172.16.1.103", [net.id, other.id])} == {a.id, b.id}
    assert reg.find_ports_by_ip("172.16.1.103", []) == []
    assert reg.find_ports_by_ip("172.16.1.104", [net.id]) == []


def test_revision_grows_on_every_write_only(reg: SqlRegistry, seed) -> None:
    net, _ = seed
    r0 = reg.revision()
    reg.list_ports()
    reg.get_network(net.id)
    assert reg.revision() == r0
    port = reg.create_port({"network_id": net.id})
    r1 = reg.revision()
    reg.update_port(port.id, {"name": "x"})
    r2 = reg.revision()
    reg.delete_port(port.id)
    assert r0 < r1 < r2 < reg.revision()


def test_revision_seen_by_another_registry(db_url: str) -> None:
    one, two = open_registry(db_url), open_registry(db_url)
    try:
        before = two.revision()
        one.create_network({"name": "n"})
        assert two.revision() > before and [n.name for n in two.list_networks()] == ["n"]
    finally:
        one.close()
        two.close()


def test_a_failure_inside_the_transaction_rolls_everything_back(reg: SqlRegistry, seed, monkeypatch) -> None:
    """The port row is already inserted when storing its addresses fails: the database must drop it too."""
    net, _ = seed
    before = reg.revision()

    def broken(tx, port, replace=True) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SqlTx, "set_allocations", broken)
    with pytest.raises(RuntimeError):  # a requested subnet: the general (multi-statement) path on both databases
        reg.create_port({"network_id": net.id, "name": "half", "fixed_ips": [{"subnet_id": seed[1].id}]})
    monkeypatch.undo()
    assert reg.list_ports() == [] and reg.revision() == before
    assert reg.create_port({"network_id": net.id, "name": "whole"}).name == "whole"


def test_a_mac_clash_is_retried_with_a_new_mac_and_leaves_nothing(reg: SqlRegistry, seed, monkeypatch) -> None:
    """The common create (one statement on PostgreSQL, a transaction on SQLite) draws a random MAC; a clash
    with an existing port trips the unique constraint, nothing of the attempt stays, and a new draw succeeds."""
    from provnet.model import ipam

    net, _ = seed
    first = reg.create_port({"network_id": net.id, "name": "first"})
    draws = iter([first.mac_address, "fa:16:3e:00:00:42"])
    monkeypatch.setattr(ipam, "random_mac", lambda rng=None: next(draws))
    before = reg.revision()
    second = reg.create_port({"network_id": net.id, "name": "second"})
    assert second.mac_address == "fa:16:3e:00:00:42" and reg.write_retries >= 1
    assert sorted(p.name for p in reg.list_ports()) == ["first", "second"]
    assert reg.revision() == before + 1  # one committed write, not two
    assert reg.get_port(second.id).fixed_ips == second.fixed_ips
