# The ARP probe's frames (pure): what is sent, and which answers on the segment are address conflicts.
from __future__ import annotations

import struct

from provnet.dataplane import arp

OWN = "fa:16:3e:00:00:01"
OTHER = "52:54:00:aa:bb:cc"


def arp_frame(oper: int, sha: str, spa: str, tpa: str, ethertype: int = 0x0806) -> bytes:
    mac = bytes.fromhex(sha.replace(":", ""))
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, oper, mac, bytes(map(int, spa.split("."))), b"\0" * 6,
                       bytes(map(int, tpa.split("."))))
    return b"\xff" * 6 + mac + struct.pack("!H", ethertype) + body


def test_probe_is_a_broadcast_request_from_no_address() -> None:
    frame = arp.probe_frame(OWN, "172.16.1.2")
    assert frame == arp_frame(1, OWN, "0.0.0.0", "172.16.1.2")
    assert arp.claimant(frame, "172.16.1.2", OWN) is None  # our own probe is no conflict


def test_answers_that_are_conflicts() -> None:
    ip = "172.16.1.2"
    assert arp.claimant(arp_frame(2, OTHER, ip, "0.0.0.0"), ip, OWN) == OTHER  # a reply from the address
    assert arp.claimant(arp_frame(1, OTHER, ip, "172.16.1.9"), ip, OWN) == OTHER  # a request sent from it
    assert arp.claimant(arp_frame(1, OTHER, "0.0.0.0", ip), ip, OWN) == OTHER  # someone else probing for it


def test_what_is_not_a_conflict_and_hostile_frames() -> None:
    ip = "172.16.1.2"
    assert arp.claimant(arp_frame(2, OTHER, "172.16.1.3", "0.0.0.0"), ip, OWN) is None  # another address
    assert arp.claimant(arp_frame(1, OTHER, "172.16.1.9", ip), ip, OWN) is None  # asking who has it: no claim
    assert arp.claimant(arp_frame(2, OWN, ip, "0.0.0.0"), ip, OWN) is None  # our own
    assert arp.claimant(arp_frame(2, OTHER, ip, "0.0.0.0", ethertype=0x0800), ip, OWN) is None
    assert arp.claimant(arp_frame(3, OTHER, ip, "0.0.0.0"), ip, OWN) is None  # RARP opcode
    whole = arp_frame(2, OTHER, ip, "0.0.0.0")
    for cut in range(len(whole)):  # every truncation: no answer, no exception
        assert arp.claimant(whole[:cut], ip, OWN) is None
    assert arp.claimant(b"\xff" * 3000, ip, OWN) is None
