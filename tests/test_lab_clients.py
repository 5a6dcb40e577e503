# The lab's DHCP client side against the seed's own server (dnsmasq with its options file): real udhcpc and
# dhclient in namespaces get the reserved IP and install the seed's routing table through the lab's script.
from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from conftest import need_root, need_tool, unique

from provnet.dataplane import netns
from provnet.lab import clients, plan
from provnet.lab.plan import route_table_text

MAC = "fa:16:3e:12:34:56"


@pytest.fixture
def segment(request, tmp_path):
    """br-phy in a fabric namespace, dnsmasq at 172.16.1.99 as in the seed (reservation for MAC), a VM namespace."""
    need_root()
    need_tool("dnsmasq", "ip")
    fab, srv, vm = unique("pn"), unique("pn"), unique("pn")
    procs: list[subprocess.Popen] = []

    def cleanup():
        for p in procs:
            p.kill()
            p.wait()
        for pid in netns.pids_in_namespace(vm):  # the DHCP client, if a test left it
            subprocess.run(["kill", "-9", str(pid)], check=False)
        for ns in (vm, srv, fab):
            netns.delete_namespace(ns)

    request.addfinalizer(cleanup)
    netns.ensure_namespace(fab)
    netns.ensure_bridge(fab, "br-phy")
    for ns, mac in ((srv, None), (vm, MAC)):
        netns.ensure_namespace(ns)
        dev = "pn" + uuid.uuid4().hex[:10]
        netns.ensure_veth(fab, dev, ns, "eth0", mac=mac)
        netns.attach_to_bridge(fab, dev, "br-phy")
    netns.ensure_address(srv, "eth0", plan.DHCP_SERVER_IP, 24)
    routes = "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1"
    procs.append(subprocess.Popen([
        "ip", "netns", "exec", srv, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
        "--bind-interfaces", "--interface=eth0", "--dhcp-range=172.16.1.0,static,255.255.255.0,2h",
        f"--dhcp-host={MAC},172.16.1.103", f"--dhcp-option=option:classless-static-route,{routes}",
        f"--dhcp-option=249,{routes}", "--dhcp-option=option:router,172.16.1.1",
        f"--dhcp-leasefile={tmp_path}/dnsmasq.leases", f"--pid-file={tmp_path}/dnsmasq.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    (tmp_path / "leases").mkdir()
    clients.write_client_files(tmp_path)
    return {"vm": vm, "dir": tmp_path, "procs": procs}


@pytest.mark.parametrize("client", ["udhcpc", "dhclient"])
def test_client_gets_reserved_ip_and_seed_routes(segment, client):
    need_tool("busybox" if client == "udhcpc" else "dhclient")
    vm, d = segment["vm"], segment["dir"]
    argv = clients.client_argv(client, d, "vm1")
    log = open(d / f"{client}.log", "wb")
    segment["procs"].append(subprocess.Popen(["ip", "netns", "exec", vm, *argv], stdout=log, stderr=log))
    lease: dict[str, str] = {}
    for _ in range(150):
        lease = clients.read_lease(d / "leases" / f"{vm}.lease")
        if lease.get("ip"):
            break
        time.sleep(0.1)
    assert lease.get("ip") == "172.16.1.103", (d / f"{client}.log").read_text()
    assert lease["server"] == plan.DHCP_SERVER_IP and lease["client"] == client
    routes = netns.ipv4_routes(vm)
    assert sorted((dst, gw) for dst, gw, _ in routes) == plan.expected_routes("172.16.1.103")
    assert route_table_text(routes).splitlines()[1:] == [
        "0.0.0.0         172.16.1.1  0.0.0.0          UG   eth0",
        "169.254.169.254 172.16.1.2  255.255.255.255  UGH  eth0",
        "172.16.1.0      0.0.0.0     255.255.255.0    U    eth0",
    ]


def test_client_argv_rejects_unknown_client(tmp_path):
    with pytest.raises(ValueError, match="udhcpc or dhclient"):
        clients.client_argv("pump", tmp_path, "vm1")


def test_read_lease_missing_and_partial(tmp_path):
    assert clients.read_lease(tmp_path / "nothing") == {}
    (tmp_path / "l").write_text("ip=172.16.1.103\ngarbage\nclassless=a=b\n")
    assert clients.read_lease(tmp_path / "l") == {"ip": "172.16.1.103", "classless": "a=b"}
