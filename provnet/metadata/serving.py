# The socket edge every metadata service shares: HTTP/1.1 keep-alive over TCP or a unix socket, with limits on
# time, memory and connections (per source address and in all) that make an abuser pay before its neighbours.
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import re
import resource
import socket
import ssl as ssl_module
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provnet.metadata import http11
from provnet.metadata.framing import RequestReader
from provnet.metadata.http11 import HttpError, Message

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=UTF-8"
SLICE = 4096  # input is parsed this much at a time: one read never becomes thousands of queued requests
FLOOR = 1.0  # seconds: what the head and idle timeouts shrink to when the server is full
FD_RESERVE = 64  # descriptors kept for listening sockets, logs, the store
LINGER = 2.0  # seconds a closing connection still reads (and drops) what the client sends, so its answer arrives


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    ip_ttl: int = 0  # send this answer (and the rest of the connection) with this IP TTL / hop limit


@dataclass
class Peer:
    """Who is on the other end: the TCP source address (empty for a unix socket; an IPv6 zone is in `ifindex`, the
    link it came in on, not in the text), and its MAC once read (None: not read yet; "": not known)."""

    address: str
    mac: str | None = None
    ifindex: int = 0

    @property
    def key(self) -> str:
        """Whom the per-source limits count: the MAC when known (a VM's IPv4 and IPv6 addresses, and however many
        addresses it adds, are one source), else the address."""
        return self.mac or self.address


# A handler answers at once (a Response) or later (an awaitable); answers leave in request order.
Handler = Callable[[Message, Peer], "Response | Awaitable[Response]"]


def error(status: int, message: str, request_id: str | None = None, close: bool = False) -> Response:
    headers = [("Content-Type", TEXT)]
    if request_id:
        headers.append(("X-Openstack-Request-Id", request_id))
    return Response(status, http11.error_body(status, message), headers, close)


def set_ip_ttl(transport: asyncio.BaseTransport, ttl: int) -> None:
    """The IP TTL (IPv6 hop limit) of what this connection sends from now on."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.IPPROTO_IP, socket.IP_TTL)]
    if sock.family == socket.AF_INET6:  # an IPv4 client of a dual-stack socket needs IP_TTL as well
        options.append((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
    for level, name in options:
        try:
            sock.setsockopt(level, name, ttl)
        except OSError:
            pass


def _peer(transport: asyncio.BaseTransport) -> Peer:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        address = str(peer[0]).partition("%")[0]
        if address.startswith("::ffff:") and "." in address:
            return Peer(address[7:])
        scope = peer[3] if len(peer) == 4 else 0  # the link of a scoped (link-local) IPv6 source, else 0
        return Peer(address, ifindex=scope if isinstance(scope, int) else 0)
    return Peer("")


class LogBudget:
    """At most one log line a second from one source of lines a VM can drive; the next line says how many were
    left out."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -1e9
        self._suppressed = 0

    def __call__(self, level: int, message: str, now: float) -> None:
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        self.logger.log(level, "%s%s", message, more)
        self._last, self._suppressed = now, 0


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit where allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as fh:
                target = int(fh.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_capacity(fd_limit: int) -> int:
    """Client connections a proxy can hold at `fd_limit` descriptors: each may need one more towards its upstream."""
    return max(16, (fd_limit - FD_RESERVE) // 2)


def scaled(timeout: float, load: float) -> float:
    """A timeout under load (open connections / the cap): whole up to half full, then down to FLOOR when full."""
    if load <= 0.5:
        return timeout
    return max(min(timeout, FLOOR), timeout * 2 * (1 - load))


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive, runs the handler, writes answers in order.

    Flow control: input waits unparsed (and reading pauses) while a request is being answered or the client does
    not read its answers; it is parsed SLICE bytes at a time when the queue is empty, and reading resumes as soon as
    nothing waits. So a connection holds at most one read, one slice's requests and one write buffer.
    """

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        loop = server._loop
        assert loop is not None  # connections are made once the server listens
        self.loop = loop
        self.transport: asyncio.Transport  # set by connection_made, before anything else runs
        self.peer = Peer("")
        self.reader = RequestReader()
        self.pending = b""  # input not yet parsed, from offset `pending_at`
        self.pending_at = 0
        self.failure: HttpError | None = None  # answered after the requests before it
        self.busy: asyncio.Future[Response] | None = None  # the handler's pending answer
        self.active = self.loop.time()  # last byte read or answer written
        self.partial_since: float | None = None  # when the request being received began
        self.stalled_since: float | None = None  # the client is not reading its answers
        self.linger_since: float | None = None  # closing: our side is shut, the client's bytes are dropped
        self.reading = True
        self.eof = False
        self.closed = False
        self.scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is a Transport
        self.peer = _peer(transport)
        if self.server.identify is not None and self.peer.address:
            try:
                self.peer.mac = self.server.identify(self.peer.address, self.peer.ifindex)
            except Exception:  # noqa: BLE001 - never a lost connection for it: the source is its address then
                self.server._notice(f"{self.peer.address}: its MAC could not be read", 0)
                self.peer.mac = ""
        refusal = self.server._admit(self)
        if refusal is not None:
            self.closed = True
            if refusal.status:
                self.transport.write(http11.render_response(refusal.status, refusal.body, refusal.headers, False))
                self.transport.close()
            else:
                self.transport.abort()  # connecting too fast: a reset, the cheapest refusal

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._forget(self)
        if self.busy is not None:
            self.busy.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.failure is not None or self.reader.done:
            return  # nothing after a bad or closing request is read
        self.active = self.loop.time()
        if self.pending:
            self.pending, self.pending_at = self.pending[self.pending_at:] + data, 0
        else:
            self.pending = data
        if not self.scheduled:
            self._work()

    def eof_received(self) -> bool:
        self.eof = True  # the client half-closed: answer what it sent, then close
        if self.linger_since is not None:
            self.transport.close()
        elif not self.scheduled:
            self._work()
        return True

    def pause_writing(self) -> None:
        self.stalled_since = self.loop.time()
        self._flow()

    def resume_writing(self) -> None:
        self.stalled_since = None
        if not self.scheduled:
            self._work()

    def _work(self) -> None:
        self.scheduled = False
        answered = False
        while not self.closed and self.busy is None and self.stalled_since is None:
            ready = self.reader.ready
            if ready:
                if answered:  # the next pipelined request waits one loop iteration: other connections go first
                    self.scheduled = True
                    self.loop.call_soon(self._work)
                    break
                answered = True
                self._dispatch(ready.popleft())
            elif self.failure is not None:
                self._fail(self.failure)
            elif self.pending:
                self._feed()
            elif self.eof or self.reader.done:
                self._close(linger=not self.eof)  # every request before the end (or the closing one) is answered
            else:
                break
        self._flow()

    def _feed(self) -> None:
        data, at = self.pending, self.pending_at
        if len(data) - at > SLICE:
            piece = data[at:at + SLICE]
            self.pending_at = at + SLICE
        else:
            piece = data[at:] if at else data
            self.pending, self.pending_at = b"", 0
        reader = self.reader
        try:
            reader.feed(piece)
        except HttpError as exc:
            self.failure = exc
            self.pending, self.pending_at = b"", 0
            return
        if reader.ready:
            self.partial_since = self.loop.time() if reader.in_progress else None
        elif reader.in_progress and self.partial_since is None:
            self.partial_since = self.loop.time()

    def _flow(self) -> None:
        """Read while nothing waits to be parsed and the client reads its answers; pause otherwise."""
        if self.closed:
            return
        want = not self.pending and self.stalled_since is None and self.failure is None and not self.reader.done
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _dispatch(self, request: Message) -> None:
        try:
            answer = self.server.handler(request, self.peer)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            answer = error(500, "An unknown error has occurred.")
        if isinstance(answer, Response):
            self._write(request, answer)
            return
        future = asyncio.ensure_future(answer)
        self.busy = future
        future.add_done_callback(lambda f: self._answered(request, f))

    def _answered(self, request: Message, future: asyncio.Future[Response]) -> None:
        self.busy = None
        if future.cancelled() or self.closed:
            return
        exc = future.exception()
        if exc is not None:
            log.error("handler failed for %s %s", request.method, request.target, exc_info=exc)
            response = error(500, "An unknown error has occurred.")
        else:
            response = future.result()
        self._write(request, response)
        if not self.scheduled:
            self._work()

    def _write(self, request: Message, response: Response) -> None:
        if response.ip_ttl:
            set_ip_ttl(self.transport, response.ip_ttl)
        keep = request.keep_alive and not response.close
        self.transport.write(http11.render_response(response.status, response.body, response.headers, keep,
                                                    request.method == "HEAD"))
        self.active = self.loop.time()
        if not keep:
            self._close(linger=True)

    def _fail(self, exc: HttpError) -> None:
        self.server.stats[str(exc.status)] += 1
        self.server._notice(f"{self.peer.address or 'unix socket'}: {exc.status} {exc.message}", exc.status)
        response = error(exc.status, exc.message, close=True)
        self.transport.write(http11.render_response(exc.status, response.body, response.headers, False))
        self._close(linger=True)

    def _close(self, linger: bool = False) -> None:
        """Close after what was written. `linger`: the client may still be sending (pipelined requests, the rest of
        a refused body), and closing on unread bytes resets the connection, which can destroy the answer before
        the client reads it; so shut our side and drop what comes for up to LINGER seconds (nginx's lingering
        close). The connection keeps its place in the counts until it is gone."""
        if self.closed:
            return
        self.closed = True
        if linger and not self.eof and self.transport.can_write_eof():
            self.linger_since = self.loop.time()
            self.transport.write_eof()
            if not self.reading:
                self.reading = True
                self.transport.resume_reading()
            return
        self.server._forget(self)
        self.transport.close()

    def _abort(self) -> None:
        """Drop the connection now (evicted, or not reading its answers)."""
        self.closed = True
        self.server._forget(self)
        self.transport.abort()

    def _close_now(self) -> None:
        self.server._forget(self)
        self.transport.close()

    def evictable(self) -> bool:
        """Holding a slot without work of ours in flight: idle, lingering, receiving a request, not reading."""
        return self.busy is None and not self.reader.ready and not self.scheduled and (
            not self.closed or self.linger_since is not None)

    def check_deadlines(self, now: float, header_timeout: float, idle_timeout: float) -> None:
        """Called by the server's watchdog: 408 for a request too slow to arrive, close when idle or stalled."""
        if self.linger_since is not None:
            if now - self.linger_since > LINGER:
                if self.transport.get_write_buffer_size():
                    self._abort()
                else:
                    self._close_now()
            return
        if self.closed:
            return
        if self.stalled_since is not None:
            if now - self.stalled_since > idle_timeout:
                self.server.stats["stalled"] += 1
                self._abort()  # the client does not read: drop what it did not take
            return
        if self.busy is not None or self.reader.ready or self.scheduled:
            return
        if self.partial_since is not None:
            if now - self.partial_since > header_timeout:
                self._fail(HttpError(408, "The request was not received in time."))
        elif now - self.active > idle_timeout:
            self.server.stats["idle"] += 1
            self._close()


class HttpServer:
    """Serves `handler` on one listening socket, bounded in head size (431), body size (413), head time (408),
    keep-alive idle time and connections: `max_per_source` per TCP source address (0: no cap; a source at its cap is
    refused at once with 429) and `max_connections` in all (0: what the open files limit allows). When full, the
    source holding the most connections loses its longest-idle one to the newcomer (503 only when none is idle), and
    the head and idle timeouts shrink as the server fills past half (to FLOOR seconds when full).

    `identify(address, ifindex)` names a new connection's MAC (or ""): then a source is its MAC, whatever its
    addresses (Peer.key), so a VM's IPv4 and IPv6 connections share one cap and one rate.
    """

    def __init__(self, handler: Handler, *, header_timeout: float = 30.0, idle_timeout: float = 30.0,
                 max_connections: int = 0, max_per_source: int = 0, max_rate_per_source: float = 0,
                 identify: Callable[[str, int], str] | None = None) -> None:
        self.handler = handler
        self.identify = identify
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        capacity = connection_capacity(raise_fd_limit())
        if max_connections > capacity:
            log.warning("%d connections asked, the open files limit allows %d: raise LimitNOFILE (ulimit -n)",
                        max_connections, capacity)
        self.max_connections = min(max_connections, capacity) if max_connections else capacity
        self.max_per_source = max_per_source
        self.max_rate_per_source = max_rate_per_source
        self._rates: dict[str, tuple[float, float]] = {}  # source -> (tokens left, when counted): new connections
        self.stats: Counter[str] = Counter()  # refused_*, evicted, idle, stalled, and the 4xx answered by status
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[_Connection, None] = {}
        self._by_source: dict[str, dict[_Connection, None]] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._unix_path: str | None = None
        self._log = LogBudget(log)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _admit(self, conn: _Connection) -> Response | None:
        """None to take the connection, or the answer that refuses it."""
        source = conn.peer.key
        who = conn.peer.address + (f" (MAC {conn.peer.mac})" if conn.peer.mac else "")
        if self.max_rate_per_source and source and not self._within_rate(source):
            self.stats["refused_rate"] += 1
            self._notice(f"{who}: connection reset, more than {self.max_rate_per_source:g} new ones a second",
                         429)
            return Response(0)
        mine = self._by_source.get(source)
        if self.max_per_source and source and mine is not None and len(mine) >= self.max_per_source:
            self.stats["refused_source"] += 1
            self._notice(f"{who}: connection refused, it holds {len(mine)} (the limit per source)", 429)
            return error(429, f"Too many open connections from {conn.peer.address}"
                         f"{' and its other addresses' if conn.peer.mac else ''} (at most {self.max_per_source}).",
                         close=True)
        if len(self._connections) >= self.max_connections and not self._evict():
            self.stats["refused_full"] += 1
            self._notice(f"{source or 'unix socket'}: connection refused, {len(self._connections)} open "
                         f"(the limit) and none idle", 503)
            return error(503, "The service is at its connection limit; try again.", close=True)
        self._connections[conn] = None
        if mine is None:
            mine = self._by_source[source] = {}
        mine[conn] = None
        return None

    def _within_rate(self, source: str) -> bool:
        """A token bucket per address: `max_rate_per_source` new connections a second, as many at once."""
        assert self._loop is not None  # connections are admitted once the server listens
        now = self._loop.time()
        rate = self.max_rate_per_source
        tokens, then = self._rates.get(source, (rate, now))
        tokens = min(rate, tokens + (now - then) * rate)
        if tokens < 1:
            self._rates[source] = (tokens, now)
            return False
        self._rates[source] = (tokens - 1, now)
        return True

    def _evict(self) -> bool:
        """Close the longest-idle connection of the source holding the most; False if none can go."""
        for _, conns in sorted(self._by_source.items(), key=lambda item: -len(item[1])):
            victim = min((c for c in conns if c.evictable()), key=lambda c: c.active, default=None)
            if victim is not None:
                self.stats["evicted"] += 1
                self._notice(f"{victim.peer.address or 'unix socket'}: closed an idle connection to make room "
                             f"({len(conns)} open from that address)", 0)
                victim._abort()
                return True
        return False

    def _forget(self, conn: _Connection) -> None:
        if conn in self._connections:
            del self._connections[conn]
            mine = self._by_source[conn.peer.key]
            del mine[conn]
            if not mine:
                del self._by_source[conn.peer.key]

    def _notice(self, message: str, status: int) -> None:
        """One log line per refused or malformed connection, at most one a second in all (a VM cannot flood);
        malformed requests at INFO, refusals for capacity at WARNING."""
        level = logging.INFO if status not in (0, 429, 503) else logging.WARNING
        self._log(level, message, self._loop.time() if self._loop is not None else 0.0)

    def timeouts(self) -> tuple[float, float]:
        """(head, idle) timeouts at the current load."""
        load = len(self._connections) / self.max_connections
        return scaled(self.header_timeout, load), scaled(self.idle_timeout, load)

    async def listen_tcp(self, host: str, port: int, backlog: int = 4096, ssl: ssl_module.SSLContext | None = None,
                         ) -> int:
        """Listen on `host` (or several, comma-separated: `0.0.0.0,::` for IPv4 and IPv6, `fe80::a9fe:a9fe%qr-1`
        for a link-local address on one device: parse_bind); returns the port. With `ssl`, connections are TLS
        (https). OSError naming the address when one cannot be bound."""
        loop = self._loop = asyncio.get_running_loop()
        try:
            hosts = parse_bind(host)
        except ValueError:  # a host name (metadata_listen = localhost): getaddrinfo's error says what is wrong
            hosts = [h.strip() for h in host.split(",") if h.strip()]
        for item in hosts:
            _, _, zone = item.partition("%")
            if zone and not zone.isdigit():
                try:
                    socket.if_nametoindex(zone)
                except OSError:
                    raise OSError(errno.ENODEV, f"cannot listen on {item}: there is no device {zone} in this "
                                                "network namespace") from None
        try:
            self._server = await loop.create_server(lambda: _Connection(self), hosts, port, backlog=backlog,
                                                    reuse_address=True, ssl=ssl)
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            raise OSError(exc.errno, f"cannot listen on {', '.join(hosts)} port {port}: an address is not on this "
                                     "namespace's devices (or is still tentative: duplicate address detection "
                                     f"takes a second after `ip address add`): {exc.strerror or exc}") from None
        self._start_watchdog()
        port_bound: int = self._server.sockets[0].getsockname()[1]
        return port_bound

    async def listen_unix(self, path: str, backlog: int = 4096, mode: int = 0o666) -> None:
        await self.listen_socket(bind_unix(path, backlog, mode), backlog)
        self._unix_path = path

    async def listen_socket(self, sock: socket.socket, backlog: int = 4096) -> None:
        """Serve on an already listening unix socket (shared by the agent's worker processes). `backlog` again:
        the event loop listens once more, with its own default of 100 unless told (a burst of more connections
        than that got EAGAIN, a 502 at the proxy)."""
        loop = self._loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock, backlog=backlog)
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        interval = max(0.05, min(FLOOR / 4, self.header_timeout / 4, self.idle_timeout / 4))
        loop = self._loop
        assert loop is not None  # started by listen_*

        def tick() -> None:
            now = loop.time()
            header, idle = self.timeouts()
            for conn in list(self._connections):
                conn.check_deadlines(now, header, idle)
            if len(self._rates) > 1024:  # forget addresses whose bucket has filled up again
                rate = self.max_rate_per_source
                self._rates = {a: (t, w) for a, (t, w) in self._rates.items() if t + (now - w) * rate < rate}
            self._watchdog = loop.call_later(interval, tick)

        self._watchdog = loop.call_later(interval, tick)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn._close_now()
            await self._server.wait_closed()
            if self._unix_path and os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            self._server = None


_DEVICE = re.compile(r"[A-Za-z0-9_.@:+-]{1,15}")  # a Linux interface name (IFNAMSIZ - 1), or an ifindex


def parse_bind(text: str) -> list[str]:
    """`--bind`'s addresses, comma-separated: IPv4, IPv6, and IPv6 link-local with the device it is on
    (`fe80::a9fe:a9fe%qr-1a2b3c4d-5e`: a link-local address means nothing without one). ValueError saying what
    is wrong with the first bad one; the addresses normalized, in order."""
    out: list[str] = []
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("no address given (e.g. 0.0.0.0,::)")
    for item in items:
        if not item:
            continue
        address, percent, zone = item.partition("%")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{item[:80]!r} is not an IP address") from None
        if percent:
            if ip.version != 6 or not ip.is_link_local:
                raise ValueError(f"{item[:80]!r}: a %device belongs only after an IPv6 link-local address (fe80::/10)")
            if not _DEVICE.fullmatch(zone) or zone in (".", ".."):
                raise ValueError(f"{item[:80]!r}: {zone[:40]!r} is not a device name (at most 15 letters, digits "
                                 "and _.@:+-)")
        elif ip.version == 6 and ip.is_link_local:
            raise ValueError(f"{item[:80]!r} is link-local: name its device, e.g. {ip}%qr-1a2b3c4d-5e")
        normal = f"{ip}%{zone}" if percent else str(ip)
        if normal in out:
            raise ValueError(f"{item[:80]!r} is given twice")
        out.append(normal)
    return out


def bind_unix(path: str, backlog: int = 4096, mode: int = 0o666) -> socket.socket:
    """A listening unix socket at `path`; a stale file from a dead process is replaced, a live one refused."""
    if len(os.fsencode(path)) > 107:
        raise OSError(f"unix socket path too long ({len(os.fsencode(path))} bytes, the limit is 107): {path}")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(f"{path} is in use by a running process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
