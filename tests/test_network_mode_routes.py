# Network mode end to end: DHCP, the exports and network_data.json route 169.254.169.254 via the metadata port.
from __future__ import annotations

import ipaddress
import json
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
from conftest import PG_URL, need_root, need_tool
from nstools import LoopbackRelay, addresses, make_lan, routes, sh, wait_udp_listen

from provnet.dhcp import codec, export
from provnet.dhcp.view import Settings, build_view, collect
from provnet.metadata import content
from provnet.metadata.api import load_source
from provnet.model.resources import METADATA_PORT_OWNER
from provnet.registry import open_registry
from provnet.registry.sql import SqlRegistry

PROVNET = str(Path(sys.executable).with_name("provnet"))
MAC, MAC2 = "fa:16:3e:00:00:03", "fa:16:3e:00:00:04"
NETWORK_TABLE = {"0.0.0.0/0 via 172.16.1.1", "169.254.169.254/32 via 172.16.1.102", "172.16.1.0/24 connected"}
ROUTER_TABLE = {"0.0.0.0/0 via 172.16.1.1", "169.254.169.254/32 via 172.16.1.2", "172.16.1.0/24 connected"}
EXPECTED = [("169.254.169.254/32", "172.16.1.102"), ("0.0.0.0/0", "172.16.1.1")]


def seed_without_router(db_url: str) -> tuple[SqlRegistry, str, str, str]:
    """The seed's network and subnet, one VM on 172.16.1.110, and no router: network mode under auto."""
    reg = SqlRegistry(db_url)
    net = reg.create_network({"name": "phy_net", "provider:network_type": "flat",
                              "provider:physical_network": "physnet1", "router:external": True})
    subnet = reg.create_subnet({"network_id": net.id, "cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2",
                                "ip_version": 4, "enable_dhcp": False, "name": "phy_subnet_without_dhcp",
                                "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
                                "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}]})
    vm = reg.create_instance({"name": "vm1", "hostname": "vm1"})
    reg.create_port({"network_id": net.id, "mac_address": MAC, "fixed_ips": [{"ip_address": "172.16.1.110"}],
                     "device_id": vm.id, "device_owner": "compute:nova"})
    [md] = reg.list_ports({"device_owner": [METADATA_PORT_OWNER]})
    assert md.fixed_ips[0].ip_address == "172.16.1.102"
    return reg, net.id, subnet.id, vm.id


def _pairs(routes) -> list[tuple[str, str]]:
    return [(str(d), str(h)) for d, h in routes]


def test_dhcp_the_exports_and_network_data_json_say_the_same_in_network_mode(db_url, tmp_path):
    reg, net_id, subnet_id, vm_id = seed_without_router(db_url)
    try:
        settings = Settings(metadata_mode="auto")
        snap = collect(reg, [reg.get_network(net_id)], settings.metadata_mode)
        # provnet's DHCP server: the option 121/249 value its view encodes for the subnet
        view = build_view(snap, settings)
        dhcp = _pairs(codec.parse_classless_routes(view.infos[subnet_id].routes))
        # the exports, read back from the files each server reads
        files = {}
        for fmt in export.FORMATS:
            files.update(export.render(fmt, snap, settings, "lo", str(tmp_path / "out")))
        line = next(x for x in files["dnsmasq.opts"].splitlines() if "classless-static-route" in x)
        numbers = line.split("classless-static-route,", 1)[1].split(",")
        dnsmasq = list(zip(numbers[::2], numbers[1::2], strict=True))
        assert f"tag:tag0,249,{','.join(numbers)}" in files["dnsmasq.opts"]
        kea_options = json.loads(files["kea-dhcp4.json"])["Dhcp4"]["subnet4"][0]["option-data"]
        kea = {o["code"]: _pairs(codec.parse_classless_routes(bytes.fromhex(o["data"])))
               for o in kea_options if "code" in o}
        isc_bytes = re.search(r"rfc3442-classless-static-routes ([0-9, ]+);", files["dhcpd.conf"]).group(1)
        isc = _pairs(codec.parse_classless_routes(bytes(int(b) for b in isc_bytes.split(","))))
        # network_data.json as the metadata API renders it for the VM
        source = load_source(reg, vm_id, "novalocal", None, None, metadata_mode="auto")
        [network] = content.network_data(source)["networks"]
        md = [(str(ipaddress.IPv4Network(f"{r['network']}/{r['netmask']}")), r["gateway"]) for r in network["routes"]]
        assert dhcp == dnsmasq == kea[121] == kea[249] == isc == md == EXPECTED
        # and the real servers accept those files
        need_tool("dnsmasq", "kea-dhcp4")
        out = tmp_path / "out"
        out.mkdir()
        for name, text in files.items():
            (out / name).write_text(text)
        argv = shlex.split(files["dnsmasq.cmdline"])
        res = sh(argv[0], "--test", *argv[1:], check=False)
        assert res.returncode == 0 and "syntax check OK" in res.stderr + res.stdout, res.stderr
        res = sh("kea-dhcp4", "-t", str(out / "kea-dhcp4.json"), check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        reg.close()


def test_router_mode_processes_keep_the_router_route(db_url):
    """The same store read by a process configured with [metadata] mode = router: the seed's route."""
    reg, net_id, subnet_id, vm_id = seed_without_router(db_url)
    try:
        snap = collect(reg, [reg.get_network(net_id)], "router")
        assert snap.metadata_hops == {}
        routes_ = _pairs(codec.parse_classless_routes(build_view(snap, Settings()).infos[subnet_id].routes))
        assert routes_ == [("169.254.169.254/32", "172.16.1.2"), ("0.0.0.0/0", "172.16.1.1")]
    finally:
        reg.close()


@pytest.fixture
def lan(tmp_path):
    need_root()
    need_tool("busybox", "dhclient", "ip", "ss", "socat")
    lan = make_lan(tmp_path / "lan")
    yield lan
    lan.teardown()


def _renew_until(lan, client: str, table: set[str], deadline_s: float = 30) -> set[str]:
    """The client drops its address and asks again (udhcpc) until its routes are `table`: the server applies the
    change feed within moments (an event with a deadline, not a sleep)."""
    deadline = time.monotonic() + deadline_s
    while True:
        sh("ip", "-n", client, "-4", "addr", "flush", "dev", "eth0")
        res = lan.udhcpc(client)
        assert res.returncode == 0, res.stderr
        got = routes(client)
        if got == table or time.monotonic() > deadline:
            return got


@pytest.mark.root
def test_udhcpc_and_dhclient_route_metadata_via_the_metadata_port_and_follow_a_switch(lan, db_url, tmp_path):
    reg, net_id, subnet_id, _ = seed_without_router(db_url)
    reg.create_port({"network_id": net_id, "mac_address": MAC2, "device_owner": "compute:nova",
                     "fixed_ips": [{"ip_address": "172.16.1.111"}]})
    relay = None
    try:
        if db_url.startswith("postgresql"):  # the server runs in the namespace: relay the host's PostgreSQL in
            relay = LoopbackRelay(lan.server_ns, tmp_path / "relay")
            relay.add(int(re.search(r":(\d+)/", PG_URL).group(1)))
        proc = lan.spawn(lan.server_ns, PROVNET, "--db", db_url, "--state-path", str(tmp_path / "state"), "dhcp",
                         "--interface", lan.bridge, "--network", "phy_net", log=tmp_path / "server.log")
        wait_udp_listen(lan.server_ns, 67, proc)

        c1 = lan.add_client(MAC)
        res = lan.udhcpc(c1)
        assert res.returncode == 0, res.stderr
        assert addresses(c1) == ["172.16.1.110/24"]
        assert routes(c1) == NETWORK_TABLE
        c2 = lan.add_client(MAC2)
        res = lan.dhclient(c2)
        assert res.returncode == 0, res.stderr
        assert addresses(c2) == ["172.16.1.111/24"]
        assert routes(c2) == NETWORK_TABLE

        # a router interface takes the gateway: new leases route via it; the metadata port stays for old ones
        router = reg.create_router({"name": "r1"})
        reg.add_router_interface(router.id, subnet_id=subnet_id)
        assert _renew_until(lan, c1, ROUTER_TABLE) == ROUTER_TABLE
        assert len(reg.list_ports({"device_owner": [METADATA_PORT_OWNER]})) == 1
        assert routes(c2) == NETWORK_TABLE  # the VM that has not renewed keeps its route to the kept port
        reg.remove_router_interface(router.id, subnet_id=subnet_id)
        assert _renew_until(lan, c1, NETWORK_TABLE) == NETWORK_TABLE
    finally:
        if relay is not None:
            relay.close()
        reg.close()


def test_open_registry_passes_the_mode(tmp_path):
    reg = open_registry(f"sqlite:///{tmp_path}/p.sqlite", metadata_mode="network")
    try:
        assert reg.metadata_mode == "network"  # type: ignore[attr-defined]
    finally:
        reg.close()
