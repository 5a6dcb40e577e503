# A keep-alive connection pool to one HTTP upstream (unix socket or TCP, optionally TLS) with bounded timeouts.
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from provnet.metadata import http11
from provnet.metadata.http11 import HttpError, Message

MAX_RESPONSE = 16 * 1024 * 1024  # user data is at most 64 KiB in Nova; keep a wide margin


class UpstreamUnavailable(Exception):
    """The upstream refused or dropped the connection (nothing listening, socket missing, reset)."""


class UpstreamTimeout(Exception):
    """The upstream did not answer within the timeout."""


class _Stale(Exception):
    """A pooled connection the upstream had already closed: nothing was processed, another one may be tried."""


@dataclass(frozen=True)
class Target:
    unix_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 80
    ssl: ssl.SSLContext | None = None

    def describe(self) -> str:
        return self.unix_path or f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


class _Conn(asyncio.Protocol):
    """One upstream connection: collects one response at a time into `waiter`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.head_only = False
        self.response: Message | None = None
        self.length: int | None = None
        self.chunked = False
        self.closed = False
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.response is not None and self.length is None and not self.chunked:
                self.response.body = bytes(self.buffer)  # body delimited by the close
                self.response.keep_alive = False
                waiter.set_result(self.response)
            elif self.got_bytes:
                waiter.set_exception(UpstreamUnavailable("the upstream closed mid-response"))
            else:
                waiter.set_exception(_Stale())

    def send(self, data: bytes, waiter: asyncio.Future, head_only: bool) -> None:
        self.waiter, self.head_only = waiter, head_only
        self.response, self.length, self.chunked, self.got_bytes = None, None, False, False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            if self.response is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > 65536:
                        raise UpstreamUnavailable("the upstream's response head is too large")
                    return
                try:
                    self.response, self.length, self.chunked = http11.parse_response_head(
                        bytes(self.buffer[:end + 4]))
                except HttpError as exc:
                    raise UpstreamUnavailable(exc.message) from None
                del self.buffer[:end + 4]
                if self.head_only:
                    self.length, self.chunked = 0, False
            if self.chunked:
                body = _dechunk(self.buffer)
                if body is None:
                    return
                self.buffer.clear()
            elif self.length is None:
                if len(self.buffer) > MAX_RESPONSE:
                    raise UpstreamUnavailable("the upstream's response is too large")
                return  # until the upstream closes
            else:
                if self.length > MAX_RESPONSE:
                    raise UpstreamUnavailable("the upstream's response is too large")
                if len(self.buffer) < self.length:
                    return
                body = bytes(self.buffer[:self.length])
                del self.buffer[:self.length]
            self.response.body = body
            waiter.set_result(self.response)
        except UpstreamUnavailable as exc:
            waiter.set_exception(exc)
            self.transport.close()


def _dechunk(buffer: bytearray) -> bytes | None:
    """The whole body of a chunked message, or None while it is incomplete."""
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buffer[pos:eol]).split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise UpstreamUnavailable("bad chunk size from the upstream") from None
        if size == 0:
            return b"".join(parts) if buffer.find(b"\r\n\r\n", eol) >= 0 else None
        if eol + 2 + size + 2 > len(buffer):
            return None
        parts.append(bytes(buffer[eol + 2:eol + 2 + size]))
        pos = eol + 2 + size + 2
        if sum(map(len, parts)) > MAX_RESPONSE:
            raise UpstreamUnavailable("the upstream's response is too large")


class Upstream:
    """`request()` sends one request on an idle pooled connection (or a new one) and reads the whole response."""

    def __init__(self, target: Target, *, connect_timeout: float = 5.0, timeout: float = 60.0,
                 max_idle: int = 256) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.target.unix_path:
                    _, conn = await loop.create_unix_connection(_Conn, self.target.unix_path)
                else:
                    _, conn = await loop.create_connection(_Conn, self.target.host, self.target.port,
                                                           ssl=self.target.ssl)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {self.target.describe()} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(f"cannot connect to {self.target.describe()}: {exc}") from None
        return conn

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> Message:
        data = http11.render_request(method, target, headers, body)
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.buffer:  # closed, or the upstream said something unasked (e.g. a 408)
                conn.transport.close()
                continue
            try:
                return await self._exchange(conn, data, method)
            except _Stale:
                continue  # the upstream closed this idle connection before reading; try another
        conn = await self._connect()
        try:
            return await self._exchange(conn, data, method)
        except _Stale:
            raise UpstreamUnavailable(f"{self.target.describe()} closed the connection") from None

    async def _exchange(self, conn: _Conn, data: bytes, method: str) -> Message:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, _expire, waiter)
        conn.send(data, waiter, method == "HEAD")
        try:
            response: Message = await waiter
        except _Timeout:
            conn.transport.close()  # a late answer must not be read as the next request's
            raise UpstreamTimeout(f"{self.target.describe()} did not answer in {self.timeout:g} s") from None
        except BaseException:
            conn.transport.close()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if response.keep_alive and not conn.closed and not conn.buffer and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.transport.close()
        return response

    async def probe(self) -> None:
        """Open and close one connection: raises UpstreamUnavailable/UpstreamTimeout when nobody is listening."""
        conn = await self._connect()
        conn.transport.close()

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().transport.close()


class _Timeout(Exception):
    pass


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(_Timeout())
