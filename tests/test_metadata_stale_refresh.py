# Issue 10 row 2 at the metadata API, with a real PostgreSQL that is frozen (SIGSTOP): a VM whose cached tree has
# passed cache_expiration gets that tree at once while the refresh waits on the hung database (stale-while-
# revalidate), instead of waiting out the registry timeout; the refresh lands when the database thaws.
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import need_root, unique
from metadata_chain import Chain, api_get, build_seed
from pg_private import PrivatePostgres
from test_metadata_api import signed

from provnet.registry import open_registry

pytestmark = pytest.mark.root


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg():
    need_root()
    server = PrivatePostgres(Path(f"/tmp/{unique('pnpg')}"))
    yield server
    server.close()


def test_an_expired_tree_is_served_at_once_while_a_frozen_database_is_asked(pg, tmp_path):
    clock = Clock()
    registry = open_registry(pg.url)
    seed = build_seed(registry)
    # the registry timeout (60 s) is far beyond api_get's 10 s: a VM held for it would see no answer at all
    chain = Chain(registry, tmp_path, clock=clock, cache_expiration=15.0, registry_timeout=60.0)
    try:
        vm1 = seed.instances["vm1"]
        headers = signed(vm1, registry.get_instance(vm1).project_id)
        first = api_get(chain.api.port, "/openstack/latest/meta_data.json", headers)
        assert first.status == 200 and json.loads(first.body)["uuid"] == vm1
        clock.now += 16  # past cache_expiration, well within stale_if_error
        pg.freeze()
        try:
            for _ in range(3):  # the first starts the refresh, the others find it pending
                answer = api_get(chain.api.port, "/openstack/latest/meta_data.json", headers)
                assert answer.status == 200 and json.loads(answer.body)["uuid"] == vm1
            assert len(chain.api._refreshing) == 1  # one refresh, still waiting on the frozen server
        finally:
            pg.resume()
        refresh = chain.api._refreshing.get(vm1)
        if refresh is not None:
            chain.loop.run(_settled(refresh), timeout=60)
        assert chain.api._cache[vm1].born == clock.now  # the refreshed tree replaced the expired one
        assert api_get(chain.api.port, "/openstack/latest/meta_data.json", headers).status == 200
    finally:
        chain.close()
        registry.close()


async def _settled(future: asyncio.Future) -> None:
    await asyncio.wait([future])
