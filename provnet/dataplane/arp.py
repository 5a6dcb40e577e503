# Address conflict detection on a segment (RFC 5227's ARP probe, one short round): the frames (pure) and the probe.
from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

from provnet.dataplane import netns

ETH_P_ARP = 0x0806
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, oper, sha, spa, tha, tpa
REQUEST, REPLY = 1, 2
BROADCAST = b"\xff" * 6
PROBE_WAIT = 0.2  # seconds to listen for a holder's answer (RFC 5227 waits 1-2 s over 3 probes; an agent cannot)


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def probe_frame(own_mac: str, ip: str) -> bytes:
    """An ARP probe for `ip` (sender address 0.0.0.0, so no one's cache learns from it), as an Ethernet frame."""
    mac = _mac(own_mac)
    arp = _ARP.pack(1, 0x0800, 6, 4, REQUEST, mac, b"\0" * 4, b"\0" * 6, ipaddress.IPv4Address(ip).packed)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def claimant(frame: bytes, ip: str, own_mac: str) -> str | None:
    """The MAC of another box that claims `ip` in `frame` (an ARP reply or request sent from that address, or a
    probe for it: RFC 5227's conflicts), None for anything else. Never raises on a short or odd frame."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    htype, ptype, hlen, plen, oper, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or oper not in (REQUEST, REPLY) or sha == _mac(own_mac):
        return None
    want = ipaddress.IPv4Address(ip).packed
    if spa == want or (oper == REQUEST and spa == b"\0" * 4 and tpa == want):
        return ":".join(f"{b:02x}" for b in sha)
    return None


def probe(namespace: str, ifname: str, own_mac: str, ip: str, wait: float = PROBE_WAIT) -> str | None:
    """Send one probe for `ip` out of `ifname` in `namespace` and listen `wait` seconds: the MAC of a box on the
    segment that holds (or is probing for) the same address, or None."""
    sock = netns.socket_in(namespace, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
        sock.setblocking(False)
        sock.send(probe_frame(own_mac, ip))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            try:
                frame = sock.recv(2048)
            except BlockingIOError:
                continue
            holder = claimant(frame, ip, own_mac)
            if holder:
                return holder
        return None
    except OSError as exc:
        raise netns.DataplaneError(f"ARP probe for {ip} on {ifname}: {exc.strerror or exc}") from None
    finally:
        sock.close()
