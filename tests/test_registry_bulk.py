# Bulk create (`{"ports": [...]}`) is ONE transaction: all items or none, the revision bumped once or not at all.
from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from api_server import running_api
from registry_support import SEED_NETWORK, expect, fresh_pg_url, open_registry, seed_subnet

from provnet.api.thread import ApiThread
from provnet.registry.remote import RemoteRegistry
from provnet.registry.sql import SqlRegistry


def test_bulk_ports_are_one_write(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    reg.create_subnet(seed_subnet(net.id))
    rev = reg.revision()
    ports = reg.create_many("port", [{"network_id": net.id, "name": f"p{i}"} for i in range(5)])
    assert [p.name for p in ports] == [f"p{i}" for i in range(5)]
    assert len({p.fixed_ips[0].ip_address for p in ports}) == 5 and len({p.mac_address for p in ports}) == 5
    assert reg.revision() == rev + 1  # one transaction, one bump
    assert [p.name for p in reg.list_ports()] == [f"p{i}" for i in range(5)]
    assert reg.create_many("port", []) == [] and reg.revision() == rev + 1


def test_bulk_whose_last_item_fails_leaves_nothing(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    subnet = reg.create_subnet(seed_subnet(net.id))
    rev = reg.revision()
    items = [{"network_id": net.id, "name": "a"}, {"network_id": net.id, "name": "b",
                                                   "fixed_ips": [{"ip_address": "172.16.1.110"}]},
             {"network_id": net.id, "name": "c", "fixed_ips": [{"ip_address": "172.16.1.110"}]}]
    expect("IpAddressAlreadyAllocated", 409, None, reg.create_many, "port", items)
    assert reg.list_ports() == [] and reg.revision() == rev
    # a body that does not validate: nothing is even attempted
    expect("HTTPBadRequest", 400, "Unrecognized attribute(s) 'colour'", reg.create_many, "port",
           [{"network_id": net.id, "name": "a"}, {"network_id": net.id, "colour": "red"}])
    assert reg.list_ports() == [] and reg.revision() == rev
    # networks: the second takes the physnet the first just took (one flat network per physnet)
    expect("FlatNetworkInUse", 409, None, reg.create_many, "network",
           [{"name": "x", "provider:network_type": "flat", "provider:physical_network": "physnet2"},
            {"name": "y", "provider:network_type": "flat", "provider:physical_network": "physnet2"}])
    # subnets: the second overlaps the first of the same request
    expect("InvalidInput", 400, None, reg.create_many, "subnet",
           [{"network_id": net.id, "ip_version": 4, "cidr": "10.9.0.0/24"},
            {"network_id": net.id, "ip_version": 4, "cidr": "10.9.0.0/25"}])
    assert [n.id for n in reg.list_networks()] == [net.id] and [s.id for s in reg.list_subnets()] == [subnet.id]
    assert reg.revision() == rev
    routers = reg.create_many("router", [{"name": "r1"}, {"name": "r2"}])
    assert [r.name for r in routers] == ["r1", "r2"] and reg.revision() == rev + 1
    with pytest.raises(ValueError, match="bulk create of 'agent'"):
        reg.create_many("agent", [{}])


@pytest.fixture
def reg(db_url: str):
    """Bulk creates with exact port lists: [metadata] mode = router keeps network mode's metadata port out of them
    (it is tested in test_registry_metadata_port.py)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return fresh_pg_url(request)


def test_reader_never_sees_the_first_items_of_a_pending_bulk(pg_url: str) -> None:
    """PostgreSQL: the bulk's second subnet waits on a row lock we hold, after its first subnet is inserted;
    meanwhile another connection sees neither it nor a new revision. Then the bulk fails and leaves nothing.
    (SQLite serialises writers at BEGIN, so no reader runs inside a pending bulk there; the all-or-nothing
    tests above run on both databases.)"""
    reg = open_registry(pg_url, metadata_mode="router")
    holder = reg.engine.connect()
    try:
        net1 = reg.create_network({"name": "one"})
        net2 = reg.create_network({"name": "two"})
        reg.create_subnet({"network_id": net2.id, "ip_version": 4, "cidr": "10.2.0.0/24"})
        rev = reg.revision()
        holder.begin()
        holder.execute(sa.text("SELECT id FROM networks WHERE id = :id FOR UPDATE"), {"id": net2.id})
        holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        outcome: list[BaseException | object] = []

        def bulk() -> None:
            try:
                outcome.append(reg.create_many("subnet", [
                    {"network_id": net1.id, "ip_version": 4, "cidr": "10.1.0.0/24", "name": "first"},
                    {"network_id": net2.id, "ip_version": 4, "cidr": "10.2.0.0/25", "name": "overlaps"}]))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=bulk)
        thread.start()
        with reg.engine.connect() as watcher:
            deadline = time.monotonic() + 30
            while not watcher.execute(sa.text("SELECT count(*) FROM pg_stat_activity "
                                              "WHERE :pid = ANY(pg_blocking_pids(pid))"),
                                      {"pid": holder_pid}).scalar_one():
                assert time.monotonic() < deadline, "the bulk never reached the locked network"
                time.sleep(0.02)
        # the bulk has inserted "first" and waits on net2's row: nobody else can see it
        assert [s.name for s in reg.list_subnets()] == [""] and reg.revision() == rev
        holder.rollback()
        thread.join(timeout=30)
        assert len(outcome) == 1 and getattr(outcome[0], "type", None) == "InvalidInput", outcome
        assert [s.cidr for s in reg.list_subnets()] == ["10.2.0.0/24"] and reg.revision() == rev
    finally:
        holder.close()
        reg.close()


def test_bulk_through_the_api_and_remote_registry(db_url: str) -> None:
    with running_api(db_url) as (client, registry):
        net, subnet = client.seed()
        rev = client.ok("GET", "/provnet/v1/revision")["revision"]
        status, err = client.post("/v2.0/ports", {"ports": [
            {"network_id": net["id"], "name": "ok"}, {"network_id": net["id"], "mac_address": "not-a-mac"}]})
        assert status == 400 and "mac_address" in err["NeutronError"]["message"]
        status, err = client.post("/v2.0/ports", {"ports": [
            {"network_id": net["id"], "name": "ok"},
            {"network_id": net["id"], "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "172.16.1.110"}]},
            {"network_id": net["id"], "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "172.16.1.110"}]}]})
        assert status == 409 and err["NeutronError"]["type"] == "IpAddressAlreadyAllocated", err
        assert client.ok("GET", "/v2.0/ports")["ports"] == []
        assert client.ok("GET", "/provnet/v1/revision")["revision"] == rev
        body = client.ok("POST", "/v2.0/routers", {"routers": [{"name": "r1"}, {"name": "r2"}]}, 201)
        assert [r["name"] for r in body["routers"]] == ["r1", "r2"]
        assert client.ok("GET", "/provnet/v1/revision")["revision"] == rev + 1
    local = open_registry(db_url, metadata_mode="router")
    with ApiThread(local) as api:
        remote = RemoteRegistry(api.url)
        try:
            nets = remote.create_many("network", [{"name": "a"}, {"name": "b"}])
            assert [n.name for n in nets] == ["a", "b"]
            assert [n.id for n in local.list_networks({"name": ["a", "b"]})] == [n.id for n in nets]
            rev = local.revision()
            expect("HTTPBadRequest", 400, None, remote.create_many, "network",
                   [{"name": "c"}, {"name": "d", "shared": "perhaps"}])
            assert local.list_networks({"name": ["c"]}) == [] and local.revision() == rev
            assert remote.create_many("router", []) == []
        finally:
            remote.close()
    local.close()
