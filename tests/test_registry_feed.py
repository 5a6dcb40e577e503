# The change feed: what each write records, reading it back in order, waking on other processes' commits, gaps.
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest
from registry_support import SEED_NETWORK, open_registry, seed_subnet

from provnet.model.errors import NeutronError
from provnet.registry import sql_changes
from provnet.registry.changes import Change
from provnet.registry.feed import COALESCE, ChangeFeed


@pytest.fixture
def reg(db_url: str):
    """Exactly what each write records: [metadata] mode = router keeps network mode's metadata port and its subnet
    notes out (test_registry_metadata_port.py checks those)."""
    registry = open_registry(db_url, metadata_mode="router")
    yield registry
    registry.close()


def _seed(reg):
    net = reg.create_network(SEED_NETWORK)
    subnet = reg.create_subnet(seed_subnet(net.id))
    return net, subnet


def _kinds(batch) -> list[tuple[str, str]]:
    return [(c.kind, c.op) for c in batch.changes]


def test_each_write_records_what_it_touched_with_the_keys_caches_use(reg) -> None:
    start = reg.revision()
    net, subnet = _seed(reg)
    port = reg.create_port({"network_id": net.id, "device_id": "vm-1", "mac_address": "FA:16:3E:00:00:01",
                            "fixed_ips": [{"ip_address": "172.16.1.110"}]})
    reg.update_port(port.id, {"fixed_ips": [{"ip_address": "172.16.1.111"}], "device_id": "vm-2"})
    reg.delete_port(port.id)
    batch = reg.changes_since(start)
    assert batch.revision == reg.revision() and not batch.gap
    assert _kinds(batch) == [("network", "create"), ("subnet", "create"), ("port", "create"),
                             ("port", "update"), ("port", "delete")]
    created, updated, deleted = batch.changes[2:]
    assert (created.id, created.network_id, created.addresses, created.macs, created.devices) == (
        port.id, net.id, ("172.16.1.110",), ("fa:16:3e:00:00:01",), ("vm-1",))
    # an update names the old and the new keys: caches drop both
    assert set(updated.addresses) == {"172.16.1.110", "172.16.1.111"}
    assert set(updated.devices) == {"vm-1", "vm-2"}
    assert deleted.addresses == ("172.16.1.111",)
    assert [c.revision for c in batch.changes] == sorted(c.revision for c in batch.changes)
    assert subnet.id == batch.changes[1].id


def test_router_interfaces_and_cascades_are_in_the_feed(reg) -> None:
    net, subnet = _seed(reg)
    router = reg.create_router({"name": "r1"})
    after_router = reg.revision()
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    batch = reg.changes_since(after_router)
    assert sorted(_kinds(batch)) == [("port", "create"), ("router", "update")]
    port_change = next(c for c in batch.changes if c.kind == "port")
    assert port_change.devices == (router.id,) and port_change.addresses == ("172.16.1.2",)
    before_delete = reg.revision()
    reg.remove_router_interface(router.id, subnet_id=subnet.id)
    reg.delete_router(router.id)
    reg.delete_network(net.id)
    assert _kinds(reg.changes_since(before_delete)) == [
        ("router", "update"), ("port", "delete"), ("router", "delete"), ("subnet", "delete"), ("network", "delete")]


def test_bulk_creates_are_one_revision_and_one_batch(reg) -> None:
    net, _ = _seed(reg)
    start = reg.revision()
    ports = reg.create_many("port", [{"network_id": net.id} for _ in range(5)])
    batch = reg.changes_since(start, limit=1)
    assert batch.revision == start + 1  # one write, one revision, never split by the limit
    assert [c.id for c in batch.changes] == [p.id for p in ports]


def test_a_failed_write_records_nothing(reg) -> None:
    net, _ = _seed(reg)
    start = reg.revision()
    with pytest.raises(NeutronError):
        reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": "10.9.9.9"}]})
    batch = reg.changes_since(start)
    assert batch.changes == () and batch.revision == start


def test_a_bare_heartbeat_is_not_a_change(reg) -> None:
    reg.report_agent_state("h1", "Open vSwitch agent", "provnet-agent", {"bridge_mappings": {}})
    start = reg.revision()
    reg.report_agent_state("h1", "Open vSwitch agent", "provnet-agent", {"bridge_mappings": {}})
    assert reg.changes_since(start).changes == ()
    reg.report_agent_state("h1", "Open vSwitch agent", "provnet-agent", {"bridge_mappings": {"p": "br"}})
    assert _kinds(reg.changes_since(start)) == [("agent", "update")]


def test_a_reader_behind_the_pruned_changes_is_told_to_rebuild(reg, monkeypatch) -> None:
    monkeypatch.setattr(sql_changes, "RETAIN", 3)
    monkeypatch.setattr(sql_changes, "PRUNE_EVERY", 2)
    start = reg.revision()
    for n in range(8):
        reg.create_router({"name": f"r{n}"})
    batch = reg.changes_since(start)
    assert batch.gap and batch.revision == reg.revision() and batch.changes == ()
    recent = reg.changes_since(reg.revision() - 2)
    assert not recent.gap and len(recent.changes) == 2
    # a reader ahead of the store (restored from an older backup) rebuilds too
    assert reg.changes_since(reg.revision() + 5).gap


WRITER = textwrap.dedent("""
    import sys
    from provnet.registry.sql import SqlRegistry
    reg = SqlRegistry(sys.argv[1])
    reg.create_router({"name": "from-another-process"})
    reg.close()
""")


def test_a_waiter_is_woken_by_another_process_commit(reg, db_url) -> None:
    start = reg.revision()
    waiter = reg.store._waiter()  # open the notification channel before the other process writes
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db_url])
    try:
        batch = reg.wait_changes(start, timeout=120)
        while not batch.changes:  # an early empty wake-up is allowed
            batch = reg.wait_changes(start, timeout=120)
    finally:
        assert writer.wait(60) == 0
    assert _kinds(batch) == [("router", "create")]
    assert waiter.notified >= 1, "woken by the store's own channel (NOTIFY / inotify), not by a timeout"


def test_the_feed_delivers_batches_in_order_on_the_loop(reg) -> None:
    seen: list[Change] = []
    resyncs: list[int] = []

    class Collect:
        def apply(self, changes):
            seen.extend(changes)

        def resync(self):
            resyncs.append(1)

    async def main() -> None:
        feed = ChangeFeed(reg, "test")
        feed.subscribe(Collect())
        await feed.start()
        for n in range(3):
            await asyncio.to_thread(reg.create_router, {"name": f"r{n}"})
        target = await asyncio.to_thread(reg.revision)
        while feed.revision < target:
            await feed.wait_beyond(feed.revision, 30)
        await feed.stop()

    asyncio.run(main())
    assert [(c.kind, c.op) for c in seen] == [("router", "create")] * 3
    assert resyncs == []


def test_writes_made_while_the_feed_gathers_arrive_as_one_batch(reg) -> None:
    """Churn costs the subscribers per batch, not per write: the commits made after a batch (while the feed's
    thread gathers) reach the subscribers together, in order, none lost. The gathering pause is a gate the test
    opens (no time passes)."""
    batches: list[list[str]] = []

    class Collect:
        def apply(self, changes) -> None:
            batches.append([c.id for c in changes])

        def resync(self) -> None:
            pass

    gate, paused = threading.Event(), threading.Event()

    class Gated(ChangeFeed):
        def gather(self) -> None:
            paused.set()
            gate.wait(30)

    async def main() -> list[str]:
        feed = Gated(reg, "test")
        feed.subscribe(Collect())
        await feed.start()
        first = await asyncio.to_thread(reg.create_router, {"name": "first"})
        assert await asyncio.to_thread(paused.wait, 30)
        ids = [first.id]
        for n in range(20):
            ids.append((await asyncio.to_thread(reg.create_router, {"name": f"r{n}"})).id)
        target = await asyncio.to_thread(reg.revision)
        gate.set()
        while feed.revision < target:
            await feed.wait_beyond(feed.revision, 30)
        await feed.stop()
        return ids

    ids = asyncio.run(main())
    assert batches == [ids[:1], ids[1:]]


def test_the_feed_gathers_only_under_churn(reg) -> None:
    """A lone change on a quiet system goes on at once; a batch that follows the previous one within COALESCE makes
    the feed wait COALESCE for what comes next. Clock and wait injected: no time passes."""
    feed = ChangeFeed(reg, "test")
    now, waits = [1000.0], []
    feed.clock = lambda: now[0]
    feed._stopping.wait = lambda seconds: waits.append(seconds)  # type: ignore[method-assign]
    feed.gather()
    assert waits == []  # the first batch after a quiet time
    now[0] += COALESCE / 2
    feed.gather()
    assert waits == [COALESCE]  # churn: gather
    now[0] += 10 * COALESCE
    feed.gather()
    assert waits == [COALESCE]  # quiet again


def test_bulk_port_creates_and_revision_constrained_updates_record_exactly_what_they_did(reg) -> None:
    """The bulk path (batched addresses and MACs, many rows per statement) records one create per port with its
    keys; an update refused by its If-Match revision records nothing, an accepted one its update."""
    net, subnet = _seed(reg)
    start = reg.revision()
    ports = reg.create_many("port", [{"network_id": net.id, "device_id": f"vm-{i}"} for i in range(5)])
    batch = reg.changes_since(start)
    assert _kinds(batch) == [("port", "create")] * 5 and len({c.revision for c in batch.changes}) == 1
    assert [(c.id, c.addresses, c.macs, c.devices) for c in batch.changes] == [
        (p.id, (p.fixed_ips[0].ip_address,), (p.mac_address,), (p.device_id,)) for p in ports]
    before = reg.revision()
    with pytest.raises(NeutronError) as info:
        reg.update_port(ports[0].id, {"name": "late"}, if_revision=0)
    assert info.value.status == 412 and reg.changes_since(before).changes == ()
    reg.update_port(ports[0].id, {"name": "on time"}, if_revision=1)
    assert _kinds(reg.changes_since(before)) == [("port", "update")]
