# The requesting VM's MAC, asked of the kernel's neighbour table over rtnetlink (IPv4 and IPv6) in the proxy's own
# namespace: the packet came from that segment, so the entry for the source names the link-layer sender.
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ndmsg import NUD_DELAY, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE

log = logging.getLogger(__name__)

SOURCE_MAC_HEADER = "X-Provnet-Source-MAC"  # set by the proxy alone: a guest's own copy is never forwarded
# states in which the kernel has the neighbour's link-layer address (NUD_VALID without NOARP: no MAC there)
HAS_MAC = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
RTN_UNICAST = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id


# The messages, packed here with struct: pyroute2's message classes (its ndmsg/rtmsg encode and decode) cost about
# 180 us per neighbour lookup and 300 us per route lookup in Python, more than the /proc/net/arp read this replaces;
# these are a few microseconds (benchmarks/neighbour_read.py). pyroute2 gives the constants, and encodes the
# answers the tests parse.
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")  # length, type
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_VIA = 1, 4, 5, 18


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _request(kind: int, sequence: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST, sequence, 0) + body


def neighbour_request(address: str, ifindex: int, sequence: int) -> bytes:
    """RTM_GETNEIGH for one address on one link (the kernel wants both: `ip neigh get ADDR dev DEV`)."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return _request(RTM_GETNEIGH, sequence, _NDMSG.pack(family, ifindex, 0, 0, 0) + _attr(NDA_DST, ip.packed))


def route_request(address: str, sequence: int) -> bytes:
    """RTM_GETROUTE for the route back to `address` (`ip route get ADDR`): its device and whether it is on-link."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return _request(RTM_GETROUTE, sequence, _RTMSG.pack(family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
                    + _attr(RTA_DST, ip.packed))


def _answer(data: bytes, sequence: int) -> tuple[int, bytes] | None:
    """(type, body) of the first message in a datagram that answers `sequence` (stale answers skipped); None when
    there is none or the bytes are not whole messages."""
    at = 0
    while at + _HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = _HEADER.unpack_from(data, at)
        if length < _HEADER.size or at + length > len(data):
            return None
        if seq == sequence:
            return kind, data[at + _HEADER.size:at + length]
        at += (length + 3) & ~3
    return None


def _attrs(body: bytes, offset: int) -> dict[int, bytes]:
    """The attributes after a fixed header (a truncated or zero-length one ends the walk)."""
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size or offset + length > len(body):
            break
        out.setdefault(kind & 0x3FFF, body[offset + _RTATTR.size:offset + length])  # (minus NLA_F_* bits)
        offset += (length + 3) & ~3
    return out


def mac_in_reply(data: bytes, sequence: int) -> str | None:
    """The MAC in an RTM_NEWNEIGH answer when the entry holds one (None: an error such as ENOENT, an incomplete
    or failed entry, no link-layer address, or all zeros)."""
    answer = _answer(data, sequence)
    if answer is None or answer[0] != RTM_NEWNEIGH or len(answer[1]) < _NDMSG.size:
        return None  # NLMSG_ERROR: no such entry
    _family, _ifindex, state, _flags, _type = _NDMSG.unpack_from(answer[1])
    mac = _attrs(answer[1], _NDMSG.size).get(NDA_LLADDR)
    if not state & HAS_MAC or mac is None or len(mac) != 6 or not any(mac):
        return None
    return mac.hex(":")


def on_link_device(data: bytes, sequence: int) -> int:
    """The ifindex of a unicast route without a gateway in an RTM_NEWROUTE answer (the source is on that link),
    else 0 (routed through a gateway, local, unreachable, an error)."""
    answer = _answer(data, sequence)
    if answer is None or answer[0] != RTM_NEWROUTE or len(answer[1]) < _RTMSG.size:
        return 0
    if _RTMSG.unpack_from(answer[1])[7] != RTN_UNICAST:
        return 0
    attrs = _attrs(answer[1], _RTMSG.size)
    oif = attrs.get(RTA_OIF)
    if RTA_GATEWAY in attrs or RTA_VIA in attrs or oif is None or len(oif) != 4:
        return 0
    index: int = struct.unpack("=i", oif)[0]
    return max(index, 0)


class NeighbourTable:
    """Asks the kernel afresh for every connection (a cached entry could name the MAC of a guest the address
    belonged to a moment ago): one RTM_GETNEIGH for the address on the link it came in on, after one RTM_GETROUTE
    to find that link when the connection does not say (IPv4, IPv6 global). Non-blocking: the kernel answers a
    request while it is sent, so the answer is read at once or not at all (then the MAC is not known).
    """

    def __init__(self) -> None:
        self.reads = 0
        self._sock: socket.socket | None = None
        self._sequence = 0
        self._failed = False

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            sock.setblocking(False)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    def _ask(self, request: bytes) -> bytes:
        sock = self._socket()
        while True:  # drop answers a failed read left behind
            try:
                sock.recv(65536)
            except BlockingIOError:
                break
        sock.send(request)
        return sock.recv(65536)

    def _next(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def mac_of(self, address: str, ifindex: int = 0) -> str:
        """The source's MAC, or "" when the table has none for it (not on a link of this namespace: loopback,
        routed; an IPv6 link-local source without its ifindex; an entry without a MAC)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
            return ""
        try:
            if not ifindex:
                if ip.version == 6 and ip.is_link_local:
                    return ""  # which link is in the connection's scope id, and only there
                sequence = self._next()
                ifindex = on_link_device(self._ask(route_request(address, sequence)), sequence)
                if not ifindex:
                    return ""
            sequence = self._next()
            mac = mac_in_reply(self._ask(neighbour_request(address, ifindex, sequence)), sequence)
        except OSError as exc:
            if not self._failed:
                log.warning("the neighbour table cannot be read over netlink (%s): requests go to the agent "
                            "without the VM's MAC", exc.strerror or exc)
                self._failed = True
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                self.close()
            return ""
        self.reads += 1
        return mac or ""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
