# Real namespaces, veths, a bridge and iptables: the L3 redirect, the 9697 drop, anti-spoofing; apply/remove idempotent.
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from conftest import need_root, need_tool, unique

from provnet.dataplane import firewall, iptables, l3, netns

PORT_MAC = "fa:16:3e:11:22:33"
VM_MAC = "fa:16:3e:44:55:66"


def sh(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def curl(ns: str, url: str) -> subprocess.CompletedProcess:
    return sh(ns, "curl", "-s", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", url)


@pytest.fixture
def topo(request):
    """fabric ns with br-phy, qrouter-<id> with qr- at 172.16.1.2, one VM ns at 172.16.1.103, an HTTP server
    on 9697 in the router namespace. Everything is removed afterwards, also on failure."""
    need_root()
    need_tool("ip", "iptables-restore", "curl")
    fab, vm = unique("pn"), unique("pn")
    router_id, port_id = str(uuid.uuid4()), str(uuid.uuid4())
    procs: list[subprocess.Popen] = []

    def cleanup():
        for p in procs:
            p.kill()
            p.wait()
        l3.unplug_router(router_id)
        netns.delete_namespace(vm)
        netns.delete_namespace(fab)

    request.addfinalizer(cleanup)
    netns.ensure_namespace(fab)
    netns.ensure_bridge(fab, "br-phy")
    ns = l3.plug_router_port(router_id, port_id, PORT_MAC, "172.16.1.0/24", "172.16.1.2", fab, "br-phy",
                             "pnr" + port_id[:11])
    netns.ensure_namespace(vm)
    vm_dev = "pnt" + uuid.uuid4().hex[:11]
    netns.ensure_veth(fab, vm_dev, vm, "eth0", mac=VM_MAC)
    netns.attach_to_bridge(fab, vm_dev, "br-phy")
    netns.ensure_address(vm, "eth0", "172.16.1.103", 24)
    netns.ensure_route(vm, "169.254.169.254/32", "172.16.1.2")
    procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "9697",
                                   "--bind", "0.0.0.0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for _ in range(50):
        if ":9697" in sh(ns, "ss", "-Hltn").stdout:  # (a curl would be dropped: INPUT drops unmarked 9697)
            break
        time.sleep(0.1)
    return {"fab": fab, "vm": vm, "router_ns": ns, "router_id": router_id, "vm_dev": vm_dev, "port_id": port_id}


def test_router_namespace_has_the_port_and_rules(topo):
    ns = topo["router_ns"]
    assert ns.startswith("qrouter-")
    dev = l3.router_port_device(topo["port_id"])
    assert "172.16.1.2/24" in netns.ipv4_addresses(ns, dev)
    link = sh(ns, "ip", "-o", "link", "show", dev).stdout
    assert PORT_MAC in link
    nat = sh(ns, "iptables-save", "-t", "nat").stdout
    assert "-A provnet-l3-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 " \
           "-j REDIRECT --to-ports 9697" in nat


def test_metadata_redirect_reaches_proxy_and_direct_9697_is_dropped(topo):
    vm = topo["vm"]
    assert curl(vm, "http://169.254.169.254/").stdout == "200"
    direct = curl(vm, "http://172.16.1.2:9697/")
    assert direct.returncode == 28, "a direct connection to 9697 must time out (dropped), not connect or be refused"
    # the drop is the rule's doing: without our rules the same connection goes through
    iptables.remove(topo["router_ns"], l3.PREFIX)
    assert curl(vm, "http://172.16.1.2:9697/").stdout == "200"
    assert curl(vm, "http://169.254.169.254/").returncode != 0  # and nothing redirects any more


def test_apply_is_idempotent_and_remove_is_complete(topo):
    ns = topo["router_ns"]
    # a rule of someone else's in the same namespace must survive everything we do
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22",
                    "-j", "ACCEPT"], check=True)
    once = sh(ns, "iptables-save").stdout
    iptables.apply(ns, l3.metadata_ruleset())
    iptables.apply(ns, l3.metadata_ruleset())
    twice = sh(ns, "iptables-save").stdout
    strip = lambda s: [x for x in s.splitlines() if not x.startswith("#")]  # noqa: E731
    assert strip(once) == strip(twice)
    iptables.remove(ns, l3.PREFIX)
    after = sh(ns, "iptables-save").stdout
    assert "provnet" not in after
    assert "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT" in after
    iptables.remove(ns, l3.PREFIX)  # removing again is a no-op


def test_port_firewall_allows_the_port_and_drops_spoofing(topo):
    fab, vm = topo["fab"], topo["vm"]
    netns.set_sysctl(fab, "net.bridge.bridge-nf-call-iptables", "1")
    port = firewall.PortFilter(device=topo["vm_dev"], mac=VM_MAC, ips=("172.16.1.103",))
    iptables.apply(fab, firewall.firewall_ruleset([port]))
    assert curl(vm, "http://169.254.169.254/").stdout == "200"
    # the VM takes an address that is not its port's: its traffic no longer passes the bridge
    netns.flush_addresses(vm, "eth0")
    netns.ensure_address(vm, "eth0", "172.16.1.120", 24)
    netns.ensure_route(vm, "169.254.169.254/32", "172.16.1.2")
    assert curl(vm, "http://169.254.169.254/").returncode == 28
    saved = sh(fab, "iptables-save", "-c").stdout
    assert any("Drop traffic without an IP/MAC allow rule." in line and not line.startswith("[0:")
               for line in saved.splitlines()), "the anti-spoofing DROP must have counted the packets"
    # a full sync without the port removes its chains; remove() leaves nothing of ours
    iptables.apply(fab, firewall.firewall_ruleset([]))
    chain = firewall.port_chains(port)[2].name
    assert chain.startswith("provnet-fw-s") and chain not in sh(fab, "iptables-save").stdout
    assert curl(vm, "http://169.254.169.254/").stdout == "200"
    iptables.remove(fab, firewall.PREFIX)
    assert "provnet" not in sh(fab, "iptables-save").stdout


def test_netns_calls_are_idempotent_and_errors_are_clear(topo):
    fab = topo["fab"]
    netns.ensure_bridge(fab, "br-phy")
    netns.ensure_address(topo["vm"], "eth0", "172.16.1.103", 24)
    assert netns.ipv4_addresses(topo["vm"], "eth0") == ["172.16.1.103/24"]
    with pytest.raises(netns.DataplaneError, match="does not exist"):
        netns.link_names(unique("pn"))
    with pytest.raises(netns.DataplaneError, match="no link"):
        netns.attach_to_bridge(fab, "pnnothere", "br-phy")
    assert ("169.254.169.254/32", "172.16.1.2", "eth0") in netns.ipv4_routes(topo["vm"])


RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 68))
s.settimeout(float(sys.argv[1]))
got = []
try:
    while True:
        got.append(s.recvfrom(100)[1][1])
except socket.timeout:
    pass
print(" ".join(map(str, sorted(set(got)))))
"""

SEND = """
import socket, sys
for sport in map(int, sys.argv[2:]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", sport))
    for _ in range(3):
        s.sendto(b"offer", (sys.argv[1], 68))
    s.close()
"""


def test_dhcp_server_replies_from_a_vm_are_dropped(topo):
    """Neutron's "Prevent DHCP Spoofing by VM.": udp 67 -> 68 from the VM never crosses the bridge."""
    fab, vm, router_ns = topo["fab"], topo["vm"], topo["router_ns"]
    netns.set_sysctl(fab, "net.bridge.bridge-nf-call-iptables", "1")
    port = firewall.PortFilter(device=topo["vm_dev"], mac=VM_MAC, ips=("172.16.1.103",))
    iptables.apply(fab, firewall.firewall_ruleset([port]))
    listener = subprocess.Popen(["ip", "netns", "exec", router_ns, sys.executable, "-c", RECEIVE, "3"],
                                stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(50):
            if ":68 " in sh(router_ns, "ss", "-Hlun").stdout:
                break
            time.sleep(0.05)
        sent = sh(vm, sys.executable, "-c", SEND, "172.16.1.2", "67", "1067")
        assert sent.returncode == 0, sent.stderr
        out, _ = listener.communicate(timeout=10)
    finally:
        listener.kill()
        listener.wait()
    assert out.split() == ["1067"], "the rogue offer (source port 67) must be dropped, the control (1067) pass"


def test_a_bad_rule_set_fails_clearly_and_changes_nothing(topo):
    """iptables-restore is one transaction: a rule the kernel refuses leaves the namespace as it was."""
    from provnet.dataplane.iptables import Chain, IptablesError, Jump, Ruleset

    ns = topo["router_ns"]
    before = [x for x in sh(ns, "iptables-save").stdout.splitlines() if not x.startswith("#")]
    bad = Ruleset(l3.PREFIX, (Chain("filter", f"{l3.PREFIX}INPUT", ("-p tcp --dport 22 -j ACCEPT",
                                                                     "-p nosuchproto -j DROP")),),
                  (Jump("filter", "INPUT", f"{l3.PREFIX}INPUT"),))
    with pytest.raises(IptablesError) as err:
        iptables.apply(ns, bad)
    assert "iptables-restore" in str(err.value) and "nosuchproto" in str(err.value)
    after = [x for x in sh(ns, "iptables-save").stdout.splitlines() if not x.startswith("#")]
    assert after == before
    assert curl(topo["vm"], "http://169.254.169.254/").stdout == "200"  # the metadata rules still work
