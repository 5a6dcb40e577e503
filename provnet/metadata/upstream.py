# A keep-alive connection pool to one HTTP upstream (unix socket or TCP, optionally TLS) with bounded timeouts.
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from provnet.metadata import http11
from provnet.metadata.framing import ResponseReader
from provnet.metadata.http11 import HttpError, Message


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
    """One upstream connection: reads one response at a time into `waiter`; bytes nobody asked for spoil it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport  # set by connection_made, before the connection is handed out
        self.reader: ResponseReader | None = None
        self.waiter: asyncio.Future[Message] | None = None
        self.closed = False
        self.spoiled = False  # the upstream said something unasked (e.g. a 408): never reuse
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream connection's is a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            response = self.reader.eof() if self.reader is not None else None
            if response is not None:
                waiter.set_result(response)  # a body delimited by the close
            elif self.got_bytes:
                waiter.set_exception(UpstreamUnavailable("the upstream closed mid-response"))
            else:
                waiter.set_exception(_Stale())

    def send(self, data: bytes, waiter: asyncio.Future[Message], head_only: bool) -> None:
        self.waiter, self.reader, self.got_bytes = waiter, ResponseReader(head_only), False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        waiter, reader = self.waiter, self.reader  # send() sets both
        if waiter is None or waiter.done() or reader is None:
            self.spoiled = True
            return
        self.got_bytes = True
        try:
            response = reader.feed(data)
        except HttpError as exc:
            waiter.set_exception(UpstreamUnavailable(exc.message))
            self.transport.close()
            return
        if response is not None:
            self.spoiled = reader.extra
            waiter.set_result(response)


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
            if conn.closed or conn.spoiled:  # closed, or the upstream said something unasked (e.g. a 408)
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
        waiter: asyncio.Future[Message] = loop.create_future()
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
        if response.keep_alive and not conn.closed and not conn.spoiled and len(self._idle) < self.max_idle:
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


def _expire(waiter: asyncio.Future[Message]) -> None:
    if not waiter.done():
        waiter.set_exception(_Timeout())
