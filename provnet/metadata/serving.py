# The socket edge every metadata service shares: HTTP/1.1 keep-alive over TCP or a unix socket, with limits.
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provnet.metadata import http11
from provnet.metadata.http11 import HttpError, Message

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=UTF-8"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


@dataclass
class Peer:
    """Who is on the other end: the TCP source address (empty for a unix socket)."""

    address: str


Handler = Callable[[Message, Peer], Awaitable[Response]]


def error(status: int, message: str, request_id: str | None = None, close: bool = False) -> Response:
    headers = [("Content-Type", TEXT)]
    if request_id:
        headers.append(("X-Openstack-Request-Id", request_id))
    return Response(status, http11.error_body(status, message), headers, close)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        address = str(peer[0])
        return address[7:] if address.startswith("::ffff:") and "." in address else address
    return ""


class HttpServer:
    """Serves `handler` on one listening socket. Bounded: head size (431), head time (408), idle keep-alive time."""

    def __init__(self, handler: Handler, *, header_timeout: float = 30.0, idle_timeout: float = 30.0,
                 handler_timeout: float | None = None) -> None:
        self.handler = handler
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.handler_timeout = handler_timeout
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.StreamWriter, asyncio.Task | None] = {}

    async def listen_tcp(self, host: str, port: int, backlog: int = 4096) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, backlog=backlog,
                                                  limit=http11.MAX_HEAD, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def listen_unix(self, path: str, backlog: int = 4096, mode: int = 0o666) -> None:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # a stale socket from a dead process
            else:
                raise OSError(f"{path} is in use by a running process")
            finally:
                probe.close()
        self._server = await asyncio.start_unix_server(self._serve, path, backlog=backlog, limit=http11.MAX_HEAD)
        os.chmod(path, mode)
        self._unix_path = path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            tasks = [t for t in self._connections.values() if t is not None]
            for writer, task in list(self._connections.items()):
                writer.close()
                if task is not None:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()
            path = getattr(self, "_unix_path", None)
            if path and os.path.exists(path):
                os.unlink(path)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections[writer] = asyncio.current_task()
        peer = Peer(_peer_address(writer))
        try:
            while True:
                keep = await self._one(reader, writer, peer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer went away, or the server is closing
        except Exception:  # never let one connection take the server down
            log.exception("connection from %s failed", peer.address or "unix socket")
        finally:
            self._connections.pop(writer, None)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> bool:
        try:
            async with asyncio.timeout(self.idle_timeout):
                first = await reader.read(1)
        except TimeoutError:
            return False  # idle keep-alive connection: close quietly
        if not first:
            return False
        try:
            async with asyncio.timeout(self.header_timeout):
                try:
                    head = first + await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    raise HttpError(431, f"request head over {http11.MAX_HEAD} bytes") from None
                except asyncio.IncompleteReadError:
                    return False
                request, length = http11.parse_request_head(head)
                if length:
                    request.body = await reader.readexactly(length)
        except TimeoutError:
            await self._send(writer, error(408, "The request was not received in time.", close=True), False)
            return False
        except HttpError as exc:
            await self._send(writer, error(exc.status, exc.message, close=True), False)
            return False
        try:
            if self.handler_timeout is not None:
                async with asyncio.timeout(self.handler_timeout):
                    response = await self.handler(request, peer)
            else:
                response = await self.handler(request, peer)
        except TimeoutError:
            response = error(504, "The request took too long.")
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            response = error(500, "An unknown error has occurred.")
        keep = request.keep_alive and not response.close
        await self._send(writer, response, keep, request.method == "HEAD")
        return keep

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, keep: bool, head_only: bool = False) -> None:
        writer.write(http11.render_response(response.status, response.body, response.headers, keep, head_only))
        if writer.transport.get_write_buffer_size() > 65536:
            await writer.drain()


def install_fast_loop() -> None:
    """Use uvloop's event loop when it is installed (about twice the throughput of the default loop)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
