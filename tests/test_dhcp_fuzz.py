# Fuzz: >= 1,000,000 mutated packets through decode + server logic; only DhcpDecodeError, never a reply to garbage.
#
# A plain mutation loop (no hypothesis overhead) so CI gets the million within a few minutes; seeded, so a failure
# prints the seed and iteration to replay. PROVNET_FUZZ_N overrides the count (default 1,000,000).
from __future__ import annotations

import os
import random
from collections import Counter

from dhcp_seed import IPS, MACS, SERVER_IP, STRANGER, raw, seed_view
from hypothesis import given, settings
from hypothesis import strategies as st

from provnet.dhcp import codec, server
from provnet.dhcp.codec import DhcpDecodeError

N = int(os.environ.get("PROVNET_FUZZ_N", "1000000"))
SID = {54: codec.ip_bytes(SERVER_IP)}


def corpus() -> list[bytes]:
    cid = {61: b"\x01" + codec.mac_bytes(MACS["vm1"]), 57: codec.u16(1500)}
    return [
        raw(codec.DISCOVER, MACS["vm1"], options=cid),
        raw(codec.DISCOVER, MACS["vm2"], giaddr="172.16.1.50", options={82: b"\x01\x04abcd"}),
        raw(codec.REQUEST, MACS["vm1"], options={50: codec.ip_bytes(IPS["vm1"]), **SID}),
        raw(codec.REQUEST, MACS["vm1"], ciaddr=IPS["vm1"]),
        raw(codec.REQUEST, MACS["vm2"], options={50: codec.ip_bytes(IPS["vm2"])}),
        raw(codec.INFORM, MACS["vm1"], ciaddr=IPS["vm1"]),
        raw(codec.RELEASE, MACS["vm1"], ciaddr=IPS["vm1"], options=SID),
        raw(codec.DECLINE, MACS["vm2"], options={50: codec.ip_bytes(IPS["vm2"]), **SID}),
        raw(codec.DISCOVER, STRANGER),
        codec.encode(codec.Message(op=1, chaddr=codec.mac_bytes(MACS["vm1"]), options={
            53: b"\x01", **{200 + i: bytes([i]) * 40 for i in range(9)}}), max_size=576),  # overloaded
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and b:  # flip bytes anywhere
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and len(b) > 240:  # flip bytes in the options area (where the parser works hardest)
            b[rng.randrange(240, len(b))] = rng.randrange(256)
        elif op == 2:  # truncate
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:  # append junk
            b += rng.randbytes(rng.randrange(1, 64))
        elif op == 4 and len(b) > 241:  # a wild option length
            b[rng.randrange(241, len(b))] = rng.choice((0, 1, 4, 254, 255))
        elif op == 5:  # insert a random option
            at = rng.randrange(240, max(241, len(b)))
            code = rng.choice((50, 51, 52, 53, 54, 55, 57, 61, 82, 121, rng.randrange(256)))
            val = rng.randbytes(rng.randrange(0, 8))
            b[at:at] = bytes((code, len(val))) + val
        elif op == 6 and len(b) > 2:  # header fields: op, htype, hlen
            b[rng.randrange(3)] = rng.randrange(256)
    return bytes(b)


def check_reply(packet: bytes, reply: server.Reply, view) -> None:
    """A reply is only legitimate for a well-formed request from a known MAC, and it must itself be well-formed."""
    req = codec.decode(packet)  # must not raise: handle answered it
    assert req.op == codec.BOOTREQUEST and req.htype == 1 and req.hlen == 6
    assert req.mac in view.by_mac
    if reply.data is None:
        assert reply.kind in (codec.RELEASE, codec.DECLINE)
        return
    msg = codec.decode(reply.data)
    assert msg.op == codec.BOOTREPLY and msg.xid == req.xid and msg.mac == req.mac
    assert msg.options[53] == bytes((reply.kind,))
    if reply.kind == codec.OFFER or (reply.kind == codec.ACK and msg.yiaddr != codec.ZERO_IP):
        assert msg.yiaddr in {r.ip for r in view.by_mac[req.mac]}


def test_a_million_mutated_packets():
    seed = int(os.environ.get("PROVNET_FUZZ_SEED", "4242"))
    rng = random.Random(seed)
    view = seed_view()
    base = corpus()
    counters: Counter = Counter()
    replies = 0
    for i in range(N):
        packet = mutate(rng, base[i % len(base)])
        try:
            codec.decode(packet)
        except DhcpDecodeError:
            pass
        except Exception as exc:  # pragma: no cover - the failure we are looking for
            raise AssertionError(f"decode raised {exc!r} (seed {seed}, iteration {i}): {packet.hex()}") from exc
        try:
            reply = server.handle(packet, view, 1_700_000_000.0, counters)
        except Exception as exc:  # pragma: no cover
            raise AssertionError(f"handle raised {exc!r} (seed {seed}, iteration {i}): {packet.hex()}") from exc
        if reply is not None:
            replies += 1
            check_reply(packet, reply, view)
    # the loop did exercise both outcomes
    assert counters["drop", "malformed"] > N // 20 and replies > N // 20


def test_random_bytes_never_get_a_reply():
    rng = random.Random(7)
    view = seed_view()
    for _ in range(100_000):
        packet = rng.randbytes(rng.randrange(0, 600))
        assert server.handle(packet, view, 0.0) is None


@settings(max_examples=300, deadline=None)
@given(xid=st.integers(0, 2**32 - 1), flags=st.integers(0, 2**16 - 1), giaddr=st.binary(min_size=4, max_size=4),
       options=st.dictionaries(st.integers(1, 254).filter(lambda c: c != 52), st.binary(max_size=600),
                               max_size=12))
def test_encode_then_decode_is_identity(xid, flags, giaddr, options):
    msg = codec.Message(op=2, xid=xid, flags=flags, giaddr=giaddr, chaddr=b"\x02" * 6 + b"\x00" * 10,
                        options=options)
    back = codec.decode(codec.encode(msg))
    assert (back.xid, back.flags, back.giaddr) == (xid, flags, giaddr)
    assert back.options == {k: v for k, v in options.items()}
