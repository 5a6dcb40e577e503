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


@dataclass(frozen=True)
class Target:
    unix_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 80
    ssl: ssl.SSLContext | None = None

    def describe(self) -> str:
        return self.unix_path or f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


class Upstream:
    """`request()` sends one request on an idle pooled connection (or a new one) and reads the whole response."""

    def __init__(self, target: Target, *, connect_timeout: float = 5.0, timeout: float = 60.0,
                 max_idle: int = 128) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.target.unix_path:
                    return await asyncio.open_unix_connection(self.target.unix_path, limit=65536)
                return await asyncio.open_connection(self.target.host, self.target.port, ssl=self.target.ssl,
                                                     limit=65536)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {self.target.describe()} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(f"cannot connect to {self.target.describe()}: {exc}") from None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> Message:
        data = http11.render_request(method, target, headers, body)
        for _ in range(len(self._idle) + 1):
            if not self._idle:
                break
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, data, method)
            except _StaleConnection:
                continue  # the upstream closed this idle connection; nothing was processed, try another
        reader, writer = await self._connect()
        try:
            return await self._exchange(reader, writer, data, method)
        except _StaleConnection:
            raise UpstreamUnavailable(f"{self.target.describe()} closed the connection") from None

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes,
                        method: str) -> Message:
        ok = False
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    writer.write(data)
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise UpstreamUnavailable("the upstream closed mid-response") from None
                    raise _StaleConnection() from None
                except asyncio.LimitOverrunError:
                    raise UpstreamUnavailable("the upstream's response head is too large") from None
                try:
                    response, length, chunked = http11.parse_response_head(head)
                except HttpError as exc:
                    raise UpstreamUnavailable(exc.message) from None
                try:
                    if method == "HEAD":
                        response.body = b""
                    elif chunked:
                        response.body = await _read_chunked(reader)
                    elif length is None:
                        response.body = await reader.read(MAX_RESPONSE)
                        response.keep_alive = False
                    elif length > MAX_RESPONSE:
                        raise UpstreamUnavailable("the upstream's response is too large")
                    else:
                        response.body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    raise UpstreamUnavailable("the upstream closed mid-response") from None
            ok = response.keep_alive
            return response
        except TimeoutError:
            raise UpstreamTimeout(f"{self.target.describe()} did not answer in {self.timeout:g} s") from None
        finally:
            if ok and len(self._idle) < self.max_idle:
                self._idle.append((reader, writer))
            else:
                writer.close()

    async def probe(self) -> None:
        """Open and close one connection: raises UpstreamUnavailable/UpstreamTimeout when nobody is listening."""
        _, writer = await self._connect()
        writer.close()

    async def close(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()


class _StaleConnection(Exception):
    pass


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        total += size
        if total > MAX_RESPONSE:
            raise UpstreamUnavailable("the upstream's response is too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
