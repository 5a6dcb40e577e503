# DHCPv4 wire format (RFC 2131/2132): bytes <-> Message, options with RFC 3396 long options and option overload.
from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAGIC = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, the BOOTP fixed part
HEADER_LEN = HEADER.size
MIN_LEN = HEADER_LEN + 4  # header + magic cookie
MIN_MAX_SIZE = 576  # RFC 2131: every client accepts a 576-byte IP datagram
IP_UDP_OVERHEAD = 28
BOOTREQUEST, BOOTREPLY = 1, 2
FLAG_BROADCAST = 0x8000
ZERO_IP = b"\x00\x00\x00\x00"

# option codes used by name in provnet
PAD, END = 0, 255
SUBNET_MASK, ROUTER, DNS_SERVERS, HOSTNAME, DOMAIN_NAME, INTERFACE_MTU, BROADCAST = 1, 3, 6, 12, 15, 26, 28
REQUESTED_IP, LEASE_TIME, OVERLOAD, MESSAGE_TYPE, SERVER_ID = 50, 51, 52, 53, 54
PARAMETER_REQUEST_LIST, MESSAGE, MAX_MESSAGE_SIZE, RENEWAL_TIME, REBINDING_TIME = 55, 56, 57, 58, 59
CLIENT_ID, RELAY_AGENT_INFO, CLASSLESS_ROUTES, MS_CLASSLESS_ROUTES = 61, 82, 121, 249

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_TYPES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE", ACK: "ACK",
                 NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}


class DhcpDecodeError(ValueError):
    """The bytes are not a well-formed DHCP message (or an option value is malformed); the only error decode raises."""


@dataclass(slots=True)
class Message:
    """One DHCP message. Addresses are 4 raw bytes; `options` maps code -> value with long options already joined."""

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = ZERO_IP
    yiaddr: bytes = ZERO_IP
    siaddr: bytes = ZERO_IP
    giaddr: bytes = ZERO_IP
    chaddr: bytes = b"\x00" * 16
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> bytes:
        return self.chaddr[: self.hlen] if self.hlen <= 16 else self.chaddr

    @property
    def message_type(self) -> int | None:
        """Option 53, or None for a BOOTP message without it; a malformed value raises DhcpDecodeError."""
        value = self.options.get(MESSAGE_TYPE)
        if value is None:
            return None
        if len(value) != 1:
            raise DhcpDecodeError(f"option 53 (message type) must be 1 byte, got {len(value)}")
        return value[0]

    def ip_option(self, code: int) -> bytes | None:
        value = self.options.get(code)
        if value is not None and len(value) != 4:
            raise DhcpDecodeError(f"option {code} must be a 4-byte address, got {len(value)} bytes")
        return value

    @property
    def parameter_request_list(self) -> bytes:
        return self.options.get(PARAMETER_REQUEST_LIST, b"")

    @property
    def max_message_size(self) -> int:
        """Option 57 (at least 576, RFC 2132 9.10); 576 when absent."""
        value = self.options.get(MAX_MESSAGE_SIZE)
        if value is None:
            return MIN_MAX_SIZE
        if len(value) != 2:
            raise DhcpDecodeError(f"option 57 (maximum message size) must be 2 bytes, got {len(value)}")
        return max(MIN_MAX_SIZE, int.from_bytes(value, "big"))


def parse_options(data: bytes, start: int, end: int, into: dict[int, bytes], where: str) -> bool:
    """Parse TLVs in data[start:end] into `into`, joining repeats (RFC 3396). True if an END option was seen."""
    i = start
    while i < end:
        code = data[i]
        if code == END:
            return True
        if code == PAD:
            i += 1
            continue
        if i + 1 >= end:
            raise DhcpDecodeError(f"option {code} in {where} has no length byte")
        length = data[i + 1]
        j = i + 2 + length
        if j > end:
            raise DhcpDecodeError(f"option {code} in {where} runs past the end ({length} bytes announced)")
        value = data[i + 2 : j]
        prev = into.get(code)
        into[code] = value if prev is None else prev + value
        i = j
    return False


def decode(data: bytes) -> Message:
    """Parse one DHCP message. Raises DhcpDecodeError (and nothing else) for malformed input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DhcpDecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < MIN_LEN:
        raise DhcpDecodeError(f"{len(data)} bytes is shorter than a DHCP message ({MIN_LEN})")
    if data[HEADER_LEN:MIN_LEN] != MAGIC:
        raise DhcpDecodeError("no DHCP magic cookie (a BOOTP message or not DHCP at all)")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpDecodeError(f"op {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
    if hlen > 16:
        raise DhcpDecodeError(f"hardware address length {hlen} exceeds 16")
    options: dict[int, bytes] = {}
    ended = parse_options(data, MIN_LEN, len(data), options, "options")
    overload = options.get(OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpDecodeError(f"option 52 (overload) must be one byte 1, 2 or 3, got {overload.hex()}")
        if not ended:
            raise DhcpDecodeError("option overload without an END option in the options field")
        # RFC 2131 4.1: options field first, then 'file', then 'sname'
        if overload[0] & 1:
            parse_options(file, 0, len(file), options, "file")
        if overload[0] & 2:
            parse_options(sname, 0, len(sname), options, "sname")
        sname_out = b"" if overload[0] & 2 else sname.rstrip(b"\x00")
        file_out = b"" if overload[0] & 1 else file.rstrip(b"\x00")
    else:
        sname_out, file_out = sname.rstrip(b"\x00"), file.rstrip(b"\x00")
    return Message(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
                   sname_out, file_out, options)


def encode_option(code: int, value: bytes) -> bytes:
    """One option as TLV(s); values over 255 bytes are split into consecutive instances (RFC 3396)."""
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    out = bytearray()
    for i in range(0, len(value), 255):
        chunk = value[i : i + 255]
        out += bytes((code, len(chunk)))
        out += chunk
    return bytes(out)


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_option(code, value) for code, value in options)


def _overload(options: dict[int, bytes], room: int) -> tuple[bytes, bytes, bytes]:
    """Pack options into the options field (`room` bytes), then 'file' (127) and 'sname' (63), each END-terminated
    by the caller. An option that does not fit whole is split into several instances (RFC 3396), which the
    decoder joins in the same order: options field, file, sname. ValueError if it does not fit at all."""
    areas = [bytearray(), bytearray(), bytearray()]
    rooms = [room, 127, 63]
    area = 0
    for code, value in options.items():
        rest = memoryview(value)
        first = True
        while first or rest:
            free = rooms[area] - len(areas[area])
            take = min(255, free - 2, len(rest))
            # start a new area if nothing useful fits here (an empty value needs just its 2 header bytes)
            if free < 2 or (take <= 0 and len(rest) > 0):
                area += 1
                if area == 3:
                    raise ValueError(f"options do not fit in {room} bytes even with overload")
                continue
            areas[area] += bytes((code, take)) + rest[:take]
            rest = rest[take:]
            first = False
    return bytes(areas[0]), bytes(areas[1]), bytes(areas[2])


def encode(msg: Message, max_size: int = 0) -> bytes:
    """Message -> bytes. With `max_size` (the client's option 57, IP datagram size), options that do not fit go into
    'file' and then 'sname' with option 52 (overload); DhcpDecodeError-free: raises ValueError if even that fails."""
    sname, file = msg.sname, msg.file
    if len(sname) > 64 or len(file) > 128 or len(msg.chaddr) > 16:
        raise ValueError("sname, file or chaddr too long")
    body = encode_options(msg.options.items())
    limit = (max_size - IP_UDP_OVERHEAD - MIN_LEN) if max_size else 0
    if limit and len(body) + 1 > limit:
        main, in_file, in_sname = _overload(msg.options, limit - 4)  # room for option 52 (3 bytes) and END
        flag = (1 if in_file else 0) | (2 if in_sname else 0)
        body = main + bytes((OVERLOAD, 1, flag))
        if in_file:
            file = in_file + b"\xff"
        if in_sname:
            sname = in_sname + b"\xff"
    header = HEADER.pack(msg.op, msg.htype, msg.hlen, msg.hops, msg.xid, msg.secs, msg.flags, msg.ciaddr,
                         msg.yiaddr, msg.siaddr, msg.giaddr, msg.chaddr.ljust(16, b"\x00"),
                         sname.ljust(64, b"\x00"), file.ljust(128, b"\x00"))
    out = header + MAGIC + body + b"\xff"
    if len(out) < 300:  # BOOTP minimum: some relays and old clients drop shorter packets
        out = out.ljust(300, b"\x00")
    return out


# --- option value helpers -------------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zeros: inet_aton reads those as octal
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")

def ip_bytes(addr: str | ipaddress.IPv4Address) -> bytes:
    if isinstance(addr, str) and _DOTTED_QUAD.fullmatch(addr):  # the common case, 10x faster than ipaddress
        return socket.inet_aton(addr)
    return ipaddress.IPv4Address(addr).packed


def ip_list(addrs: Sequence[str | ipaddress.IPv4Address]) -> bytes:
    return b"".join(ip_bytes(a) for a in addrs)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def classless_routes(routes: Iterable[tuple[str | ipaddress.IPv4Network, str | ipaddress.IPv4Address]]) -> bytes:
    """RFC 3442 option 121 (and 249) value: per route, prefix length, the significant octets of the destination
    (host bits masked off), then the 4-byte router. `0.0.0.0/0 via R` is `00 R`."""
    out = bytearray()
    for destination, router in routes:
        net = ipaddress.IPv4Network(destination, strict=False)
        width = (net.prefixlen + 7) // 8
        out.append(net.prefixlen)
        out += net.network_address.packed[:width]
        out += ipaddress.IPv4Address(router).packed
    return bytes(out)


def parse_classless_routes(value: bytes) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """Inverse of classless_routes; malformed descriptors raise DhcpDecodeError."""
    routes, i = [], 0
    while i < len(value):
        plen = value[i]
        if plen > 32:
            raise DhcpDecodeError(f"classless route prefix length {plen} > 32")
        width = (plen + 7) // 8
        if i + 1 + width + 4 > len(value):
            raise DhcpDecodeError("classless route descriptor runs past the end of the option")
        dest = value[i + 1 : i + 1 + width].ljust(4, b"\x00")
        router = value[i + 1 + width : i + 5 + width]
        try:
            net = ipaddress.IPv4Network((dest, plen))
        except ValueError as exc:  # host bits set
            raise DhcpDecodeError(f"classless route {ipaddress.IPv4Address(dest)}/{plen}: {exc}") from None
        routes.append((net, ipaddress.IPv4Address(router)))
        i += 5 + width
    return routes


def mac_bytes(mac: str) -> bytes:
    if _MAC.fullmatch(mac):  # the common case: aa:bb:cc:dd:ee:ff
        return bytes.fromhex(mac.replace(":", ""))
    parts = mac.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None
