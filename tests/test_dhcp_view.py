# The DHCP view from a real registry (SQLite and PostgreSQL): reservations, network choice, following changes.
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest
from conftest import need_root
from test_dhcp_clients import MAC1, MAC2, seed_registry

from provnet.dhcp import codec, server
from provnet.dhcp.service import DhcpService, RegistrySource
from provnet.dhcp.view import Settings, collect, replace_port, resolve_networks

ADDRS = [ipaddress.IPv4Interface("172.16.1.99/24")]


def source(reg, network: str | None = "phy_net") -> RegistrySource:
    return RegistrySource(reg, "unused", network, Settings(), addresses=lambda _ifname: ADDRS)


def test_view_holds_each_ports_fixed_ip_and_hostname(db_url):
    reg, net = seed_registry(db_url)
    # seed_registry's router1 holds 172.16.1.2
    assert any(p.device_owner == "network:router_interface" for p in reg.list_ports({"network_id": [net.id]}))
    view = source(reg).build()
    r1 = view.by_mac[codec.mac_bytes(MAC1)][0]
    assert (r1.ip_text, r1.hostname) == ("172.16.1.103", "vm1")
    assert view.by_mac[codec.mac_bytes(MAC2)][0].hostname == "host-172-16-1-104"
    # only the VMs' ports: a router interface port on the subnet is no reservation
    assert set(view.by_mac) == {codec.mac_bytes(MAC1), codec.mac_bytes(MAC2)}
    assert r1.subnet.server_id == codec.ip_bytes("172.16.1.99") and r1.subnet.local
    reg.close()


def test_a_port_change_replaces_that_ports_reservations_only(db_url):
    reg, net = seed_registry(db_url)
    src = source(reg)
    view = src.build()
    before = dict(view.by_mac)
    port = reg.create_port({"network_id": net.id, "mac_address": "fa:16:3e:00:00:55",
                            "fixed_ips": [{"ip_address": "172.16.1.110"}]})
    for port_id, hosts in src.port_hosts(view, [port.id]).items():
        assert replace_port(view, port_id, hosts)
    assert view.by_mac[codec.mac_bytes("fa:16:3e:00:00:55")][0].ip_text == "172.16.1.110"
    assert all(view.by_mac[mac] is reservations for mac, reservations in before.items())  # untouched objects
    reg.update_port(port.id, {"fixed_ips": [{"ip_address": "172.16.1.111"}]})
    for port_id, hosts in src.port_hosts(view, [port.id]).items():
        replace_port(view, port_id, hosts)
    assert [r.ip_text for r in view.by_mac[codec.mac_bytes("fa:16:3e:00:00:55")]] == ["172.16.1.111"]
    reg.delete_port(port.id)
    assert src.port_hosts(view, [port.id]) == {port.id: []}
    assert replace_port(view, port.id, [])
    assert codec.mac_bytes("fa:16:3e:00:00:55") not in view.by_mac and port.id not in view.by_port
    assert set(view.by_mac) == set(src.build().by_mac)
    reg.close()


def test_networks_by_name_id_or_interface_address(db_url):
    reg, net = seed_registry(db_url)
    assert [n.id for n in resolve_networks(reg, "phy_net")] == [net.id]
    assert [n.id for n in resolve_networks(reg, net.id)] == [net.id]
    assert [n.id for n in resolve_networks(reg, None, ADDRS)] == [net.id]
    with pytest.raises(LookupError, match="no network with name or id 'other'"):
        resolve_networks(reg, "other")
    with pytest.raises(LookupError, match="use --network"):
        resolve_networks(reg, None, [ipaddress.IPv4Interface("10.9.9.9/24")])
    reg.create_network({"name": "phy_net"})
    with pytest.raises(LookupError, match="ambiguous"):
        resolve_networks(reg, "phy_net")
    reg.close()


def test_exports_read_the_same_snapshot(db_url):
    reg, net = seed_registry(db_url)
    snap = collect(reg, resolve_networks(reg, "phy_net"))
    assert {(h.mac, h.ip) for h in snap.hosts} == {(MAC1, "172.16.1.103"), (MAC2, "172.16.1.104")}
    assert [s.cidr for s in snap.subnets] == ["172.16.1.0/24"]
    reg.close()


def test_the_running_service_follows_each_change_without_rebuilding(db_url, tmp_path):
    """The change feed drives the view (SQLite and PostgreSQL, bound to lo): a port created, renamed through its
    instance, moved and deleted is applied one port at a time (counted), a subnet change rebuilds (counted)."""
    need_root()  # SO_BINDTODEVICE
    reg, net = seed_registry(db_url)
    other = reg.create_network({"name": "elsewhere"})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mac = "fa:16:3e:00:00:66"

    def offer(svc) -> tuple[bytes, str]:
        reply = server.handle(codec.encode(codec.Message(op=1, chaddr=codec.mac_bytes(mac), options={
            53: b"\x01", 55: bytes([12])})), svc.view, time.time())
        if reply is None:
            return b"", ""
        decoded = codec.decode(reply.data)
        return decoded.yiaddr, decoded.options.get(12, b"").decode()

    async def until(predicate) -> None:
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        svc = DhcpService(source(reg), "lo", tmp_path / "journal", port=port)
        await svc.start()
        try:
            assert (svc.rebuilds, svc.port_updates) == (1, 0)
            vm = await asyncio.to_thread(reg.create_instance, {"name": "vm9", "hostname": "vm9"})
            created = await asyncio.to_thread(reg.create_port, {
                "network_id": net.id, "mac_address": mac, "device_id": vm.id,
                "fixed_ips": [{"ip_address": "172.16.1.111"}]})
            await until(lambda: offer(svc) == (codec.ip_bytes("172.16.1.111"), "vm9"))
            await asyncio.to_thread(reg.update_instance, vm.id, {"hostname": "renamed"})
            await until(lambda: offer(svc)[1] == "renamed")
            await asyncio.to_thread(reg.update_port, created.id, {"fixed_ips": [{"ip_address": "172.16.1.112"}]})
            await until(lambda: offer(svc)[0] == codec.ip_bytes("172.16.1.112"))
            # churn on another network costs this server nothing
            for _ in range(5):
                await asyncio.to_thread(reg.create_port, {"network_id": other.id})
            await asyncio.to_thread(reg.delete_port, created.id)
            await until(lambda: offer(svc) == (b"", ""))
            assert svc.rebuilds == 1 and svc.port_updates == 4  # create, rename, move, delete: one port each
            subnet = (await asyncio.to_thread(reg.list_subnets, {"network_id": [net.id]}))[0]
            await asyncio.to_thread(reg.update_subnet, subnet.id, {"dns_nameservers": ["172.16.1.53"]})
            await until(lambda: svc.rebuilds == 2)
        finally:
            await svc.stop()

    asyncio.run(scenario())
    reg.close()


def test_service_start_fails_readably_without_an_address_or_network(tmp_path):
    reg, _ = seed_registry(f"sqlite:///{tmp_path}/p.sqlite")
    bare = RegistrySource(reg, "pnbare0", None, Settings(), addresses=lambda _ifname: [])
    with pytest.raises(OSError, match="DHCP on pnbare0: interface pnbare0 has no IPv4 address"):
        asyncio.run(DhcpService(bare, "pnbare0", tmp_path / "j").start())
    with pytest.raises(OSError, match="no network with name or id 'nope'"):
        asyncio.run(DhcpService(source(reg, "nope"), "lo", tmp_path / "j").start())
    reg.close()


def test_view_over_the_remote_registry_matches_the_local_one(tmp_path):
    """A DHCP server on another host reads the registry through the networking API (RemoteRegistry)."""
    from provnet.api.thread import ApiThread
    from provnet.registry.remote import RemoteRegistry

    local, net = seed_registry(f"sqlite:///{tmp_path}/p.sqlite")
    with ApiThread(local) as api:
        remote = RemoteRegistry(api.url)
        try:
            src = source(remote)
            view = src.build()
            want = source(local).build()
            assert {m: r[0].blob_routes for m, r in view.by_mac.items()} == \
                {m: r[0].blob_routes for m, r in want.by_mac.items()}
            new = local.create_port({"network_id": net.id, "mac_address": "fa:16:3e:00:00:58",
                                     "fixed_ips": [{"ip_address": "172.16.1.112"}]})
            batch = remote.changes_since(view.revision)  # what a remote DHCP server's feed reads
            assert [(c.kind, c.id, c.op) for c in batch.changes] == [("port", new.id, "create")]
            for port_id, hosts in src.port_hosts(view, [new.id]).items():
                replace_port(view, port_id, hosts)
            assert codec.mac_bytes("fa:16:3e:00:00:58") in view.by_mac
        finally:
            remote.close()
    local.close()
