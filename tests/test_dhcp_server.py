# DHCP server logic over a view of the seed: who is answered, with which address and options, and where it goes.
from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from dhcp_seed import IPS, MACS, SERVER_IP, STRANGER, raw, seed_view
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions

from provnet.dhcp import codec, server
from provnet.dhcp.view import Settings

NOW = 1_700_000_000.0
SID = {54: codec.ip_bytes(SERVER_IP)}
SEED_ROUTES = ["169.254.169.254/32 via 172.16.1.2", "0.0.0.0/0 via 172.16.1.1"]


def answer(packet: bytes, view=None, counters=None):
    return server.handle(packet, view or seed_view(), NOW, counters)


def routes_of(value: bytes) -> list[str]:
    return [f"{d} via {r}" for d, r in codec.parse_classless_routes(value)]


def scapy_options(data: bytes) -> dict[int, bytes]:
    """Decode with scapy (independent of our codec) and re-encode each option's value with scapy's own fields."""
    out: dict[int, bytes] = {}
    for opt in BOOTP(data)[DHCP].options:
        if opt in ("end", "pad"):
            continue
        name, *values = opt
        if isinstance(name, int):
            code, field = name, None
        else:
            code, field = DHCPRevOptions[name]
        if field is None:
            value = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in values)
        elif code == 121:
            value = codec.classless_routes(tuple(r.split(":")) for r in values[0])
        else:
            value = b"".join(field.addfield(None, b"", v) for v in values)
        out[code] = out.get(code, b"") + value
    return out


def assert_scapy_agrees(data: bytes) -> None:
    ours = codec.decode(data)
    theirs = BOOTP(data)
    assert theirs.op == ours.op == codec.BOOTREPLY
    assert theirs.xid == ours.xid
    assert theirs.yiaddr == str(ipaddress.IPv4Address(ours.yiaddr))
    assert theirs.ciaddr == str(ipaddress.IPv4Address(ours.ciaddr))
    assert theirs.giaddr == str(ipaddress.IPv4Address(ours.giaddr))
    assert bytes(theirs.chaddr)[:6] == ours.mac
    assert theirs.flags == ours.flags
    assert scapy_options(data) == ours.options


def test_discover_from_a_port_gets_an_offer_of_its_fixed_ip_with_the_seed_options():
    reply = answer(raw(codec.DISCOVER, MACS["vm1"]))
    assert reply is not None and reply.kind == codec.OFFER
    assert reply.dest == ("255.255.255.255", 68)
    msg = codec.decode(reply.data)
    assert msg.yiaddr == codec.ip_bytes(IPS["vm1"])
    o = msg.options
    assert o[53] == b"\x02" and o[54] == codec.ip_bytes(SERVER_IP)
    assert o[1] == codec.ip_bytes("255.255.255.0")
    assert o[3] == codec.ip_bytes("172.16.1.1")  # the default route's next hop, the external router
    assert o[6] == codec.ip_bytes("172.16.1.1")
    assert o[12] == b"vm1"  # the instance's hostname
    assert o[15] == b"openstacklocal"
    assert o[26] == codec.u16(1500)
    assert o[28] == codec.ip_bytes("172.16.1.255")
    assert o[51] == codec.u32(86400)
    assert routes_of(o[121]) == SEED_ROUTES and o[249] == o[121]
    assert 33 not in o
    assert_scapy_agrees(reply.data)


def test_port_without_instance_gets_host_dash_name():
    msg = codec.decode(answer(raw(codec.DISCOVER, MACS["vm2"])).data)
    assert msg.options[12] == b"host-172-16-1-104"


def test_stranger_and_router_port_get_nothing_and_are_counted():
    c: Counter = Counter()
    assert answer(raw(codec.DISCOVER, STRANGER), counters=c) is None
    assert answer(raw(codec.DISCOVER, "fa:16:3e:00:00:02"), counters=c) is None  # the router's qr- port
    assert c["unknown", ""] == 2


def test_selecting_request_for_the_offered_address_is_acked_with_a_lease():
    req = raw(codec.REQUEST, MACS["vm1"], options={50: codec.ip_bytes(IPS["vm1"]), **SID})
    reply = answer(req)
    assert reply.kind == codec.ACK and reply.lease.state == "ack"
    assert reply.lease.expires == int(NOW) + 86400
    assert codec.decode(reply.data).yiaddr == codec.ip_bytes(IPS["vm1"])
    assert_scapy_agrees(reply.data)


def test_request_for_another_address_is_naked_and_broadcast():
    reply = answer(raw(codec.REQUEST, MACS["vm1"], options={50: codec.ip_bytes("172.16.1.100")}))
    assert reply.kind == codec.NAK and reply.lease is None
    assert reply.dest == ("255.255.255.255", 68)
    msg = codec.decode(reply.data)
    assert msg.yiaddr == codec.ZERO_IP and msg.options[54] == codec.ip_bytes(SERVER_IP)
    assert_scapy_agrees(reply.data)


def test_request_selecting_another_server_is_ignored():
    c: Counter = Counter()
    req = raw(codec.REQUEST, MACS["vm1"], options={50: codec.ip_bytes(IPS["vm1"]), 54: codec.ip_bytes("10.0.0.9")})
    assert answer(req, counters=c) is None and c["drop", "other_server"] == 1


def test_renewing_is_acked_by_unicast_to_ciaddr_and_wrong_ciaddr_naked():
    reply = answer(raw(codec.REQUEST, MACS["vm1"], ciaddr=IPS["vm1"]))
    assert reply.kind == codec.ACK and reply.dest == (IPS["vm1"], 68)
    assert codec.decode(reply.data).ciaddr == codec.ip_bytes(IPS["vm1"])
    assert answer(raw(codec.REQUEST, MACS["vm1"], ciaddr="172.16.1.120")).kind == codec.NAK


def test_request_without_any_address_is_dropped():
    c: Counter = Counter()
    assert answer(raw(codec.REQUEST, MACS["vm1"]), counters=c) is None and c["drop", "bad_request"] == 1


def test_relayed_discover_is_unicast_to_the_relay_with_option_82_echoed():
    rai = b"\x01\x03abc"
    reply = answer(raw(codec.DISCOVER, MACS["vm1"], giaddr="172.16.1.50", options={82: rai, 61: b"\x01id"}))
    assert reply.dest == ("172.16.1.50", 67)
    msg = codec.decode(reply.data)
    assert msg.giaddr == codec.ip_bytes("172.16.1.50")
    assert msg.options[82] == rai and msg.options[61] == b"\x01id"
    assert list(msg.options)[-1] == 82  # RFC 3046: relay agent information comes last
    assert_scapy_agrees(reply.data)


def test_relay_from_a_foreign_subnet_is_not_served():
    c: Counter = Counter()
    assert answer(raw(codec.DISCOVER, MACS["vm1"], giaddr="10.9.9.1"), counters=c) is None
    assert c["drop", "wrong_relay"] == 1


def test_relayed_nak_sets_the_broadcast_flag():
    reply = answer(raw(codec.REQUEST, MACS["vm1"], giaddr="172.16.1.50", options={50: codec.ip_bytes("1.2.3.4")}))
    assert reply.kind == codec.NAK and reply.dest == ("172.16.1.50", 67)
    assert codec.decode(reply.data).flags & codec.FLAG_BROADCAST


def test_inform_gets_options_without_address_or_lease_time():
    reply = answer(raw(codec.INFORM, MACS["vm1"], ciaddr=IPS["vm1"]))
    msg = codec.decode(reply.data)
    assert reply.kind == codec.ACK and reply.dest == (IPS["vm1"], 68) and reply.lease is None
    assert msg.yiaddr == codec.ZERO_IP and 51 not in msg.options
    assert routes_of(msg.options[121]) == SEED_ROUTES
    assert_scapy_agrees(reply.data)


def test_release_and_decline_are_journaled_not_answered():
    for kind, state in ((codec.RELEASE, "release"), (codec.DECLINE, "decline")):
        reply = answer(raw(kind, MACS["vm1"], ciaddr=IPS["vm1"], options=SID))
        assert reply.data is None and reply.lease.state == state


def test_routes_only_when_asked_if_force_routes_is_off():
    view = seed_view(Settings(force_routes=False))
    plain = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"], options={55: bytes((1, 3))}), view).data)
    assert 121 not in plain.options and 249 not in plain.options and plain.options[3]
    asked = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"], options={55: bytes((1, 249))}), view).data)
    assert routes_of(asked.options[249]) == SEED_ROUTES


def test_lease_time_setting_is_used():
    msg = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"]), seed_view(Settings(lease_time=7200))).data)
    assert msg.options[51] == codec.u32(7200) and msg.options[58] == codec.u32(3600)


@pytest.mark.parametrize("mutate", [
    lambda d: d[:239],  # truncated
    lambda d: b"\x02" + d[1:],  # a BOOTREPLY sent to port 67
    lambda d: d[:240] + b"\xff",  # no message type: BOOTP
    lambda d: d[:240] + b"\x35\x01\x63\xff",  # unknown message type
    lambda d: d[:240] + b"\x35\x02\x01\x01\xff",  # message type of the wrong length
    lambda d: d[:1] + b"\x06" + d[2:],  # not Ethernet
])
def test_garbage_gets_no_reply(mutate):
    c: Counter = Counter()
    assert answer(mutate(raw(codec.DISCOVER, MACS["vm1"])), counters=c) is None
    assert sum(v for k, v in c.items() if k[0] in ("drop", "unknown")) == 1


def test_bad_option_values_from_a_known_client_get_no_reply():
    for opts in ({50: b"\x01\x02"}, {54: b"\x01"}, {57: b"\x05"}):
        assert answer(raw(codec.REQUEST, MACS["vm1"], options=opts)) is None


def test_small_max_message_size_with_many_routes_uses_overload():
    from dhcp_seed import seed_network, seed_ports, seed_subnet

    from provnet.dhcp.view import build_view, snapshot_from
    from provnet.model.resources import HostRoute

    sub = seed_subnet()
    sub.host_routes += [HostRoute(f"10.{i}.0.0/16", "172.16.1.1") for i in range(20)]
    view = build_view(snapshot_from(1, [seed_network()], [sub], seed_ports(), {}), Settings(),
                      [ipaddress.IPv4Interface(f"{SERVER_IP}/24")])
    reply = answer(raw(codec.DISCOVER, MACS["vm1"]), view)
    assert len(reply.data) + 28 <= 576
    msg = codec.decode(reply.data)
    assert 52 in msg.options and len(codec.parse_classless_routes(msg.options[121])) == 22
    big = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"], options={57: codec.u16(1500)}), view).data)
    assert 52 not in big.options and big.options[121] == msg.options[121]


def test_reply_too_big_for_the_client_drops_249_then_ignores_the_limit():
    from dhcp_seed import seed_network, seed_ports, seed_subnet

    from provnet.dhcp.view import build_view, snapshot_from
    from provnet.model.resources import HostRoute

    for count, has_249 in ((30, False), (80, False)):
        sub = seed_subnet()
        sub.host_routes += [HostRoute(f"10.{i}.0.0/16", "172.16.1.1") for i in range(count)]
        view = build_view(snapshot_from(1, [seed_network()], [sub], seed_ports(), {}), Settings(),
                          [ipaddress.IPv4Interface(f"{SERVER_IP}/24")])
        msg = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"]), view).data)
        assert (249 in msg.options) == has_249
        assert len(codec.parse_classless_routes(msg.options[121])) == count + 2


def test_port_on_two_subnets_direct_gets_the_local_one_relayed_the_relays_one():
    from dhcp_seed import seed_network, seed_subnet

    from provnet.dhcp.view import build_view, snapshot_from
    from provnet.model.resources import FixedIP, Port, Subnet

    other = Subnet(id="sub-2", network_id="net-1", cidr="10.20.0.0/24", gateway_ip="10.20.0.1")
    v6 = Subnet(id="sub-6", network_id="net-1", cidr="2001:db8::/64", ip_version=6, gateway_ip="2001:db8::1")
    port = Port(id="p", network_id="net-1", mac_address=MACS["vm1"], device_owner="compute:nova",
                fixed_ips=[FixedIP("sub-2", "10.20.0.5"), FixedIP("sub-1", IPS["vm1"]),
                           FixedIP("sub-6", "2001:db8::5")])
    view = build_view(snapshot_from(1, [seed_network()], [seed_subnet(), other, v6], [port], {}), Settings(),
                      [ipaddress.IPv4Interface(f"{SERVER_IP}/24")])
    direct = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"]), view).data)
    assert direct.yiaddr == codec.ip_bytes(IPS["vm1"])
    relayed = codec.decode(answer(raw(codec.DISCOVER, MACS["vm1"], giaddr="10.20.0.1"), view).data)
    assert relayed.yiaddr == codec.ip_bytes("10.20.0.5")
    assert routes_of(relayed.options[121]) == ["0.0.0.0/0 via 10.20.0.1"]  # gateway is the router: no extra route
    assert relayed.options[1] == codec.ip_bytes("255.255.255.0") and relayed.options[3] == codec.ip_bytes("10.20.0.1")
    assert len(view.by_mac[codec.mac_bytes(MACS["vm1"])]) == 2  # the IPv6 address is no DHCPv4 reservation
