# Metadata over IPv6 in router mode with real parts: the router namespace as provnet.dataplane.l3 builds it (qr- with
# fe80::a9fe:a9fe/64, the ip6tables REDIRECT), the real `provnet metadata-proxy` process reading its namespace's
# neighbour table over netlink, the agent and API on a real registry, VM namespaces with an EUI-64 and a
# stable-privacy link-local address, a thief on a neighbour's addresses, and cloud-init's own code.
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest
from conftest import need, need_root, need_tool, unique
from metadata_chain import PROVNET_BIN, Chain, build_seed, wait_for

from provnet.dataplane import iptables, l3, netns
from provnet.metadata.attribution import mac_from_link_local
from provnet.registry import open_registry

pytestmark = pytest.mark.root

V6 = "fe80::a9fe:a9fe"
SECRET = "::1:2:3:4"  # the stable-privacy VM's stable_secret
PER_SOURCE = 3  # [metadata_proxy] max_connections_per_source of the world's proxy


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def link_local(ns: str, dev: str = "eth0", other_than: str = "") -> tuple[str, bool]:
    """The device's first link-local address (but `other_than`), and whether it is still tentative (duplicate
    address detection)."""
    for entry in json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev).stdout):
        for a in entry.get("addr_info", ()):
            if a.get("scope") == "link" and a["local"] != other_than:
                return a["local"], bool(a.get("tentative") or a.get("dadfailed"))
    return "", True


def usable(ns: str, dev: str, address: str) -> bool:
    out = sh("ip", "-n", ns, "-6", "addr", "show", "dev", dev).stdout
    return any(address in line and "tentative" not in line and "dadfailed" not in line for line in out.splitlines())


def eui64(mac: str) -> str:
    """The modified EUI-64 link-local address of `mac`, written out here independently of the code."""
    b = bytes.fromhex(mac.replace(":", ""))
    return "fe80::" + ":".join(f"{w:x}" for w in ((b[0] ^ 2) << 8 | b[1], b[2] << 8 | 0xFF, 0xFE00 | b[3],
                                                    b[4] << 8 | b[5]))


def add_vm(fab: str, name: str, mac: str | None, ipv4: str, stable_privacy: bool = False) -> str:
    ns = unique("pnv")
    netns.ensure_namespace(ns)
    if stable_privacy:  # before eth0 exists: it takes the namespace's defaults
        netns.set_sysctl(ns, "net.ipv6.conf.default.stable_secret", SECRET)
        netns.set_sysctl(ns, "net.ipv6.conf.default.addr_gen_mode", "2")
    outer = "pnt" + uuid.uuid4().hex[:11]
    netns.ensure_veth(fab, outer, ns, "eth0", mac=mac)
    netns.attach_to_bridge(fab, outer, "br-phy")
    netns.ensure_address(ns, "eth0", ipv4, 24)
    netns.ensure_route(ns, "169.254.169.254/32", "172.16.1.2")
    return ns


def in_vm(ns: str, code: str, *args: str, timeout: float = 60) -> dict:
    """Debian's python3 (cloud-init's) inside the VM; the last line it prints, as JSON."""
    proc = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# GET `url`, the socket bound to `source` first when given (a thief picks the address it stole)
FETCH = r'''
import json, socket, sys
host, port, path, source = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
s = socket.socket(info[0], socket.SOCK_STREAM)
s.settimeout(10)
if source:
    s.bind(socket.getaddrinfo(source, 0, info[0], socket.SOCK_STREAM)[0][4])
s.connect(info[4])
s.sendall(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(json.dumps({"status": int(head.split()[1]), "body": body.decode("utf-8", "replace")}))
'''


def fetch(ns: str, host: str, path: str = "/openstack/latest/meta_data.json", port: int = 80,
          source: str = "") -> dict:
    return in_vm(ns, FETCH, host, str(port), path, source)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    need_root()
    need_tool("ip", "iptables-restore", "ip6tables-restore", "curl")
    need(shutil.which("cloud-init") is not None, "needs Debian's cloud-init package")
    tmp = tmp_path_factory.mktemp("metadata-ipv6")
    state = tempfile.mkdtemp(prefix="pn-")  # short: unix socket paths are limited to 107 bytes
    registry = open_registry(f"sqlite:///{tmp}/provnet.sqlite")
    seed = build_seed(registry, {"eui": "172.16.1.103", "private": "172.16.1.104", "victim": "172.16.1.120"})
    chain = Chain(registry, tmp)
    fab = unique("pn")
    vms: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    (router_port,) = [p for p in registry.list_ports() if p.device_id == seed.router_id]
    try:
        netns.ensure_namespace(fab)
        netns.ensure_bridge(fab, "br-phy")
        router_ns = l3.plug_router_port(seed.router_id, router_port.id, router_port.mac_address, "172.16.1.0/24",
                                        "172.16.1.2", fab, "br-phy", "pnr" + router_port.id[:11])
        qr = l3.router_port_device(router_port.id)
        macs = {vm: registry.get_port(seed.ports[vm]).mac_address for vm in ("eui", "private", "victim")}
        vms["eui"] = add_vm(fab, "eui", macs["eui"], "172.16.1.103")
        vms["private"] = add_vm(fab, "private", macs["private"], "172.16.1.104", stable_privacy=True)
        vms["thief"] = add_vm(fab, "thief", None, "172.16.1.120")  # the victim's IPv4, the kernel's own MAC
        victim_ll = eui64(macs["victim"])  # the victim's EUI-64 link-local address, taken by the thief
        assert mac_from_link_local(victim_ll) == macs["victim"]
        sh("ip", "-n", vms["thief"], "addr", "add", f"{victim_ll}/64", "dev", "eth0", "nodad")
        conf = tmp / "provnet.conf"
        conf.write_text(f"[DEFAULT]\nstate_path = {state}\n[metadata_proxy]\n"
                        f"max_connections_per_source = {PER_SOURCE}\n")
        log = tmp / "proxy.log"
        procs.append(start_proxy(router_ns, conf, seed.router_id, chain.socket_path, log))
        wait_for(lambda: usable(router_ns, qr, V6), 10, f"{V6} on {qr} past duplicate address detection")
        for vm, ns in vms.items():
            wait_for(lambda ns=ns: not link_local(ns)[1], 10, f"{vm}'s link-local address")
        wait_for(lambda: len(listening(router_ns)) == 2, 15, "the proxy on 0.0.0.0:9697 and [::]:9697")
        yield {"registry": registry, "seed": seed, "chain": chain, "fab": fab, "vms": vms, "macs": macs,
               "router_ns": router_ns, "qr": qr, "conf": conf, "state": state, "log": log, "procs": procs,
               "victim_ll": victim_ll, "tmp": tmp}
    finally:
        for proc in procs:
            stop(proc)
        l3.unplug_router(seed.router_id)
        for ns in [*vms.values(), fab]:
            netns.delete_namespace(ns)
        chain.close()
        registry.close()
        shutil.rmtree(state, ignore_errors=True)


def start_proxy(router_ns: str, conf, router_id: str, socket_path: str, log, *extra: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(["ip", "netns", "exec", router_ns, PROVNET_BIN, "--debug", "--config-file",
                                 str(conf), "metadata-proxy", "--router-id", router_id, "--port", "9697",
                                 "--socket", socket_path, *extra], stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def listening(ns: str, port: int = 9697) -> list[str]:
    """The local addresses of TCP listeners on `port` (`ss`; a connection would be dropped: INPUT drops unmarked
    connections to the proxy's port)."""
    out = sh("ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}").stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def test_the_qr_device_holds_fe80_a9fe_a9fe_and_ip6tables_redirects_it(world):
    ns, qr = world["router_ns"], world["qr"]
    assert usable(ns, qr, f"{V6}/64")
    nat = sh("ip", "netns", "exec", ns, "ip6tables-save", "-t", "nat").stdout
    assert (f"-A provnet-l3-PREROUTING -d {V6}/128 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697"
            in nat)
    filt = sh("ip", "netns", "exec", ns, "ip6tables-save", "-t", "filter").stdout
    assert "-A provnet-l3-INPUT -p tcp -m tcp --dport 9697 -j DROP" in filt
    assert sorted(listening(ns)) == ["0.0.0.0:9697", "[::]:9697"]  # the proxy's default: both families
    # the router's namespace takes no address or route from router advertisements on the segment
    assert sh("ip", "netns", "exec", ns, "sysctl", "-n", f"net.ipv6.conf.{qr}.accept_ra").stdout.strip() == "0"


def test_the_ipv6_rules_are_idempotent_and_removed_with_the_owner(world):
    ns = world["router_ns"]
    strip = lambda text: [x for x in text.splitlines() if not x.startswith("#")]  # noqa: E731
    before = strip(sh("ip", "netns", "exec", ns, "ip6tables-save").stdout)
    l3.apply_metadata_rules(ns)
    netns.ensure_address(ns, world["qr"], V6, 64)  # again: no error, no second address
    assert strip(sh("ip", "netns", "exec", ns, "ip6tables-save").stdout) == before
    assert sh("ip", "-n", ns, "-6", "addr", "show", "dev", world["qr"]).stdout.count(V6) == 1
    iptables.remove(ns, l3.PREFIX, ipv6=True)
    assert "provnet" not in sh("ip", "netns", "exec", ns, "ip6tables-save").stdout
    assert "provnet-l3-" in sh("ip", "netns", "exec", ns, "iptables-save").stdout  # IPv4's are another table set
    l3.apply_metadata_rules(ns)
    assert strip(sh("ip", "netns", "exec", ns, "ip6tables-save").stdout) == before


@pytest.mark.parametrize("vm", ["eui", "private"])
def test_each_guest_gets_its_own_metadata_over_ipv6_link_local(world, vm):
    ns = world["vms"][vm]
    address, _ = link_local(ns)
    if vm == "eui":
        assert mac_from_link_local(address) == world["macs"]["eui"]
    else:  # stable privacy: nothing of the MAC in the address; only the proxy's neighbour read names the VM
        assert mac_from_link_local(address) is None
    curl = sh("ip", "netns", "exec", ns, "curl", "-sg", "--max-time", "10",
              f"http://[{V6}%eth0]/openstack/latest/meta_data.json")
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout)["uuid"] == world["seed"].instances[vm]
    # and over IPv4 from the same VM, the same instance
    assert json.loads(fetch(ns, "169.254.169.254")["body"])["uuid"] == world["seed"].instances[vm]


def test_a_thief_on_a_neighbours_ipv4_and_ipv6_addresses_gets_404_on_both(world):
    thief, victim = world["vms"]["thief"], world["seed"].instances["victim"]
    v4 = fetch(thief, "169.254.169.254", source="172.16.1.120")
    assert v4["status"] == 404 and "does not have MAC" in v4["body"] and victim not in v4["body"]
    v6 = fetch(thief, f"{V6}%eth0", source=f"{world['victim_ll']}%eth0")
    assert v6["status"] == 404, v6
    assert f"belongs to MAC {world['macs']['victim']}" in v6["body"] and victim not in v6["body"]
    # from its own link-local address it is a VM without a port: 404 as well, and never the victim's data
    own = fetch(thief, f"{V6}%eth0", source=f"{link_local(thief, other_than=world['victim_ll'])[0]}%eth0")
    assert own["status"] == 404 and "no port has MAC" in own["body"] and victim not in own["body"]


# cloud-init's own code inside the VM, each way it can be pointed at the IPv6 URL (argv: the URLs to try): its URL
# helper, its OpenStack reader, and the OpenStack datasource itself (metadata_urls, its resolvability filter, its
# probe and crawl; not its DMI detection or init-local DHCP), each result the instance uuid or the error
READ_V6 = r"""
import json, sys, tempfile
from cloudinit import distros, helpers, url_helper
from cloudinit.sources import DataSourceOpenStack
from cloudinit.sources.helpers import openstack
out = {}
for url in sys.argv[1:]:
    got = out[url] = {}
    def attempt(name, fn):
        try:
            got[name] = fn()
        except Exception as exc:
            got[name] = f"error {type(exc).__name__}: {exc}"
    attempt("readurl", lambda: json.loads(url_helper.readurl(url + "/openstack/latest/meta_data.json", timeout=5,
                                                             retries=0).contents)["uuid"])
    attempt("reader", lambda: openstack.MetadataReader(url, timeout=5, retries=0).read_v2()["metadata"]["uuid"])
    def datasource():
        tmp = tempfile.mkdtemp()
        paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
        cfg = {"datasource": {"OpenStack": {"metadata_urls": [url], "max_wait": 10, "timeout": 5, "retries": 0}}}
        ds = DataSourceOpenStack.DataSourceOpenStack(cfg, distros.fetch("debian")("debian", {}, paths), paths)
        result = ds._crawl_metadata()
        return result["metadata"]["uuid"] if ds.metadata_address == url else f"used {ds.metadata_address}"
    attempt("datasource", datasource)
print(json.dumps(out))
"""


@pytest.mark.parametrize("vm", ["eui", "private"])
def test_cloud_init_reads_meta_data_over_the_ipv6_link_local_url(world, vm):
    """cloud-init 22.4.2 (Debian 12) with the zone as RFC 6874 writes it (%25, the form in newer cloud-init's own
    default list) and as getaddrinfo takes it (%). Its URL helper and OpenStack reader take both; its datasource
    takes `%eth0` only: it drops a metadata_urls entry its host name does not resolve for (util.is_resolvable_url:
    getaddrinfo of "fe80::a9fe:a9fe%25eth0" fails) and falls back to http://169.254.169.254."""
    percent25, percent = f"http://[{V6}%25eth0]", f"http://[{V6}%eth0]"
    got = in_vm(world["vms"][vm], READ_V6, percent25, percent)
    uuid = world["seed"].instances[vm]
    assert got[percent25]["readurl"] == uuid and got[percent25]["reader"] == uuid, got
    assert got[percent]["readurl"] == uuid and got[percent]["reader"] == uuid, got
    assert got[percent]["datasource"] == uuid, got  # the whole datasource, over IPv6
    assert got[percent25]["datasource"] == "used http://169.254.169.254", got


# hold N connections over IPv4, then ask over IPv6 (argv: N, the IPv6 host) and print that answer
HOLD_THEN_ASK = r'''
import json, socket, sys
held = []
for _ in range(int(sys.argv[1])):  # each answered once (so the proxy has taken it), then kept open
    held.append(socket.create_connection(("169.254.169.254", 80), 10))
    held[-1].sendall(b"GET /openstack HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held[-1].recv(65536).startswith(b"HTTP/1.1 200")
s = socket.create_connection((sys.argv[2], 80), 10)
s.settimeout(10)  # (nothing sent: a refused connection is answered at once and closed, before any request)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(json.dumps({"head": data.split(b"\r\n")[0].decode(), "body": data.partition(b"\r\n\r\n")[2].decode()}))
'''


def test_a_vm_with_both_families_is_one_source_at_the_proxy(world):
    """max_connections_per_source counts the VM's MAC: IPv4 connections held, its IPv6 one over the cap is 429,
    while its neighbour is served."""
    got = in_vm(world["vms"]["eui"], HOLD_THEN_ASK, str(PER_SOURCE), f"{V6}%eth0")
    assert got["head"].startswith("HTTP/1.1 429"), got
    assert "and its other addresses" in got["body"]
    assert fetch(world["vms"]["private"], f"{V6}%eth0")["status"] == 200


def test_the_proxy_binds_a_scoped_link_local_address_directly(world):
    """Network mode's way (no redirect): --bind fe80::a9fe:a9fe%<device>, here on another port of the qr- device."""
    ns, qr = world["router_ns"], world["qr"]
    proc = start_proxy(ns, world["conf"], world["seed"].router_id, world["chain"].socket_path,
                       world["tmp"] / "direct.log", "--bind", f"{V6}%{qr}", "--port", "9698",
                       "--status-socket", f"{world['state']}/direct.sock")
    try:
        wait_for(lambda: listening(ns, 9698) == [f"[{V6}]%{qr}:9698"] or proc.poll() is not None, 15,
                 "the direct proxy")
        assert proc.poll() is None, (world["tmp"] / "direct.log").read_text()[-2000:]
        got = fetch(world["vms"]["private"], f"{V6}%eth0", port=9698)
        assert got["status"] == 200 and json.loads(got["body"])["uuid"] == world["seed"].instances["private"]
    finally:
        stop(proc)


def test_a_bind_on_a_device_that_is_not_there_fails_at_start_naming_it(world):
    log = world["tmp"] / "nodev.log"
    proc = start_proxy(world["router_ns"], world["conf"], world["seed"].router_id, world["chain"].socket_path,
                       log, "--bind", f"{V6}%pnnodev0", "--port", "9699",
                       "--status-socket", f"{world['state']}/nodev.sock")
    try:
        assert proc.wait(30) != 0
    finally:
        stop(proc)
    text = log.read_text()
    assert "there is no device pnnodev0 in this network namespace" in text and "Traceback" not in text


NEIGHBOURS = r'''
import json, socket, sys
from provnet.metadata.neighbours import NeighbourTable
t = NeighbourTable()
index = socket.if_nametoindex("pnx")
asks = [("10.9.0.5", 0), ("10.9.0.6", 0), ("10.9.0.7", 0), ("10.8.0.3", 0), ("127.0.0.1", 0), ("10.9.0.1", 0),
        ("fe80::f816:3eff:fe00:6", 0), ("fe80::f816:3eff:fe00:6", index), ("fe80::f816:3eff:fe00:6", 999),
        ("2001:db8::7", 0), ("garbage", 0)]
print(json.dumps([t.mac_of(a, i) for a, i in asks]))
'''


def test_the_neighbour_table_is_read_over_netlink_for_both_families(tmp_path):
    need_root()
    ns = unique("pn")
    try:
        netns.ensure_namespace(ns)
        for cmd in (["link", "add", "pnx", "type", "veth", "peer", "name", "pny"], ["link", "set", "pnx", "up"],
                    ["link", "set", "pny", "up"], ["addr", "add", "10.9.0.1/24", "dev", "pnx"],
                    ["addr", "add", "2001:db8::1/64", "dev", "pnx", "nodad"],
                    ["neigh", "add", "10.9.0.5", "lladdr", "FA:16:3E:00:00:05", "dev", "pnx", "nud", "permanent"],
                    ["neigh", "add", "fe80::f816:3eff:fe00:6", "lladdr", "fa:16:3e:00:00:06", "dev", "pnx",
                     "nud", "reachable"],
                    ["neigh", "add", "2001:db8::7", "lladdr", "fa:16:3e:00:00:07", "dev", "pnx", "nud", "stale"],
                    ["neigh", "add", "10.9.0.7", "dev", "pnx", "nud", "incomplete"],
                    ["route", "add", "10.8.0.0/24", "via", "10.9.0.5"],
                    ["neigh", "add", "10.8.0.3", "lladdr", "fa:16:3e:00:00:03", "dev", "pnx", "nud", "permanent"]):
            sh("ip", "-n", ns, *cmd)
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", NEIGHBOURS], capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == [
            "fa:16:3e:00:00:05",  # permanent, any case
            "",  # no entry
            "",  # incomplete: no MAC yet
            "",  # routed through 10.9.0.5: an entry there would be another box's, never the source's
            "", "",  # loopback, our own address
            "",  # link-local without the link it came in on
            "fa:16:3e:00:00:06",  # link-local on its link
            "",  # on a link that is not there
            "fa:16:3e:00:00:07",  # global IPv6, its link found by the route back
            "",
        ]
    finally:
        netns.delete_namespace(ns)
