# Neutron's `description` on networks, subnets, ports and routers: create, show, update, filter, bad input, and
# a database made at migration 0001 upgraded in place to 0002.
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet

from provnet.registry.sql import SqlRegistry
from provnet.registry.sql_engine import MIGRATIONS, SCHEMA_HEAD, make_engine


def test_description_on_create_update_and_filter(reg: SqlRegistry) -> None:
    net = reg.create_network({**SEED_NETWORK, "description": "seed net"})
    assert net.to_api()["description"] == "seed net" and reg.get_network(net.id).description == "seed net"
    subnet = reg.create_subnet({**seed_subnet(net.id), "description": "no dhcp"})
    # the fixed address first: an automatic one is random and could otherwise take .110
    fixed = reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "172.16.1.110"}],
                             "description": "fixed"})  # the general path
    port = reg.create_port({"network_id": net.id, "description": "vm one"})  # PostgreSQL: the one-statement path
    router = reg.create_router({"name": "r", "description": "edge"})
    plain = reg.create_router({"name": "plain"})
    assert [o.to_api()["description"] for o in (reg.get_subnet(subnet.id), reg.get_port(port.id),
                                                reg.get_port(fixed.id), reg.get_router(router.id),
                                                plain)] == ["no dhcp", "vm one", "fixed", "edge", ""]
    assert [p.id for p in reg.list_ports({"description": ["vm one"]})] == [port.id]
    assert [r.id for r in reg.list_routers({"description": [""]})] == [plain.id]
    assert [n.id for n in reg.list_networks({"description": ["seed net", "x"]})] == [net.id]
    assert [s.id for s in reg.list_subnets({"description": ["no dhcp"]})] == [subnet.id]
    assert reg.update_network(net.id, {"description": "renamed"}).description == "renamed"
    assert reg.update_subnet(subnet.id, {"description": ""}).description == ""
    assert reg.update_port(port.id, {"description": "moved"}).description == "moved"
    assert reg.update_router(router.id, {"description": "core"}).description == "core"
    assert (reg.get_network(net.id).description, reg.get_subnet(subnet.id).description,
            reg.get_port(port.id).description, reg.get_router(router.id).description) == (
        "renamed", "", "moved", "core")


@pytest.mark.parametrize("value,reason", [
    ("x" * 256, f"'{'x' * 256}' exceeds maximum length of 255"),
    (5, "'5' is not a valid string"),
    (None, "'None' is not a valid string"),
])
def test_bad_description_is_refused_and_writes_nothing(reg: SqlRegistry, value: object, reason: str) -> None:
    net = reg.create_network({"name": "n", "description": "kept"})
    rev = reg.revision()
    message = f"Invalid input for description. Reason: {reason}."
    expect("HTTPBadRequest", 400, message, reg.create_network, {"name": "m", "description": value})
    expect("HTTPBadRequest", 400, message, reg.create_router, {"description": value})
    expect("HTTPBadRequest", 400, message, reg.create_port, {"network_id": net.id, "description": value})
    expect("HTTPBadRequest", 400, message, reg.update_network, net.id, {"description": value})
    assert reg.get_network(net.id).description == "kept" and reg.revision() == rev
    assert len(reg.list_networks()) == 1 and reg.list_routers() == [] and reg.list_ports() == []
    assert reg.create_network({"name": "max", "description": "y" * 255}).description == "y" * 255


OLD_NET = "11111111-2222-3333-4444-555555555555"


def test_database_at_0001_upgrades_in_place(db_url: str) -> None:
    engine = make_engine(db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(sa.text("INSERT INTO networks (id, name, project_id, admin_state_up, shared, router_external, "
                             "port_security_enabled, status, created_at) VALUES (:id, 'old', 'p', true, false, "
                             "false, true, 'ACTIVE', CURRENT_TIMESTAMP)"), {"id": OLD_NET})
        conn.execute(sa.text("INSERT INTO routers (id, name, project_id, admin_state_up, status, created_at) "
                             "VALUES ('r-old', 'old', 'p', true, 'ACTIVE', CURRENT_TIMESTAMP)"))
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
    engine.dispose()
    reg = open_registry(db_url)  # opening it migrates to the head
    try:
        with reg.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == SCHEMA_HEAD
        old = reg.get_network(OLD_NET)
        assert (old.name, old.description) == ("old", "") and reg.get_router("r-old").description == ""
        assert reg.update_network(OLD_NET, {"description": "upgraded"}).description == "upgraded"
        subnet = reg.create_subnet({"network_id": OLD_NET, "ip_version": 4, "cidr": "10.0.0.0/24",
                                    "description": "new"})
        assert reg.get_subnet(subnet.id).description == "new"
    finally:
        reg.close()
