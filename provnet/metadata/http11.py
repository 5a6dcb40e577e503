# A small HTTP/1.1 codec (pure: bytes in, objects out, and back): request/response heads, limits, rendering.
from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote

MAX_HEAD = 8192  # bytes of request line + headers (haproxy's default buffer is 16k; clients send < 1k)
MAX_HEADERS = 64
MAX_BODY = 65536  # the largest thing a VM sends is a password (1020 bytes)

_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class HttpError(Exception):
    """A request that cannot be served; `status` is the answer (400, 413, 431, 501...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Message:
    """A parsed request or response. Header names keep their case; `get`/`get_all` compare case-insensitively."""

    headers: list[tuple[str, str]]
    body: bytes = b""
    keep_alive: bool = True
    method: str = ""
    target: str = ""
    status: int = 0
    _index: dict[str, list[str]] | None = field(default=None, repr=False)

    def get_all(self, name: str) -> list[str]:
        if self._index is None:
            index: dict[str, list[str]] = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), []).append(value)
            self._index = index
        return self._index.get(name.lower(), [])

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    @property
    def path(self) -> str:
        return unquote(self.target.partition("?")[0])

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)[ \t]*")


def _split_head(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    lines = head.split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HttpError(400, "empty request")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        match = _LINE.fullmatch(line)
        if match is None:
            raise HttpError(400, "malformed header line (or a control character in it)")
        name, value = match.groups()
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return lines[0], headers


def _content_length(msg: Message) -> int:
    values = msg.get_all("content-length")
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit() or len(values[0]) > 12:
        raise HttpError(400, "bad Content-Length")
    return int(values[0])


def parse_request_head(head: bytes) -> tuple[Message, int]:
    """Parse a request head (ending with CRLFCRLF); return the request and its body length."""
    start, headers = _split_head(head)
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if method not in _METHODS:
        raise HttpError(501, f"method {method!r} is not supported")
    if not target.startswith("/") or _VALUE_BAD.search(parts[1]) or " " in target:
        raise HttpError(400, "the request target must be a path")
    msg = Message(headers=headers, method=method, target=target)
    connection = (msg.get("connection") or "").lower()
    msg.keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if msg.get_all("transfer-encoding"):
        raise HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
    length = _content_length(msg)
    if length > MAX_BODY:
        raise HttpError(413, f"body over {MAX_BODY} bytes")
    if version == "HTTP/1.1" and len(msg.get_all("host")) > 1:
        raise HttpError(400, "several Host headers")
    return msg, length


def parse_response_head(head: bytes) -> tuple[Message, int | None, bool]:
    """Parse a response head; return it, its Content-Length (None: unknown) and whether the body is chunked."""
    start, headers = _split_head(head)
    parts = start.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(502, "malformed status line from upstream")
    msg = Message(headers=headers, status=int(parts[1]))
    connection = (msg.get("connection") or "").lower()
    msg.keep_alive = "close" not in connection if parts[0] == b"HTTP/1.1" else "keep-alive" in connection
    chunked = "chunked" in (msg.get("transfer-encoding") or "").lower()
    if chunked:
        return msg, None, True
    if msg.get_all("content-length"):
        return msg, _content_length(msg), False
    if msg.status in (204, 304) or 100 <= msg.status < 200:
        return msg, 0, False
    return msg, None, False


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render_response(status: int, body: bytes, headers: list[tuple[str, str]] | tuple = (),
                    keep_alive: bool = True, head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason(status)}\r\nContent-Length: {len(body)}\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    out = "".join(lines).encode("latin-1")
    return out if head_only else out + body


def render_request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


def error_body(status: int, message: str) -> bytes:
    """The small text body every provnet metadata error carries: status line, blank line, explanation."""
    return f"{status} {reason(status)}\n\n{message}\n".encode()
