# IPv6 at the metadata edge (issue 12 item 2), the parts that need no namespace: the EUI-64 reader (hostile
# addresses), `--bind` with a scoped link-local address, the netlink answers the proxy reads (hostile bytes), the
# agent identifying link-local and global IPv6 sources against a real registry and API, and one policy per VM across
# both families (connection cap and rate limit). Real namespaces: test_metadata_ipv6_netns.py.
from __future__ import annotations

import socket
import struct

import pytest
from cli_run import Cli, free_port
from metadata_chain import Chain, LoopThread, agent_get, build_seed
from pyroute2.netlink import NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ndmsg import NUD_FAILED, NUD_INCOMPLETE, NUD_NOARP, NUD_REACHABLE, NUD_STALE, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from provnet.metadata.attribution import is_link_local, mac_from_link_local
from provnet.metadata.neighbours import SOURCE_MAC_HEADER, mac_in_reply, on_link_device
from provnet.metadata.ratelimit import RateLimiter, Window
from provnet.metadata.serving import HttpServer, Response, parse_bind
from provnet.registry import open_registry

MAC_HEADER = SOURCE_MAC_HEADER


def eui64(mac: str, prefix: str = "fe80::") -> str:
    """The modified EUI-64 address of `mac` under `prefix` (written out here, independently of the code)."""
    b = bytes.fromhex(mac.replace(":", ""))
    words = [(b[0] ^ 2) << 8 | b[1], b[2] << 8 | 0xFF, 0xFE << 8 | b[3], b[4] << 8 | b[5]]
    return prefix + ":".join(f"{w:x}" for w in words)


# ---- EUI-64 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "mac"), [
    ("fe80::f816:3eff:fe12:3456", "fa:16:3e:12:34:56"),
    ("FE80::F816:3EFF:FE12:3456", "fa:16:3e:12:34:56"),  # any case
    ("fe80::f816:3eff:fe12:3456%eth0", "fa:16:3e:12:34:56"),  # a zone is not part of the address
    ("fe80::5054:ff:fe00:1", "52:54:00:00:00:01"),  # a locally administered MAC: the bit is flipped back
    ("fe80::200:ff:fe00:1", "00:00:00:00:00:01"),
    ("fe80::1", None),  # short: a hand-made address
    ("fe80::", None),
    ("fe80::1c2d:3e4f:5a6b:7c8d", None),  # stable privacy / temporary: no ff:fe in the middle
    ("fe80::200:ff:fe00:0", None),  # all zeros
    ("fe80::300:5eff:fe00:1", None),  # 01:00:5e:00:00:01, a multicast MAC
    ("fe80::fdff:ffff:feff:ffff", None),  # ff:ff:ff:ff:ff:ff
    ("2001:db8::f816:3eff:fe12:3456", None),  # global: identified by its address, not its MAC
    ("ff02::1", None),
    ("169.254.169.254", None),
    ("::ffff:169.254.1.1", None),
    ("", None), ("zz", None), ("fe80::1::2", None), ("fe80:" * 20, None), ("fe80::%", None),
])
def test_the_mac_is_read_only_from_a_real_eui64_link_local_address(address, mac):
    assert mac_from_link_local(address) == mac


def test_the_reader_agrees_with_eui64_written_out():
    for mac in ("fa:16:3e:00:00:01", "02:42:ac:11:00:02", "00:1b:21:3a:4f:5e", "fe:ff:ff:ff:ff:fe"):
        assert mac_from_link_local(eui64(mac)) == mac


@pytest.mark.parametrize(("address", "expected"), [
    ("fe80::1", True), ("febf::1", True), ("fe80::1%eth0", True), ("fec0::1", False), ("2001:db8::1", False),
    ("169.254.169.254", False), ("", False), ("x", False)])
def test_link_local_means_ipv6_fe80_10(address, expected):
    assert is_link_local(address) is expected


# ---- --bind ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "hosts"), [
    ("0.0.0.0", ["0.0.0.0"]),
    ("0.0.0.0,::", ["0.0.0.0", "::"]),
    ("169.254.169.254, FE80::A9FE:A9FE%qr-1a2b3c4d-5e", ["169.254.169.254", "fe80::a9fe:a9fe%qr-1a2b3c4d-5e"]),
    ("fe80::a9fe:a9fe%7", ["fe80::a9fe:a9fe%7"]),
    ("127.0.0.1,", ["127.0.0.1"]),
])
def test_bind_takes_addresses_and_scoped_link_local_ones(text, hosts):
    assert parse_bind(text) == hosts


@pytest.mark.parametrize(("text", "says"), [
    ("", "no address"),
    (" , ", "no address"),
    ("fe80::a9fe:a9fe", "name its device"),
    ("169.254.169.254%eth0", "only after an IPv6 link-local"),
    ("2001:db8::1%eth0", "only after an IPv6 link-local"),
    ("fe80::1%", "not a device name"),
    ("fe80::1%a/b", "not a device name"),
    ("fe80::1%..", "not a device name"),
    ("fe80::1%" + "x" * 16, "not a device name"),
    ("fe80::1%eth0%eth1", "not a device name"),
    ("metadata.local", "not an IP address"),
    ("0.0.0.0;rm -rf /", "not an IP address"),
    ("::,0::0", "given twice"),
])
def test_bind_refuses_garbage_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_bind(text)


def test_the_proxy_command_refuses_a_bad_bind_with_a_usage_error(tmp_path):
    cli = Cli("--state-path", str(tmp_path))
    err = cli.fails("metadata-proxy --router-id r1 --bind fe80::a9fe:a9fe", code=2)
    assert "--bind" in err and "name its device" in err
    err = cli.fails(["metadata-proxy", "--router-id", "r1", "--bind", "10.0.0.1%eth0"], code=2)
    assert "only after an IPv6 link-local" in err


def test_listening_on_a_device_that_is_not_there_names_it():
    loop = LoopThread()
    server = HttpServer(lambda req, peer: Response(200))
    try:
        with pytest.raises(OSError, match="no device pnnosuchdev0 in this network namespace"):
            loop.run(server.listen_tcp("fe80::a9fe:a9fe%pnnosuchdev0", 0))
    finally:
        loop.run(server.close())
        loop.close()


# ---- what the kernel answers, hostile bytes included ----------------------------------------------------------

def neigh_answer(sequence: int, state: int, mac: str | None, kind: int = RTM_NEWNEIGH) -> bytes:
    msg = ndmsg()
    msg["family"] = socket.AF_INET
    msg["ifindex"] = 3
    msg["state"] = state
    msg["attrs"] = [("NDA_DST", "172.16.1.103")] + ([("NDA_LLADDR", mac)] if mac else [])
    msg["header"]["type"] = kind
    msg["header"]["sequence_number"] = sequence
    msg.encode()
    return bytes(msg.data)


def error_answer(sequence: int, code: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 16, 30, NLM_F_REQUEST, sequence, 0)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, sequence, 0) + body


@pytest.mark.parametrize(("data", "mac"), [
    (neigh_answer(7, NUD_REACHABLE, "FA:16:3E:00:00:01"), "fa:16:3e:00:00:01"),
    (neigh_answer(7, NUD_STALE, "fa:16:3e:00:00:01"), "fa:16:3e:00:00:01"),  # stale still names the sender
    (neigh_answer(7, NUD_INCOMPLETE, None), None),
    (neigh_answer(7, NUD_FAILED, "fa:16:3e:00:00:01"), None),
    (neigh_answer(7, NUD_NOARP, "00:00:00:00:00:00"), None),
    (neigh_answer(7, NUD_REACHABLE, "00:00:00:00:00:00"), None),
    (neigh_answer(6, NUD_REACHABLE, "fa:16:3e:00:00:01"), None),  # an old answer: another request's
    (neigh_answer(6, NUD_REACHABLE, "fa:16:3e:00:00:66") + neigh_answer(7, NUD_REACHABLE, "fa:16:3e:00:00:01"),
     "fa:16:3e:00:00:01"),
    (error_answer(7, 2), None),  # ENOENT: no entry
    (neigh_answer(7, NUD_REACHABLE, "fa:16:3e:00:00:01")[:20], None),  # truncated
    (b"", None), (b"\xff" * 64, None), (struct.pack("=IHHII", 0, RTM_NEWNEIGH, 0, 7, 0) * 3, None),
])
def test_a_neighbour_answer_gives_a_mac_only_when_the_entry_holds_one(data, mac):
    assert mac_in_reply(data, 7) == mac


def route_answer(sequence: int, oif: int, gateway: str | None = None, kind: int = 1) -> bytes:
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 32
    msg["type"] = kind
    msg["attrs"] = [("RTA_DST", "172.16.1.103"), ("RTA_OIF", oif)] + ([("RTA_GATEWAY", gateway)] if gateway else [])
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["sequence_number"] = sequence
    msg.encode()
    return bytes(msg.data)


def test_only_an_on_link_route_names_the_device():
    assert on_link_device(route_answer(3, 5), 3) == 5
    assert on_link_device(route_answer(3, 5, gateway="172.16.1.1"), 3) == 0  # routed: the MAC is the router's
    assert on_link_device(route_answer(3, 1, kind=2), 3) == 0  # local (our own address)
    assert on_link_device(route_answer(3, 5), 4) == 0
    assert on_link_device(error_answer(3, 101), 3) == 0
    assert on_link_device(route_answer(3, 5)[:30], 3) == 0


# ---- the agent: who an IPv6 source is -------------------------------------------------------------------------

V6_CIDR = "2001:db8:1::/64"


@pytest.fixture
def v6(tmp_path):
    """The seed with an IPv6 subnet on its network, vm1 and vm2 with an IPv6 fixed IP each, and the chain."""
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    seed = build_seed(registry)
    subnet = registry.create_subnet({"network_id": seed.network_id, "cidr": V6_CIDR, "ip_version": 6,
                                     "enable_dhcp": False, "gateway_ip": "2001:db8:1::1"})
    for n, vm in enumerate(("vm1", "vm2")):
        port = registry.get_port(seed.ports[vm])
        registry.update_port(port.id, {"fixed_ips": [*({"subnet_id": f.subnet_id, "ip_address": f.ip_address}
                                                       for f in port.fixed_ips),
                                                     {"subnet_id": subnet.id, "ip_address": f"2001:db8:1::{n + 10}"}]})
    chain = Chain(registry, tmp_path)
    macs = {vm: registry.get_port(seed.ports[vm]).mac_address for vm in ("vm1", "vm2")}
    yield registry, seed, chain, macs
    chain.close()
    registry.close()


def ask(chain, seed, address: str, mac: str | None = None, headers=()):
    extra = [(MAC_HEADER, mac)] if mac else []
    return agent_get(chain, "/openstack/latest/meta_data.json",
                     [("X-Forwarded-For", address), ("X-Neutron-Router-ID", seed.router_id), *extra, *headers])


def test_an_eui64_link_local_source_is_its_ports_vm_with_or_without_the_header(v6):
    _, seed, chain, macs = v6
    for mac in (None, macs["vm1"]):
        got = ask(chain, seed, eui64(macs["vm1"]), mac)
        assert got.status == 200 and seed.instances["vm1"] in got.text
    assert seed.instances["vm2"] in ask(chain, seed, eui64(macs["vm2"])).text


def test_a_stable_privacy_source_is_found_by_the_mac_the_proxy_read(v6):
    _, seed, chain, macs = v6
    address = "fe80::1c2d:3e4f:5a6b:7c8d"
    got = ask(chain, seed, address, macs["vm2"])
    assert got.status == 200 and seed.instances["vm2"] in got.text
    # the same address from another MAC (the address moved): that VM's answer, not the cached one
    got = ask(chain, seed, address, macs["vm1"].upper())
    assert got.status == 200 and seed.instances["vm1"] in got.text


def test_a_stable_privacy_source_without_the_header_is_404_saying_why(v6):
    _, seed, chain, macs = v6
    got = ask(chain, seed, "fe80::1c2d:3e4f:5a6b:7c8d")
    assert got.status == 404
    assert "is not EUI-64" in got.text and "could not read the MAC" in got.text
    assert seed.instances["vm1"] not in got.text and seed.instances["vm2"] not in got.text


def test_a_link_local_source_of_a_mac_without_a_port_is_404(v6):
    _, seed, chain, _ = v6
    got = ask(chain, seed, "fe80::1c2d:3e4f:5a6b:7c8d", "02:00:00:00:00:66")
    assert got.status == 404 and "no port has MAC 02:00:00:00:00:66" in got.text


def test_a_guest_on_a_neighbours_link_local_address_is_refused(v6):
    _, seed, chain, macs = v6
    got = ask(chain, seed, eui64(macs["vm1"]), "02:00:00:00:00:66")
    assert got.status == 404 and f"belongs to MAC {macs['vm1']}, not to 02:00:00:00:00:66" in got.text
    assert seed.instances["vm1"] not in got.text
    # even when the thief's own MAC has a port: it gets nothing of the neighbour's (nor its own, from that address)
    got = ask(chain, seed, eui64(macs["vm1"]), macs["vm2"])
    assert got.status == 404 and seed.instances["vm1"] not in got.text


def test_a_global_ipv6_source_is_found_by_its_address_and_the_mac_checked(v6):
    _, seed, chain, macs = v6
    got = ask(chain, seed, "2001:db8:1::10")
    assert got.status == 200 and seed.instances["vm1"] in got.text
    got = ask(chain, seed, "2001:DB8:1:0::10", macs["vm1"])  # any spelling of the address
    assert got.status == 200 and seed.instances["vm1"] in got.text
    got = ask(chain, seed, "2001:db8:1::10", macs["vm2"])  # vm2 took vm1's IPv6 address
    assert got.status == 404 and f"does not have MAC {macs['vm2']}" in got.text
    assert ask(chain, seed, "2001:db8:1::99").status == 404


@pytest.mark.parametrize("headers", [
    [(MAC_HEADER, "zz:zz:zz:zz:zz:zz")], [(MAC_HEADER, "fa:16:3e:00:00:01,fa:16:3e:00:00:02")],
    [(MAC_HEADER, "fa:16:3e:00:00:01"), (MAC_HEADER, "fa:16:3e:00:00:01")], [(MAC_HEADER, "fa163e000001")],
    [(MAC_HEADER, "")]])
def test_a_malformed_mac_header_is_400(v6, headers):
    _, seed, chain, _ = v6
    got = ask(chain, seed, "fe80::1c2d:3e4f:5a6b:7c8d", headers=headers)
    assert got.status == 400 and MAC_HEADER in got.text


# ---- one policy per VM across IPv4 and IPv6 -------------------------------------------------------------------

def test_the_agents_rate_limit_counts_a_vms_ipv4_and_ipv6_requests_together(tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    seed = build_seed(registry)
    chain = Chain(registry, tmp_path, rate_limiter=RateLimiter([Window(60, 4)]))
    try:
        mac = registry.get_port(seed.ports["vm1"]).mac_address
        other = registry.get_port(seed.ports["vm2"]).mac_address
        statuses = [ask(chain, seed, address, mac).status
                    for address in ("172.16.1.103", eui64(mac), "172.16.1.103", "fe80::1c2d:3e4f:5a6b:7c8d")]
        assert statuses == [200] * 4
        assert ask(chain, seed, eui64(mac), mac).status == 429  # the fifth, whichever family
        assert ask(chain, seed, "172.16.1.103", mac).status == 429
        assert ask(chain, seed, "172.16.1.104", other).status == 200  # its neighbour has its own count
    finally:
        chain.close()
        registry.close()


def test_the_edge_counts_a_sources_connections_by_mac_across_families():
    """`identify` stands in for the kernel's neighbour table here (loopback has none); the namespaces test runs
    the real one."""
    loop = LoopThread()
    macs = {"127.0.0.1": "fa:16:3e:00:00:01", "::1": "fa:16:3e:00:00:01"}
    server = HttpServer(lambda req, peer: Response(200, peer.key.encode()), max_per_source=1,
                        identify=lambda address, ifindex: macs.get(address, ""))
    held: list[socket.socket] = []
    try:
        port = loop.run(server.listen_tcp("127.0.0.1,::1", free_port()))  # (port 0 would give each its own)
        v4 = socket.create_connection(("127.0.0.1", port), 5)
        held.append(v4)
        v4.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert v4.recv(200).endswith(b"fa:16:3e:00:00:01")
        v6 = socket.create_connection(("::1", port), 5)
        held.append(v6)
        assert v6.recv(200).startswith(b"HTTP/1.1 429")  # the same VM's second connection, over IPv6
        assert server.stats["refused_source"] == 1
        macs["::1"] = ""  # unknown MAC: the address is the source
        v6 = socket.create_connection(("::1", port), 5)
        held.append(v6)
        v6.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert v6.recv(200).endswith(b"::1")
    finally:
        for sock in held:
            sock.close()
        loop.run(server.close())
        loop.close()


# ---- router mode's IPv6 rules (pure; applied in namespaces in test_metadata_ipv6_netns.py) ----------------------

def test_the_ipv6_ruleset_is_the_ipv4_one_for_fe80_a9fe_a9fe():
    from provnet.dataplane import l3

    v4, v6 = l3.metadata_ruleset(9697), l3.metadata_ruleset(9697, ipv6=True)
    assert [c.name for c in v4.chains] == [c.name for c in v6.chains] and v4.jumps == v6.jumps
    nat = next(c for c in v6.chains if c.table == "nat")
    assert nat.rules == ("-d fe80::a9fe:a9fe/128 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697",)
    assert [c.rules for c in v6.chains if c.table == "filter"] == [c.rules for c in v4.chains if c.table == "filter"]


def test_the_requests_are_what_pyroute2_reads_them_as():
    """The requests are packed by hand (pyroute2's classes are too slow per connection): its decoder agrees."""
    from pyroute2.netlink.rtnl import RTM_GETNEIGH, RTM_GETROUTE

    from provnet.metadata.neighbours import neighbour_request, route_request

    msg = ndmsg(neighbour_request("fe80::f816:3eff:fe00:6", 7, 41))
    msg.decode()
    assert (msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"]) == \
        (RTM_GETNEIGH, NLM_F_REQUEST, 41)
    assert (msg["family"], msg["ifindex"], msg.get_attr("NDA_DST")) == (socket.AF_INET6, 7, "fe80::f816:3eff:fe00:6")
    msg = rtmsg(route_request("172.16.1.103", 42))
    msg.decode()
    assert (msg["header"]["type"], msg["header"]["sequence_number"]) == (RTM_GETROUTE, 42)
    assert (msg["family"], msg["dst_len"], msg.get_attr("RTA_DST")) == (socket.AF_INET, 32, "172.16.1.103")
