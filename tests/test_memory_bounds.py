# Memory that fits (issue 16): what each cache costs per entry, measured with tracemalloc (bytes, not time), and
# the caps that bound the total. The figures at 100,000 ports are in docs/benchmarks.md (benchmarks/scale.py).
from __future__ import annotations

import asyncio
import ipaddress
import tracemalloc
import uuid

import pytest

from provnet.dhcp.view import Host, Settings, Snapshot, build_view
from provnet.metadata import api as metadata_api
from provnet.metadata import lookup
from provnet.metadata.lookup import Identity, Lookup
from provnet.model.resources import Network, Subnet

# the bounds this project states (README, "Memory"): per entry, and so per 100,000 ports
DHCP_BYTES_PER_RESERVATION = 700
AGENT_BYTES_PER_ENTRY = 600


def measured(build) -> tuple[object, int]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = build()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_dhcp_reservation_costs_under_700_bytes() -> None:
    """Everything the view keeps per host, its strings included (the snapshot it was built from is gone)."""
    n = 20_000
    net = Network(id=str(uuid.uuid4()), name="big", project_id="p")
    subnet = Subnet(id=str(uuid.uuid4()), network_id=net.id, name="s", project_id="p", ip_version=4,
                    cidr="10.0.0.0/14", gateway_ip="10.0.0.1")

    def build():
        hosts = [Host(str(uuid.uuid4()), net.id, subnet.id, f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                      f"{i & 255:02x}", str(ipaddress.IPv4Address(0x0A000010 + i)), f"vm-{i}", str(uuid.uuid4()))
                 for i in range(n)]
        return build_view(Snapshot(1, [net], [subnet], hosts), Settings(),
                          [ipaddress.IPv4Interface("10.0.0.2/14")])

    view, used = measured(build)
    assert view.reservations == n
    assert used / n < DHCP_BYTES_PER_RESERVATION, f"{used / n:.0f} bytes per reservation"


def _lookup() -> Lookup:
    class Feed:
        healthy = True

        def stale_for(self) -> float:
            return 0.0

    from provnet.metadata.observe import Metrics

    return Lookup(areg=type("A", (), {"registry": None})(), metrics=Metrics("bounds"),  # type: ignore[arg-type]
                  feed=Feed())  # type: ignore[arg-type]


def test_an_agent_cache_entry_costs_under_600_bytes() -> None:
    """Everything an entry keeps: its key (the address), the answer (instance, project, port, MAC), the index."""
    n = 20_000
    cache = _lookup()
    scope = str(uuid.uuid4())

    def fill() -> Lookup:
        for i in range(n):
            cache._store(("router", scope, str(ipaddress.IPv4Address(0x0A000000 + i))),
                         Identity(str(uuid.uuid4()), uuid.uuid4().hex, mac=f"fa:16:3e:{i % 256:02x}:"
                                  f"{i // 256 % 256:02x}:{i // 65536:02x}"))
        return cache

    _, used = measured(fill)
    assert len(cache) == n
    assert used / n < AGENT_BYTES_PER_ENTRY, f"{used / n:.0f} bytes per entry"


def test_the_agent_cache_is_capped_and_drops_its_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookup, "MAX_ENTRIES", 100)
    cache = _lookup()
    for i in range(250):
        cache._store(("network", "n1", f"10.0.0.{i % 250}"), Identity(f"vm{i}", "p"))
    assert len(cache) <= 100
    assert ("network", "n1", "10.0.0.249") in cache._cache  # the newest stay
    assert ("network", "n1", "10.0.0.0") not in cache._cache


def test_the_metadata_api_cache_is_capped(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from provnet.registry.sql import SqlRegistry

    monkeypatch.setattr(metadata_api, "MAX_ENTRIES", 20)
    registry = SqlRegistry(f"sqlite:///{tmp_path}/m.sqlite")
    try:
        instances = [registry.create_instance({"name": f"vm{i}"}).id for i in range(50)]
        api = metadata_api.MetadataApi(registry, shared_secret="s", port=0)

        async def load_all() -> None:
            for instance_id in instances:
                await api._load_tree(instance_id, None)
            api.areg.close()

        asyncio.run(load_all())
        assert len(api._cache) <= 20 and instances[-1] in api._cache
    finally:
        registry.close()
