# Acceptance: `provnet dhcp` on a registry, real udhcpc/dhclient in namespaces, registry changes, kill -9 journal.
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_root, need_tool
from nstools import Lan, addresses, in_ns, make_lan, routes, sh, wait_udp_listen

from provnet.dhcp import codec
from provnet.registry import open_registry

pytestmark = pytest.mark.root
PROVNET = str(Path(sys.executable).with_name("provnet"))
SEED_TABLE = {"0.0.0.0/0 via 172.16.1.1", "169.254.169.254/32 via 172.16.1.2", "172.16.1.0/24 connected"}
MAC1, MAC2, STRANGER = "fa:16:3e:00:00:03", "fa:16:3e:00:00:04", "fa:16:3e:99:99:99"


@pytest.fixture
def lan(tmp_path):
    need_root()
    need_tool("busybox", "dhclient", "ip", "ss")
    lan = make_lan(tmp_path / "lan")
    yield lan
    lan.teardown()


def seed_registry(db_url: str):
    """The seed's network in a real registry: phy_net, 172.16.1.0/24 via gateway 172.16.1.2 (router1's interface,
    so router mode under [metadata] mode = auto), default host route 172.16.1.1, and two VMs' ports (vm1 with an
    instance, the other without)."""
    reg = open_registry(db_url)
    net = reg.create_network({"name": "phy_net", "provider:network_type": "flat",
                              "provider:physical_network": "physnet1", "router:external": True})
    subnet = reg.create_subnet({"network_id": net.id, "cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2",
                                "ip_version": 4, "enable_dhcp": False, "name": "phy_subnet_without_dhcp",
                                "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
                                "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}]})
    reg.add_router_interface(reg.create_router({"name": "router1"}).id, subnet_id=subnet.id)
    vm1 = reg.create_instance({"name": "vm1", "hostname": "vm1"})
    reg.create_port({"network_id": net.id, "mac_address": MAC1, "fixed_ips": [{"ip_address": "172.16.1.103"}],
                     "device_id": vm1.id, "device_owner": "compute:nova"})
    reg.create_port({"network_id": net.id, "mac_address": MAC2, "fixed_ips": [{"ip_address": "172.16.1.104"}],
                     "device_owner": "compute:nova"})
    return reg, net


def start_server(lan: Lan, db: str, state: Path) -> subprocess.Popen:
    proc = lan.spawn(lan.server_ns, PROVNET, "--db", db, "--state-path", str(state), "dhcp", "--interface",
                     lan.bridge, "--network", "phy_net", log=state.parent / "server.log")
    wait_udp_listen(lan.server_ns, 67, proc)
    return proc


def leases(db: str, state: Path) -> dict[str, dict]:
    out = sh(PROVNET, "--db", db, "--state-path", str(state), "dhcp-leases", "--format", "json").stdout
    return {row["ip_address"]: row for row in json.loads(out)}


def test_udhcpc_and_dhclient_get_their_ports_ip_and_the_seed_routing_table(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    reg, _ = seed_registry(db)
    state = tmp_path / "state"
    start_server(lan, db, state)

    c1 = lan.add_client(MAC1)
    res = lan.udhcpc(c1)
    assert res.returncode == 0, res.stderr
    assert addresses(c1) == ["172.16.1.103/24"]
    assert routes(c1) == SEED_TABLE
    assert lan.lease(c1)["hostname"] == "vm1"

    c2 = lan.add_client(MAC2)
    res = lan.dhclient(c2)
    assert res.returncode == 0, res.stderr
    assert addresses(c2) == ["172.16.1.104/24"]
    assert routes(c2) == SEED_TABLE
    assert lan.lease(c2)["hostname"] == "host-172-16-1-104"

    held = leases(db, state)
    assert held["172.16.1.103"]["mac_address"] == MAC1 and held["172.16.1.103"]["state"] == "active"
    assert held["172.16.1.104"]["mac_address"] == MAC2
    reg.close()


def test_unknown_mac_gets_nothing(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    start_server(lan, db, tmp_path / "state")
    c = lan.add_client(STRANGER)
    res = sh(*in_ns(c, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "2", "-T", "1", "-i", "eth0",
                    "-s", str(lan.script(c))), check=False)
    assert res.returncode != 0
    assert addresses(c) == [] and lan.lease(c) is None


def test_port_created_while_running_is_served_and_a_deleted_one_refused(lan, tmp_path):
    # SQLite here: the server runs inside the namespace, where the host's PostgreSQL on 127.0.0.1 is not
    # reachable; following a PostgreSQL registry is tested in test_dhcp_view.py without namespaces.
    db_url = f"sqlite:///{tmp_path}/p.sqlite"
    reg, net = seed_registry(db_url)
    start_server(lan, db_url, tmp_path / "state")
    mac = "fa:16:3e:00:00:77"
    c = lan.add_client(mac)
    port = reg.create_port({"network_id": net.id, "mac_address": mac, "fixed_ips": [{"ip_address": "172.16.1.120"}],
                            "device_owner": "compute:nova"})
    # the running server follows the change feed: the new port's MAC gets its address (how fast is measured in
    # docs/benchmarks.md, not asserted here)
    res = sh(*in_ns(c, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "10", "-T", "1", "-i", "eth0",
                    "-O", "staticroutes", "-s", str(lan.script(c))), check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    assert addresses(c) == ["172.16.1.120/24"]

    reg.delete_port(port.id)
    sh("ip", "-n", c, "-4", "addr", "flush", "dev", "eth0")
    deadline = time.monotonic() + 30
    while True:  # refused once the server has the delete (an event, with a deadline)
        res = sh(*in_ns(c, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "1", "-T", "1", "-i", "eth0",
                        "-s", str(lan.script(c))), check=False)
        if res.returncode != 0:
            break
        sh("ip", "-n", c, "-4", "addr", "flush", "dev", "eth0")
        assert time.monotonic() < deadline, "the deleted port is still served"
    assert addresses(c) == []
    reg.close()


def _relay_requests(lan: Lan, macs_ips: list[tuple[str, str]], relay_ip: str) -> list[bytes]:
    """Act as a relay agent (giaddr = relay_ip) from a client namespace: send an INIT-REBOOT REQUEST per MAC and
    collect the ACKs. Returns the ACKed addresses, in order."""
    relay = lan.add_client("02:00:00:00:aa:01")
    sh("ip", "-n", relay, "addr", "add", f"{relay_ip}/24", "dev", "eth0")
    server_ip = lan.server_cidr.split("/")[0]
    code = f"""
import socket, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from dhcp_seed import raw
from provnet.dhcp import codec
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(({relay_ip!r}, 67)); s.settimeout(3)
acked = []
for i, (mac, ip) in enumerate({macs_ips!r}):
    s.sendto(raw(3, mac, xid=i + 1, giaddr={relay_ip!r}, options={{50: codec.ip_bytes(ip)}}), ({server_ip!r}, 67))
    msg = codec.decode(s.recv(2048))
    assert msg.options[53] == bytes([5]) and msg.xid == i + 1, msg
    acked.append(ip)
print(",".join(acked))
"""
    out = sh(*in_ns(relay, sys.executable, "-c", code), timeout=60)
    return out.stdout.strip().split(",")


def test_every_acked_lease_survives_kill_9(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    reg, net = seed_registry(db)
    pairs = [(f"fa:16:3e:00:01:{i:02x}", f"172.16.1.{130 + i}") for i in range(60)]
    for mac, ip in pairs:
        reg.create_port({"network_id": net.id, "mac_address": mac, "fixed_ips": [{"ip_address": ip}]})
    state = tmp_path / "state"
    proc = start_server(lan, db, state)
    acked = _relay_requests(lan, pairs, "172.16.1.50")
    os.kill(proc.pid, signal.SIGKILL)  # right after the last ACK arrived: no clean shutdown, no final fsync
    proc.wait(timeout=5)
    assert len(acked) == 60
    held = leases(db, state)
    assert set(acked) <= set(held)
    # restarted, the server keeps the journal (appends to it) and serves again
    start_server(lan, db, state)
    c = lan.add_client(MAC1)
    assert lan.udhcpc(c).returncode == 0
    held = leases(db, state)
    assert set(acked) | {"172.16.1.103"} <= set(held)
    reg.close()


def test_relayed_request_is_answered_to_the_relay(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    start_server(lan, db, tmp_path / "state")
    assert _relay_requests(lan, [(MAC1, "172.16.1.103")], "172.16.1.60") == ["172.16.1.103"]


def test_metrics_count_packets_replies_and_strangers(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    state = tmp_path / "state"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = lan.spawn(lan.server_ns, PROVNET, "--db", db, "--state-path", str(state), "dhcp", "--interface",
                     lan.bridge, "--metrics-port", str(port), log=tmp_path / "server.log")
    wait_udp_listen(lan.server_ns, 67, proc)
    assert lan.udhcpc(lan.add_client(MAC1)).returncode == 0
    stranger = lan.add_client(STRANGER)
    sh(*in_ns(stranger, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "1", "-T", "1", "-i", "eth0", "-s",
              str(lan.script(stranger))), check=False)
    text = sh(*in_ns(lan.server_ns, "curl", "-s", f"http://127.0.0.1:{port}/metrics")).stdout
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("provnet_dhcp")}
    iface = lan.bridge
    assert values[f'provnet_dhcp_received_total{{interface="{iface}",type="DISCOVER"}}'] >= 1
    assert values[f'provnet_dhcp_replies_total{{interface="{iface}",type="OFFER"}}'] >= 1
    assert values[f'provnet_dhcp_replies_total{{interface="{iface}",type="ACK"}}'] >= 1
    assert values[f'provnet_dhcp_unknown_clients_total{{interface="{iface}"}}'] >= 1


def test_server_options_from_config_file(lan, tmp_path):
    """[dhcp] interface/network/lease_time/dns_domain from a config file, no command-line options."""
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}/state\n[database]\nconnection = {db}\n"
                    f"[dhcp]\ninterface = {lan.bridge}\nnetwork = phy_net\nlease_time = 600\n"
                    "dns_domain = example.org\n")
    proc = lan.spawn(lan.server_ns, PROVNET, "--config-file", str(conf), "dhcp", log=tmp_path / "server.log")
    wait_udp_listen(lan.server_ns, 67, proc)
    c = lan.add_client(MAC1)
    script = lan.script(c)
    dump = script.with_name("env.sh")
    dump.write_text(f"#!/bin/sh\n[ \"$1\" = bound ] && env > {script.parent}/env.txt\nexec {script} \"$@\"\n")
    dump.chmod(0o755)
    res = sh(*in_ns(c, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "2", "-i", "eth0", "-s", str(dump)),
             check=False)
    assert res.returncode == 0, res.stderr
    env = dict(line.split("=", 1) for line in (script.parent / "env.txt").read_text().splitlines() if "=" in line)
    assert env["lease"] == "600" and env["domain"] == "example.org"
    assert codec.ip_bytes(env["serverid"]) == codec.ip_bytes("172.16.1.99")


def test_provnet_serve_runs_the_dhcp_server_when_configured(lan, tmp_path):
    """All-in-one: `provnet serve` with [dhcp] interface set answers DHCP (its API and metadata services listen
    on the namespace's own loopback)."""
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}/state\nmetadata_proxy_shared_secret = s3cret\n"
                    f"[database]\nconnection = {db}\n[dhcp]\ninterface = {lan.bridge}\nnetwork = phy_net\n")
    proc = lan.spawn(lan.server_ns, PROVNET, "--config-file", str(conf), "serve", log=tmp_path / "serve.log")
    wait_udp_listen(lan.server_ns, 67, proc, timeout=40)
    c = lan.add_client(MAC1)
    assert lan.udhcpc(c).returncode == 0
    assert addresses(c) == ["172.16.1.103/24"] and routes(c) == SEED_TABLE


def test_second_server_on_the_same_interface_is_refused(lan, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    start_server(lan, db, tmp_path / "state")
    res = sh(*in_ns(lan.server_ns, PROVNET, "--db", db, "--state-path", str(tmp_path / "state2"), "dhcp",
                    "--interface", lan.bridge, "--network", "phy_net"), check=False, timeout=60)
    assert res.returncode == 1
    assert f"DHCP on {lan.bridge}: cannot bind UDP 67: Address already in use" in res.stderr
    assert "Traceback" not in res.stderr


def test_client_that_does_not_ask_for_121_still_gets_the_routes(lan, tmp_path):
    """force_routes (default on): busybox udhcpc's default request list has no 121/249, it still ends up right."""
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    start_server(lan, db, tmp_path / "state")
    c = lan.add_client(MAC1)
    assert lan.udhcpc(c, ask_routes=False).returncode == 0
    assert routes(c) == SEED_TABLE
