# DHCP server logic, pure: a request (bytes or Message) and a View in, a Reply (bytes + destination) or None out.
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from provnet.dhcp import codec
from provnet.dhcp.codec import ZERO_IP, DhcpDecodeError, Message
from provnet.dhcp.view import Reservation, View

CLIENT_PORT, SERVER_PORT = 68, 67
BROADCAST_ADDR = "255.255.255.255"
_TYPE_NAMES = codec.MESSAGE_TYPES


@dataclass(slots=True)
class Lease:
    """A lease event for the journal: `state` is ack, release or decline."""

    state: str
    reservation: Reservation
    expires: int


@dataclass(slots=True)
class Reply:
    """What to do: send `data` to `dest` (ip, port) unless data is None; journal `lease` (before sending) if set."""

    kind: int
    data: bytes | None
    dest: tuple[str, int]
    lease: Lease | None = None


def _ip_text(addr: bytes) -> str:
    return f"{addr[0]}.{addr[1]}.{addr[2]}.{addr[3]}"


def _pick(choices: tuple[Reservation, ...], giaddr: bytes) -> Reservation | None:
    """Relayed: the reservation on the subnet containing giaddr. Direct: one on a subnet of our interface."""
    if giaddr != ZERO_IP:
        for r in choices:
            if r.subnet.contains(giaddr):
                return r
        return None
    for r in choices:
        if r.subnet.local:
            return r
    return choices[0]


def _echoes(req: Message) -> bytes:
    """Client identifier (RFC 6842) and relay agent information (RFC 3046, last) copied into the reply."""
    out = b""
    cid = req.options.get(codec.CLIENT_ID)
    if cid is not None:
        out += codec.encode_option(codec.CLIENT_ID, cid)
    rai = req.options.get(codec.RELAY_AGENT_INFO)
    if rai is not None and req.giaddr != ZERO_IP:
        out += codec.encode_option(codec.RELAY_AGENT_INFO, rai)
    return out


def _destination(req: Message, kind: int) -> tuple[str, int]:
    """RFC 2131 4.1: relay first, then NAK broadcast, then ciaddr unicast, else broadcast (we cannot unicast to an
    address the client does not hold yet without writing its ARP entry, and every client accepts broadcast)."""
    if req.giaddr != ZERO_IP:
        return _ip_text(req.giaddr), SERVER_PORT
    if kind != codec.NAK and req.ciaddr != ZERO_IP:
        return _ip_text(req.ciaddr), CLIENT_PORT
    return BROADCAST_ADDR, CLIENT_PORT


def _build(req: Message, kind: int, yiaddr: bytes, options: bytes, ciaddr: bytes = ZERO_IP) -> bytes:
    body = b"\x35\x01" + bytes((kind,)) + options + _echoes(req)
    flags = req.flags | (codec.FLAG_BROADCAST if kind == codec.NAK and req.giaddr != ZERO_IP else 0)
    max_size = req.max_message_size
    if codec.MIN_LEN + len(body) + 1 + codec.IP_UDP_OVERHEAD <= max_size:
        header = codec.HEADER.pack(codec.BOOTREPLY, req.htype, req.hlen, 0, req.xid, 0, flags, ciaddr, yiaddr,
                                   ZERO_IP, req.giaddr, req.chaddr, b"", b"")
        out = header + codec.MAGIC + body + b"\xff"
        return out if len(out) >= 300 else out.ljust(300, b"\x00")
    opts: dict[int, bytes] = {}
    codec.parse_options(body, 0, len(body), opts, "reply")
    msg = Message(codec.BOOTREPLY, req.htype, req.hlen, 0, req.xid, 0, flags, ciaddr, yiaddr, ZERO_IP, req.giaddr,
                  req.chaddr, b"", b"", opts)
    try:
        return codec.encode(msg, max_size)
    except ValueError:  # too big even with overload: 249 repeats 121, leave it out; then ignore the size limit
        opts.pop(codec.MS_CLASSLESS_ROUTES, None)
        try:
            return codec.encode(msg, max_size)
        except ValueError:
            return codec.encode(msg)


def _wants_routes(req: Message, view: View) -> bool:
    if view.settings.force_routes:
        return True
    prl = req.parameter_request_list
    return codec.CLASSLESS_ROUTES in prl or codec.MS_CLASSLESS_ROUTES in prl


def _offer_or_ack(req: Message, r: Reservation, kind: int, view: View, now: float) -> Reply:
    blob = r.blob_routes if _wants_routes(req, view) else r.blob_plain
    data = _build(req, kind, r.ip, blob, req.ciaddr if kind == codec.ACK else ZERO_IP)
    lease = Lease("ack", r, int(now) + view.settings.lease_time) if kind == codec.ACK else None
    return Reply(kind, data, _destination(req, kind), lease)


def _nak(req: Message, r: Reservation, why: bytes) -> Reply:
    opts = codec.encode_options(((codec.SERVER_ID, r.subnet.server_id), (codec.MESSAGE, why)))
    return Reply(codec.NAK, _build(req, codec.NAK, ZERO_IP, opts), _destination(req, codec.NAK))


def _inform(req: Message, r: Reservation, view: View) -> Reply:
    """DHCPINFORM: configuration only, no address and no lease time (RFC 2131 3.4)."""
    opts = [(codec.SERVER_ID, r.subnet.server_id), *r.subnet.common]
    if _wants_routes(req, view) and r.subnet.routes:
        opts += [(121, r.subnet.routes), (249, r.subnet.routes)]
    data = _build(req, codec.ACK, ZERO_IP, codec.encode_options(opts), req.ciaddr)
    return Reply(codec.ACK, data, _destination(req, codec.ACK))


def handle(packet: bytes | Message, view: View, now: float,
           counters: Counter[tuple[str, str]] | None = None) -> Reply | None:
    """Answer one client message. Never raises: malformed input, strangers and messages for other servers give
    None (counted in `counters` as ("drop", reason) / ("unknown", "") / ("rx", type) / ("tx", type))."""
    c: Counter[tuple[str, str]] = counters if counters is not None else Counter()
    if isinstance(packet, bytes | bytearray):
        # cheap reject before a full decode: unknown Ethernet MACs are the common garbage on a shared segment
        if len(packet) >= codec.MIN_LEN and packet[1] == 1 and packet[2] == 6 and \
                bytes(packet[28:34]) not in view.by_mac:
            c["unknown", ""] += 1
            return None
        try:
            req = codec.decode(packet)
        except DhcpDecodeError:
            c["drop", "malformed"] += 1
            return None
    else:
        req = packet
    try:
        return _handle(req, view, now, c)
    except DhcpDecodeError:  # a malformed option value (53, 50, 54, 57)
        c["drop", "malformed"] += 1
        return None


def _handle(req: Message, view: View, now: float, c: Counter[tuple[str, str]]) -> Reply | None:
    if req.op != codec.BOOTREQUEST:
        c["drop", "not_request"] += 1
        return None
    kind = req.message_type
    if kind is None or kind not in _TYPE_NAMES:
        c["drop", "not_dhcp"] += 1  # BOOTP, or a type we do not serve
        return None
    c["rx", _TYPE_NAMES[kind]] += 1
    if req.htype != 1 or req.hlen != 6:
        c["drop", "not_ethernet"] += 1
        return None
    choices = view.by_mac.get(req.mac)
    if choices is None:
        c["unknown", ""] += 1
        return None
    r = _pick(choices, req.giaddr)
    if r is None:
        c["drop", "wrong_relay"] += 1
        return None
    server_id = req.ip_option(codec.SERVER_ID)
    if kind == codec.DISCOVER:
        reply = _offer_or_ack(req, r, codec.OFFER, view, now)
    elif kind == codec.REQUEST:
        requested = req.ip_option(codec.REQUESTED_IP)
        if server_id is not None:  # SELECTING
            if server_id != r.subnet.server_id:
                c["drop", "other_server"] += 1
                return None
            ok = requested == r.ip
        elif requested is not None:  # INIT-REBOOT
            ok = requested == r.ip
        elif req.ciaddr != ZERO_IP:  # RENEWING / REBINDING
            ok = req.ciaddr == r.ip
        else:
            c["drop", "bad_request"] += 1
            return None
        reply = _offer_or_ack(req, r, codec.ACK, view, now) if ok else _nak(req, r, b"wrong address")
    elif kind in (codec.DECLINE, codec.RELEASE):
        if server_id is not None and server_id != r.subnet.server_id:
            c["drop", "other_server"] += 1
            return None
        state = "release" if kind == codec.RELEASE else "decline"
        return Reply(kind, None, ("", 0), Lease(state, r, int(now)))
    elif kind == codec.INFORM:
        reply = _inform(req, r, view)
    else:  # OFFER/ACK/NAK sent by another server to port 67
        c["drop", "not_request"] += 1
        return None
    c["tx", _TYPE_NAMES[reply.kind]] += 1
    return reply
