# HTTP/1.1 framing for the metadata path on llhttp (httptools): requests in for servers, responses in for the
# upstream client. Pure (bytes in, Messages or HttpError out); llhttp does the grammar, the checks here add h11's.
from __future__ import annotations

import re
from collections import deque

import httptools

from provnet.metadata.http11 import MAX_BODY, MAX_HEAD, MAX_HEADERS, HttpError, Message

METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"})
MAX_RESPONSE_HEAD = 65536
MAX_RESPONSE = 16 * 1024 * 1024  # user data is at most 64 KiB in Nova; keep a wide margin
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+(?: |\Z)")  # a method h11 takes (llhttp knows only its list)
_VERSION = re.compile(rb"[^\r\n]* HTTP/(?:[0-9](?:\.(?:[0-9](?:\r|\Z)|\Z)|\Z)|\Z)")  # (the start of) a version: 505
_OWS = b" \t"
# h11's status-line (reason: no NUL, no whitespace but SP and HTAB), for HTTP/1.0 and 1.1
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [0-9]{3}(?: [^\x00\n\r\x0b\x0c]*)?\r\n")


def _status_of(exc: httptools.HttpParserError) -> int:
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return 501
    return 400


class _Stop(Exception):
    """Raised inside an llhttp callback to stop parsing (the reason travels as HttpParserCallbackError's context)."""


def _cause(exc: httptools.HttpParserCallbackError) -> BaseException | None:
    context: BaseException | None = exc.__context__  # (httptools is untyped: exc is Any)
    return context


class RequestReader:
    """One client connection's requests: `feed()` bytes as they arrive, take complete requests from `ready`.

    A malformed request raises HttpError (requests completed before it stay in `ready`, to be answered first); after
    a request that closes the connection, later bytes are ignored (`done`). Bounded: a head of at most MAX_HEAD bytes
    (431) and MAX_HEADERS fields (431), a body of at most MAX_BODY (413); the rest is llhttp's fixed-size state.

    llhttp skips bytes in two places without telling (CR/LF before a request line, runs of SP inside it), where h11
    refuses them. To hold to h11 there, the reader tracks where each request begins in the stream (the end of the
    previous one: its head ends at the first CRLFCRLF, as llhttp accepts no bare CR or LF in a head, and its body
    is Content-Length bytes) and compares the request line byte for byte with the one llhttp parsed.
    """

    def __init__(self) -> None:
        self.ready: deque[Message] = deque()
        self.done = False
        self._parser = httptools.HttpRequestParser(self)
        self._fed = 0  # stream offset of the end of the bytes fed so far
        self._start = 0  # stream offset where the current request begins
        self._chunk = b""  # the bytes being fed, which begin at stream offset _chunk_at
        self._chunk_at = 0
        self._carry = b""  # bytes of the current request's head from earlier feeds (at most MAX_HEAD)
        self._in_body = False
        self._request: Message | None = None
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}  # the Message's, built as fields arrive
        self._body: list[bytes] = []
        self._length = 0

    @property
    def in_progress(self) -> bool:
        """Part of a request has arrived (for the head/body timeout)."""
        return bool(self._carry) or self._in_body or bool(self._url)

    def feed(self, data: bytes) -> None:
        if self.done or not data:
            return
        self._chunk, self._chunk_at = data, self._fed
        self._fed += len(data)
        offset = 0
        while True:
            try:
                self._parser.feed_data(data[offset:] if offset else data)
            except httptools.HttpParserUpgrade as exc:  # a request with Upgrade: answered as any other (never 101)
                offset += exc.args[0]
                if self.done or offset >= len(data):
                    break
                continue
            except httptools.HttpParserCallbackError as exc:
                cause = _cause(exc)
                if isinstance(cause, HttpError):
                    raise cause from None
                if not isinstance(cause, _Stop):
                    raise
            except httptools.HttpParserError as exc:
                if self.done:  # bytes after a request that closes the connection: never read, as h11
                    return
                raise self._parser_error(exc) from None
            break
        if self.done or self._in_body:
            self._carry = b""
            return
        start = self._start - self._chunk_at  # the unfinished head (or bytes between requests): kept for the checks
        self._carry = self._carry + data if start < 0 else data[start:]
        if self._carry[:1] in (b"\r", b"\n"):
            raise HttpError(400, "empty line or stray CR before the request line")
        if len(self._carry) > MAX_HEAD:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes")

    def _parser_error(self, exc: httptools.HttpParserError) -> HttpError:
        message = str(exc) or type(exc).__name__
        head = self._pending()
        if isinstance(exc, httptools.HttpParserInvalidMethodError) and not _TOKEN.match(head):
            return HttpError(400, f"malformed request line ({message})")
        if message == "Invalid HTTP version" and _VERSION.match(head):
            return HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        if message == "Content-Length overflow":
            return HttpError(413, f"body over {MAX_BODY} bytes")
        if "Transfer-Encoding" in message and "Content-Length" in message:
            return HttpError(400, "Content-Length and Transfer-Encoding together")
        return HttpError(_status_of(exc), f"malformed request ({message})")

    def _pending(self) -> bytes:
        """The bytes of the current request seen so far (for error messages and classification)."""
        start = self._start - self._chunk_at
        return (self._carry + self._chunk) if start < 0 else self._chunk[start:]

    # ---- llhttp callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:  # llhttp's own idea of keep-alive may differ from h11's (both Connection tokens): ours holds
            raise _Stop()

    def on_url(self, url: bytes) -> None:
        if not self._url and self._parser.get_method() not in METHODS:  # also before llhttp's HTTP/2 preface state
            raise HttpError(501, f"method {self._parser.get_method().decode()} is not supported")
        self._url += url
        if len(self._url) > MAX_HEAD:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} header fields")
        key = name.decode("ascii")
        text = value.rstrip(_OWS).decode("latin-1")
        headers.append((key, text))
        lower = key.lower()
        found = self._index.get(lower)
        if found is None:
            self._index[lower] = [text]
        else:
            found.append(text)

    def on_headers_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        url = self._url
        start = self._start - self._chunk_at
        if start >= 0:
            raw, base = self._chunk, start
        else:  # a head that arrived over several feeds
            raw, base = self._carry + self._chunk, 0
        eol = raw.find(b"\r\n", base)
        version = raw[eol - 8:eol]  # llhttp read the line: it ends with a version, HTTP/d.d (or RTSP/ICE: 400)
        if raw[base:eol - 8] != method + b" " + url + b" " or not version.startswith(b"HTTP/"):
            raise HttpError(400, "malformed request line")
        end = raw.find(b"\r\n\r\n", eol) + 4
        if end - base > MAX_HEAD:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes")
        http11 = version == b"HTTP/1.1"
        if not http11 and version != b"HTTP/1.0":
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        if method not in METHODS:
            raise HttpError(501, f"method {method.decode()} is not supported")
        if not _TARGET.fullmatch(url):
            raise HttpError(400, "the request target must be a path")
        index = self._index
        if "transfer-encoding" in index:
            raise HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
        hosts = index.get("host")
        if (hosts is None and http11) or (hosts is not None and len(hosts) > 1):
            raise HttpError(400, "a request needs one Host header (HTTP/1.1) and never several")
        connection = index.get("connection")
        tokens = {t.strip(" \t").lower() for v in connection for t in v.split(",")} if connection else ()
        lengths = index.get("content-length")
        length = 0
        if lengths is not None:
            if not (lengths[0].isascii() and lengths[0].isdigit()):  # llhttp checks this too
                raise HttpError(400, "bad Content-Length")
            length = int(lengths[0])
            if length > MAX_BODY:
                raise HttpError(413, f"body over {MAX_BODY} bytes")
            if length and parser.should_upgrade():
                raise HttpError(400, "a request with Upgrade cannot carry a body here")
        self._length = length
        self._request = Message(self._headers, method=method.decode(), target=url.decode("ascii"),
                                keep_alive="close" not in tokens and (http11 or "keep-alive" in tokens),
                                _index=index)
        self._start = (self._chunk_at if start >= 0 else self._start) + end + length  # where the next one begins
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        msg = self._request
        if msg is None:  # cannot happen: llhttp completes a message only after its head
            raise HttpError(400, "malformed request")
        if self._body:
            msg.body = b"".join(self._body)
        self.ready.append(msg)
        self._request = None
        self._in_body = False
        self._carry = b""
        self._reset()
        if not msg.keep_alive:
            self.done = True


class ResponseReader:
    """One upstream response: `feed()` bytes until it returns the complete Message; `eof()` when the upstream closes.

    Responses to HEAD (`head_only`) end with their head. 1xx interim responses are skipped. Errors are HttpError
    (502); a body over MAX_RESPONSE is refused; chunked bodies are decoded by llhttp, strictly and in one pass.
    `extra` says bytes came after the response (the connection must not be reused).
    """

    def __init__(self, head_only: bool = False) -> None:
        self.head_only = head_only
        self.extra = False
        self._parser = httptools.HttpResponseParser(self)
        self._raw = b""  # bytes from the start until the final head is complete
        self._start = 0  # where the current (final or 1xx) response begins in _raw
        self._headers: list[tuple[str, str]] = []
        self._encodings = 0  # Transfer-Encoding fields (chunked: llhttp refuses other codings' framing)
        self._length = -1  # Content-Length, when given
        self._body: list[bytes] = []
        self._size = 0
        self._response: Message | None = None
        self._until_close = False
        self._complete: Message | None = None
        self._in_body = False

    def feed(self, data: bytes) -> Message | None:
        if self._complete is not None:
            self.extra = True
            return self._complete
        if not self._in_body:
            self._raw = self._raw + data if self._raw else data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = _cause(exc)
            if isinstance(cause, _Stop):
                return self._complete
            if isinstance(cause, HttpError):
                raise cause from None
            raise
        except httptools.HttpParserUpgrade:
            raise HttpError(502, "the upstream switched protocols") from None
        except httptools.HttpParserError as exc:
            if self._complete is not None:
                self.extra = True
                return self._complete
            raise HttpError(502, f"malformed response from upstream ({exc})") from None
        if self._complete is None and not self._in_body:
            if self._raw[self._start:self._start + 1] in (b"\r", b"\n"):  # llhttp would skip it, h11 refuses
                raise HttpError(502, "malformed status line from upstream")
            if len(self._raw) - self._start > MAX_RESPONSE_HEAD:
                raise HttpError(502, "the upstream's response head is too large")
        return self._complete

    def eof(self) -> Message | None:
        """The upstream closed: the response if its body was delimited by the close, else None (it is incomplete)."""
        if self._complete is not None:
            return self._complete
        if self._response is not None and self._until_close:
            self._response.body = b"".join(self._body)
            self._response.keep_alive = False
            self._complete = self._response
        return self._complete

    # ---- llhttp callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete is not None:
            self.extra = True
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= 4 * MAX_HEADERS:
            raise HttpError(502, "too many header fields from the upstream")
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            if self._in_body or (lower == b"transfer-encoding" and value.lower() != b"chunked"):
                raise HttpError(502, f"the upstream sent {name.decode()}: {value[:40]!r} (in trailers, or a "
                                     "coding other than chunked)")
            if lower == b"content-length":
                self._length = int(value)  # llhttp checked: digits only, once
            else:
                self._encodings += 1
        self._headers.append((name.decode("ascii"), value.rstrip(_OWS).decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        raw, base = self._raw, self._start
        status = parser.get_status_code()
        line = _STATUS_LINE.match(raw, base)  # the line llhttp read, held to h11's grammar (and 1.0 or 1.1)
        if line is None or status < 100:
            raise HttpError(502, "malformed status line from upstream")
        if self._encodings > 1:
            raise HttpError(502, "the upstream sent Transfer-Encoding twice")
        if self._length > MAX_RESPONSE:
            raise HttpError(502, "the upstream's response is too large")
        msg = Message(self._headers, status=status, keep_alive=parser.should_keep_alive())
        until_close = not self._encodings and self._length < 0 and status not in (204, 304)
        self._headers, self._encodings, self._length = [], 0, -1
        if status < 200:
            return  # interim: llhttp completes it without a body; the final response follows
        self._response = msg
        self._until_close = until_close
        self._in_body = True
        if self.head_only:
            end = raw.find(b"\r\n\r\n", base) + 4
            self.extra = len(raw) > end
            self._complete = msg
            raise _Stop()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_RESPONSE:
            raise HttpError(502, "the upstream's response is too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        msg = self._response
        if msg is None:  # the end of a 1xx response: the next one starts after its head
            self._start = self._raw.find(b"\r\n\r\n", self._start) + 4
            return
        msg.body = b"".join(self._body)
        self._complete = msg
