# Test helper for the registry tests: open a SqlRegistry, assert Neutron errors by type, status and message.
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from provnet.model.errors import NeutronError
from provnet.registry.sql import SqlRegistry

SEED_NETWORK = {"name": "phy_net", "router:external": "True", "provider:network_type": "flat",
                "provider:physical_network": "physnet1"}


def seed_subnet(network_id: str) -> dict:
    """The body the seed's `neutron subnet-create` sends (reference §1)."""
    return {"network_id": network_id, "ip_version": 4, "cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2",
            "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}], "enable_dhcp": "False",
            "name": "phy_subnet_without_dhcp"}


def expect(error: str, status: int, message: str | None, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> NeutronError:
    """Call fn; it must raise the NeutronError named `error` with `status` and (if given) exactly `message`."""
    with pytest.raises(NeutronError) as info:
        fn(*args, **kwargs)
    exc = info.value
    assert (exc.type, exc.status) == (error, status), exc.message
    if message is not None:
        assert exc.message == message
    return exc


def open_registry(db_url: str, **kwargs: Any) -> SqlRegistry:
    return SqlRegistry(db_url, **kwargs)


def fresh_pg_url(request: pytest.FixtureRequest) -> str:
    """A fresh schema on the test PostgreSQL (dropped after the test), for cases only PostgreSQL can show."""
    import sqlalchemy as sa
    from conftest import PG_URL, _drop_schema, need, unique

    need(bool(PG_URL), "needs PostgreSQL: set PROVNET_TEST_PG_URL (scripts/postgres.sh prints it)")
    schema = unique("t")
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    request.addfinalizer(lambda: _drop_schema(engine, schema))
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture
def reg(db_url: str):
    """A fresh SqlRegistry on the `db_url` store (SQLite and PostgreSQL), closed after the test."""
    registry = open_registry(db_url)
    yield registry
    registry.close()
