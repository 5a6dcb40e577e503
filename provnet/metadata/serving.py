# The socket edge every metadata service shares: HTTP/1.1 keep-alive over TCP or a unix socket, with limits.
from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provnet.metadata import http11
from provnet.metadata.http11 import HttpError, Message

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=UTF-8"
_MAX_BUFFER = http11.MAX_HEAD + http11.MAX_BODY  # more unread data than this (pipelining flood): stop reading


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    ip_ttl: int = 0  # send this answer (and the rest of the connection) with this IP TTL / hop limit


@dataclass
class Peer:
    """Who is on the other end: the TCP source address (empty for a unix socket)."""

    address: str


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


def _peer_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        address = str(peer[0])
        return address[7:] if address.startswith("::ffff:") and "." in address else address
    return ""


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive, runs the handler, writes answers in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = Peer("")
        self.buffer = bytearray()
        self.busy: asyncio.Future | None = None  # the handler's pending answer
        self.request: Message | None = None
        self.body_needed = 0
        self.idle_since = self.loop.time()
        self.partial_since: float | None = None
        self.paused = False
        self.closed = False
        self.scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = Peer(_peer_address(transport))
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self.busy is not None:
            self.busy.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.busy is None and not self.scheduled:
            self._process()
        elif len(self.buffer) > _MAX_BUFFER and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _process(self) -> None:
        self.scheduled = False
        while not self.closed and self.busy is None:
            if self.request is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > http11.MAX_HEAD:
                        self._fail(431, f"request head over {http11.MAX_HEAD} bytes")
                    elif self.buffer and self.partial_since is None:
                        self.partial_since = self.loop.time()
                    return
                if end + 4 > http11.MAX_HEAD:
                    self._fail(431, f"request head over {http11.MAX_HEAD} bytes")
                    return
                try:
                    self.request, self.body_needed = http11.parse_request_head(bytes(self.buffer[:end + 4]))
                except HttpError as exc:
                    self._fail(exc.status, exc.message)
                    return
                del self.buffer[:end + 4]
                if self.partial_since is None:
                    self.partial_since = self.loop.time()
            if len(self.buffer) < self.body_needed:
                return
            request = self.request
            if self.body_needed:
                request.body = bytes(self.buffer[:self.body_needed])
                del self.buffer[:self.body_needed]
            self.request, self.body_needed, self.partial_since = None, 0, None
            self._dispatch(request)
            if self.buffer and self.busy is None and not self.closed:
                # A pipelined request waits for the next loop iteration: what it is answered from (see
                # freshness.Revision) is then read after its bytes arrived.
                self.scheduled = True
                self.loop.call_soon(self._process)
                return
        if self.paused and self.busy is None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

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

    def _answered(self, request: Message, future: asyncio.Future) -> None:
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
        self._process()

    def _write(self, request: Message, response: Response) -> None:
        if response.ip_ttl:
            set_ip_ttl(self.transport, response.ip_ttl)
        keep = request.keep_alive and not response.close
        self.transport.write(http11.render_response(response.status, response.body, response.headers, keep,
                                                    request.method == "HEAD"))
        self.idle_since = self.loop.time()
        if not keep:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        response = error(status, message, close=True)
        self.transport.write(http11.render_response(status, response.body, response.headers, False))
        self._close()

    def _close(self) -> None:
        self.closed = True
        self.transport.close()

    def check_deadlines(self, now: float) -> None:
        """Called by the server's watchdog: 408 for a head (or body) too slow, quiet close when idle too long."""
        if self.closed or self.busy is not None:
            return
        if self.partial_since is not None:
            if now - self.partial_since > self.server.header_timeout:
                self._fail(408, "The request was not received in time.")
        elif now - self.idle_since > self.server.idle_timeout:
            self._close()


class HttpServer:
    """Serves `handler` on one listening socket. Bounded: head size (431), head time (408), idle keep-alive time."""

    def __init__(self, handler: Handler, *, header_timeout: float = 30.0, idle_timeout: float = 30.0) -> None:
        self.handler = handler
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._unix_path: str | None = None

    async def listen_tcp(self, host: str, port: int, backlog: int = 4096, ssl: ssl_module.SSLContext | None = None,
                         ) -> int:
        """Listen on `host` (or several, comma-separated: `0.0.0.0,::` for IPv4 and IPv6); returns the port.
        With `ssl`, connections are TLS (https)."""
        loop = asyncio.get_running_loop()
        hosts = [h.strip() for h in host.split(",") if h.strip()] if "," in host else host
        self._server = await loop.create_server(lambda: _Connection(self), hosts, port, backlog=backlog,
                                                reuse_address=True, ssl=ssl)
        self._start_watchdog()
        return self._server.sockets[0].getsockname()[1]

    async def listen_unix(self, path: str, backlog: int = 4096, mode: int = 0o666) -> None:
        await self.listen_socket(bind_unix(path, backlog, mode), backlog)
        self._unix_path = path

    async def listen_socket(self, sock: socket.socket, backlog: int = 4096) -> None:
        """Serve on an already listening unix socket (shared by the agent's worker processes). `backlog` again:
        the event loop listens once more, with its own default of 100 unless told (a burst of more connections
        than that got EAGAIN, a 502 at the proxy)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock, backlog=backlog)
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        interval = max(0.05, min(1.0, self.header_timeout / 4, self.idle_timeout / 4))
        loop = asyncio.get_running_loop()

        def tick() -> None:
            now = loop.time()
            for conn in list(self._connections):
                conn.check_deadlines(now)
            self._watchdog = loop.call_later(interval, tick)

        self._watchdog = loop.call_later(interval, tick)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn._close()
            await self._server.wait_closed()
            if self._unix_path and os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            self._server = None


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
