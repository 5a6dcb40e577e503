# The HTTP/1.1 message of the metadata path, its limits and errors, and rendering (parsing is framing.py's, on llhttp).
from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote

MAX_HEAD = 8192  # bytes of request line + headers (haproxy's default buffer is 16k; clients send < 1k)
MAX_HEADERS = 64
MAX_BODY = 65536  # the largest thing a VM sends is a password (1020 bytes)


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
            self._index = index_headers(self.headers)
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


def index_headers(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Values by lower-case name, in order."""
    index: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.lower()
        found = index.get(key)
        if found is None:
            index[key] = [value]
        else:
            found.append(value)
    return index


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render_response(status: int, body: bytes, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
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
