# The reference for the HTTP edge's differential tests: seeded mutations of real requests and responses, what h11
# (the strict pure-Python HTTP/1.1 library) makes of the same bytes, and provnet's stated rules on top of it.
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import h11

from provnet.metadata.framing import MAX_RESPONSE, MAX_RESPONSE_HEAD, METHODS, RequestReader, ResponseReader
from provnet.metadata.http11 import MAX_BODY, MAX_HEAD, MAX_HEADERS, HttpError

REFUSALS = frozenset({400, 413, 431, 501, 505})  # what the edge may answer to bytes h11 itself refuses
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_FOLD = re.compile(rb"\n[ \t]")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*([^\r\n]*)")


# ---- what the edge must do -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Req:
    """A request the edge must accept, as h11 read it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive: bool


@dataclass(frozen=True)
class Refuse:
    """Bytes the edge must refuse with one of `statuses`, then close."""

    statuses: frozenset[int]
    why: str


@dataclass(frozen=True)
class Truncated:
    """The input ends inside a request: no answer, or a refusal."""


Expected = Req | Refuse | Truncated


def _policy(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], raw_head: bytes,
            ) -> set[int]:
    """provnet's rules beyond h11's, each a refusal status (several may apply; the edge gives one of them)."""
    out: set[int] = set()
    names = [n.lower() for n, _ in headers]
    if len(raw_head) > MAX_HEAD or len(headers) > MAX_HEADERS:
        out.add(431)  # limits (h11 has none on a head that arrives whole)
    if _BARE_LF.search(raw_head) or _FOLD.search(raw_head):
        out.add(400)  # lines end in CRLF; no obsolete line folding (RFC 9112 2.2 and 5.2 allow refusing both)
    if any(_CTL.search(v) for _, v in headers):
        out.add(400)  # control characters in a value (RFC 9110 5.5: invalid; h11 keeps them)
    if method not in METHODS:
        out.add(501)
    if version not in (b"1.0", b"1.1"):
        out.add(505)
    if not _TARGET.fullmatch(target):
        out.add(400)  # origin-form only
    if b"transfer-encoding" in names:
        out.add(400 if b"content-length" in names else 501)  # no chunked requests; both framings: smuggling
    lengths = [v for n, v in headers if n.lower() == b"content-length"]
    raw_lengths = _CONTENT_LENGTH.findall(raw_head)
    if len(raw_lengths) > 1 or any(b"," in v for v in raw_lengths):
        out.add(400)  # one Content-Length, one value (h11 merges equal ones, so count them in the raw head)
    elif lengths and int(lengths[0]) > MAX_BODY:
        out.add(413)
    connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    if b"upgrade" in names and b"upgrade" in connection and lengths and int(lengths[0]):
        out.add(400)  # llhttp would hand the body over as another protocol
    return out


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {t.strip().lower() for n, v in headers if n.lower() == name for t in v.split(b",")}


def expect_requests(data: bytes) -> list[Expected]:
    """What the edge must do with `data` sent on one connection followed by the client's half-close."""
    out: list[Expected] = []
    base = 0  # offset of the current h11 connection's first byte in `data`
    while True:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        if data[base:]:
            conn.receive_data(data[base:])
        conn.receive_data(b"")
        start = 0
        request: h11.Request | None = None
        body = b""
        raw_head = b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if "peer closed connection without sending complete message" in str(exc) or \
                        "peer unexpectedly closed connection" in str(exc):
                    out.append(Truncated())
                else:
                    out.append(Refuse(REFUSALS, str(exc)))
                return out
            consumed = len(data) - base - len(conn.trailing_data[0])
            if isinstance(event, h11.Request):
                request, body, raw_head = event, b"", data[base + start:base + consumed]
                headers = list(event.headers.raw_items())
                refused = _policy(event.method, event.target, event.http_version, headers, raw_head)
                if refused:
                    out.append(Refuse(frozenset(refused), "provnet rule"))
                    return out
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                headers = list(request.headers.raw_items())
                connection = _tokens(headers, b"connection")
                if request.http_version == b"1.0":
                    keep = b"keep-alive" in connection and b"close" not in connection
                else:
                    keep = b"close" not in connection
                out.append(Req(request.method.decode(), request.target.decode(),
                               tuple((n.decode("ascii"), v.decode("latin-1")) for n, v in headers), body, keep))
                if not keep:
                    return out
                start = consumed
                if request.http_version == b"1.0":  # HTTP/1.0 keep-alive, which h11 does not speak: go on fresh
                    base += consumed
                    break
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
                return out
            elif event is h11.PAUSED:  # a proposed protocol switch: our answer is never 101
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()


def read_requests(data: bytes, cuts: list[int]) -> tuple[list, HttpError | None, bool]:
    """The edge's reader on `data` delivered in pieces cut at `cuts`: (requests, the refusal, still inside one)."""
    reader = RequestReader()
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    failure = None
    try:
        for a, b in zip(edges, edges[1:], strict=False):
            reader.feed(data[a:b])
            if reader.done:
                break
    except HttpError as exc:
        failure = exc
    return list(reader.ready), failure, reader.in_progress and failure is None


def compare_reader(data: bytes, cuts: list[int]) -> str | None:
    """None when the reader agrees with the reference on `data`, else what differs."""
    expected = expect_requests(data)
    got, failure, partial = read_requests(data, cuts)
    for i, exp in enumerate(expected):
        if isinstance(exp, Req):
            if i >= len(got):
                return f"request {i} accepted by h11 ({exp.method} {exp.target}) but got {failure!r}"
            msg = got[i]
            mine = Req(msg.method, msg.target, tuple(msg.headers), msg.body, msg.keep_alive)
            if mine != exp:
                return f"request {i} differs: h11 {exp} edge {mine}"
        elif isinstance(exp, Refuse):
            if i < len(got):
                return f"request {i} refused by the reference ({exp.why}) but accepted: {got[i]}"
            if failure is None or failure.status not in exp.statuses:
                return f"request {i}: expected one of {sorted(exp.statuses)} ({exp.why}), got {failure!r}"
            return None
        else:  # truncated: nothing, or a refusal
            if i < len(got):
                return f"request {i} truncated by h11 but accepted: {got[i]}"
            if failure is not None and failure.status not in REFUSALS:
                return f"request {i} truncated: refused with {failure.status}"
            return None
    if len(got) > len(expected):
        return f"{len(got) - len(expected)} request(s) accepted past the reference's end"
    if failure is not None:
        return f"refused ({failure.status} {failure.message}) where the reference accepts everything"
    return None


# ---- answers on the wire -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    app: bool  # from the service (carries a request id), not from the edge
    close: bool


def split_answers(stream: bytes, methods: list[str]) -> list[Answer] | str:
    """The responses in `stream` (a HEAD's has no body); a string says what is malformed about them."""
    out: list[Answer] = []
    pos = 0
    while pos < len(stream):
        end = stream.find(b"\r\n\r\n", pos)
        if end < 0 or not stream.startswith(b"HTTP/1.1 ", pos):
            return f"malformed answer at byte {pos}: {stream[pos:pos + 80]!r}"
        head = stream[pos:end].lower()
        match = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if match is None:
            return f"answer without Content-Length: {head[:200]!r}"
        head_only = len(out) < len(methods) and methods[len(out)] == "HEAD" and b"x-openstack-request-id" in head
        pos = end + 4 + (0 if head_only else int(match.group(1)))
        out.append(Answer(int(head[9:12]), b"x-openstack-request-id" in head, b"\r\nconnection: close" in head))
    return out


def compare_answers(expected: list[Expected], answers: list[Answer]) -> str | None:
    """None when the answers on the wire are what the reference allows for the requests sent."""
    for i, exp in enumerate(expected):
        got = answers[i] if i < len(answers) else None
        if isinstance(exp, Req):
            if got is None:
                return f"no answer to valid request {i} ({exp.method} {exp.target})"
            if not got.app:
                return f"valid request {i} ({exp.method} {exp.target}) refused by the edge: {got.status}"
            if got.close:
                return None if len(answers) == i + 1 else f"answers after a closing answer {i}"
        elif isinstance(exp, Refuse):
            if got is None or got.app or got.status not in exp.statuses or not got.close:
                return f"request {i}: expected a refusal in {sorted(exp.statuses)} ({exp.why}), got {got}"
            return None if len(answers) == i + 1 else f"answers after the refusal of request {i}"
        else:
            if got is not None and (got.app or got.status not in REFUSALS or len(answers) != i + 1):
                return f"truncated request {i}: got {answers[i:]}"
            return None
    if len(answers) > len(expected):
        return f"{len(answers) - len(expected)} answer(s) more than requests: {answers[len(expected):]}"
    return None


# ---- upstream responses --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resp:
    status: int
    body: bytes


@dataclass(frozen=True)
class Bad:
    why: str


@dataclass(frozen=True)
class Incomplete:
    """The response is not over yet (the client must wait; with a timeout, time out)."""


def expect_response(data: bytes, head_only: bool, eof: bool) -> Resp | Bad | Incomplete:
    """What h11 as a client makes of `data` answering a GET (or a HEAD), with or without the upstream closing."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
    conn.send(h11.Request(method="HEAD" if head_only else "GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    if data:  # (empty data would mean the close to h11)
        conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    status, body = 0, b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return Bad(str(exc))
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = list(event.headers.raw_items())
            raw = data[:len(data) - len(conn.trailing_data[0])]
            if (event.http_version not in (b"1.0", b"1.1") or _BARE_LF.search(raw) or _FOLD.search(raw)
                    or any(_CTL.search(v) for _, v in headers) or status == 101):
                return Bad("provnet rule (version, line ends, folding, control characters, 101)")
            names = [n.lower() for n, _ in headers]
            lengths = [v for n, v in headers if n.lower() == b"content-length"]
            if (b"transfer-encoding" in names and lengths) or len(lengths) > 1 or any(b"," in v for v in lengths):
                return Bad("provnet rule (ambiguous framing)")
            if (lengths and int(lengths[0]) > MAX_RESPONSE) or len(headers) > 4 * MAX_HEADERS:
                return Bad("provnet rule (limits)")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_RESPONSE:
                return Bad("provnet rule (body limit)")
        elif isinstance(event, h11.EndOfMessage):
            return Resp(status, body)
        elif event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return Incomplete()


def read_response(data: bytes, cuts: list[int], head_only: bool, eof: bool) -> Resp | Bad | Incomplete:
    reader = ResponseReader(head_only)
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    try:
        for a, b in zip(edges, edges[1:], strict=False):
            msg = reader.feed(data[a:b])
            if msg is not None:
                return Resp(msg.status, msg.body)
        msg = reader.eof() if eof else None
    except HttpError as exc:
        return Bad(exc.message)
    if msg is None:  # (the upstream client turns an incomplete response at the close into UpstreamUnavailable)
        return Bad("the upstream closed mid-response") if eof else Incomplete()
    return Resp(msg.status, msg.body)


def compare_response(expected: Resp | Bad | Incomplete, got: Resp | Bad | Incomplete, mutated: bool,
                     ) -> tuple[str | None, str | None]:
    """(failure, stricter): a failure is an answer h11 would not give, or a hang; `stricter` names a refusal of
    something h11 takes (allowed for a mutated response, reported by reason; a failure for an unmutated one)."""
    if isinstance(expected, Resp):
        if isinstance(got, Resp):
            return (None, None) if got == expected else (f"h11 {expected} edge {got}", None)
        if isinstance(got, Incomplete):
            return f"h11 has the whole response {expected}, the edge waits for more", None
        return (None, got.why) if mutated else (f"an unmutated response refused: {got.why}", None)
    if isinstance(expected, Bad):
        if isinstance(got, Resp):
            return f"h11 refuses ({expected.why}), the edge returned {got}", None
        if isinstance(got, Incomplete):
            return f"h11 refuses ({expected.why}), the edge waits for more (a hang until its timeout)", None
        return None, None
    if isinstance(got, Resp):
        return f"h11 waits for more, the edge returned {got}", None
    return None, None


# ---- mutations -------------------------------------------------------------------------------------------------

CLOUD_INIT = (b"GET /openstack/2018-08-27/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
              b"User-Agent: Cloud-Init/22.4.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
              b"Connection: keep-alive\r\n\r\n")
REQUESTS = [
    CLOUD_INIT,
    b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
    b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\n\r\nZW5jcnlwdGVk",
    b"GET /latest/user-data HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /after-close HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /openstack HTTP/1.1\r\nHost: x\r\n\r\nGET /openstack HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /?a=1&b=%20 HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 10.0.0.1\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nHost: x\r\n\r\n",
]
REQUEST_TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"  ", b"\t", b"\x00", b":", b",", b"\r\n ", b"\r\n\t", b"\r\n\r\n",
    b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Content-Length: 0x5\r\n", b"Content-Length: +5\r\n",
    b"Content-Length: 1_0\r\n", b"Content-Length: \xb2\r\n", b"Content-Length: -6\r\n", b"Content-Length: 5, 5\r\n",
    b"Content-Length: 99999999999999999999999\r\n", b"Content-Length: 70000\r\n", b"Content-Length:\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: identity\r\n",
    b"Host: b\r\n", b"Host:\r\n", b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Connection: Close\r\n",
    b"Connection: upgrade\r\nUpgrade: h2c\r\n", b"Upgrade: websocket\r\n", b"Expect: 100-continue\r\n",
    b"X-Forwarded-For: 10.0.0.9\r\n", b"X: \x01\r\n", b"X: \x7f\r\n", b"X: \xff\xfe\r\n", b"X : y\r\n",
    b": y\r\n", b"X\xff: y\r\n", b"X: a\r\n b\r\n", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1",
    b"GET ", b"BREW ", b"get ", b"CONNECT ", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"OPTIONS * ", b"http://a/",
    b"0\r\n\r\n", b"5\r\nhello\r\n", b"%00", b"#", b"?", b"/../", b"\xc3\xa9",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\nX-Openstack-Request-Id: "
    b"req-1\r\n\r\n{\"uuid\": \"x\"}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\nuntil close",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx",
]
RESPONSE_TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b":", b";", b"\r\n ", b"0x", b"-", b"+", b"_", b"-6", b"ff",
    b"fffffffffffffffffffff", b"Content-Length: 5\r\n", b"Content-Length: \xb2\r\n", b"Content-Length: 1, 1\r\n",
    b"Content-Length: 99999999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n", b"HTTP/1.0", b"HTTP/2.0", b"099", b"101", b"2000", b"0\r\n\r\n", b"5\r\nhello\r\n",
    b"3;a=\"b\"\r\nabc\r\n", b"X: \x01\r\n", b"X: a\r\n b\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
]
_BYTES = b"\x00\t\n\r \"#%+,-.0123456789:;=?ABCZ_abcz\x7f\x80\xb2\xff"


def mutate(rng: random.Random, seeds: list[bytes], tokens: list[bytes], extra: bytes = b"") -> tuple[bytes, bool]:
    """A seed with 0-3 mutations (and `extra` header lines in every request head); (bytes, mutated?)."""
    data = bytearray(rng.choice(seeds))
    if extra:
        data = bytearray(re.sub(rb"(HTTP/1\.[01]\r\n)", lambda m: m.group(1) + extra, bytes(data)))
    rounds = rng.choice((0, 1, 1, 1, 2, 2, 3))
    for _ in range(rounds):
        op = rng.randrange(12)
        pos = rng.randrange(len(data) + 1)
        lines = [m.end() for m in re.finditer(rb"\n", data)] or [0]
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.choice(_BYTES) if rng.random() < 0.8 else rng.randrange(256)
        elif op in (1, 2):
            at = pos if op == 1 else rng.choice(lines)
            data[at:at] = rng.choice(tokens)
        elif op == 3:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 4:  # duplicate a line
            a = rng.choice(lines)
            b = data.find(b"\n", a)
            if b >= 0:
                data[a:a] = data[a:b + 1]
        elif op == 5:  # drop a line
            a = rng.choice(lines)
            b = data.find(b"\n", a)
            if b >= 0:
                del data[a:b + 1]
        elif op == 6:
            del data[pos:]
        elif op == 7:  # another value for a length or a chunk size
            data = bytearray(re.sub(rb"(?i)(content-length: *)\d+|(\r\n)[0-9a-f]+(\r\n)",
                                    lambda m: (m.group(1) or m.group(2)) + rng.choice(
                                        [b"0", b"1", b"2", b"12", b"13", b"65537", b"00012", b"0x1", b"-1", b"1 "])
                                    + (m.group(3) or b""), bytes(data), count=1))
        elif op == 8:  # too big: many fields, a long field or a long target
            what = rng.randrange(3)
            at = rng.choice(lines)
            if what == 0:
                data[at:at] = b"".join(b"X-%d: y\r\n" % i for i in range(rng.choice((60, 63, 64, 65, 70))))
            elif what == 1:
                data[at:at] = b"X-Long: " + b"a" * rng.choice((8000, 8100, 8192, 9000)) + b"\r\n"
            else:
                data[pos:pos] = b"/" + b"b" * rng.choice((8100, 9000))
        elif op == 9:  # separators
            old, new = rng.choice([(b" ", b"  "), (b" ", b"\t"), (b"\r\n", b"\n"), (b"\r\n", b"\r"), (b": ", b":"),
                                   (b": ", b" : ")])
            found = [m.start() for m in re.finditer(re.escape(old), data)]
            if found:
                at = rng.choice(found)
                data[at:at + len(old)] = new
        elif op == 10:  # letter case
            a = rng.choice(lines)
            data[a:a + 8] = data[a:a + 8].swapcase()
        else:  # pipelined: another seed after this one
            data += rng.choice(seeds)
    return bytes(data), rounds > 0


def cuts(rng: random.Random, size: int) -> list[int]:
    """Where a stream of `size` bytes is cut into reads: none, a few, or every byte."""
    kind = rng.randrange(4)
    if kind == 0 or size < 2:
        return []
    if kind == 3 and size < 600:
        return list(range(1, size))
    return sorted(rng.sample(range(1, size), min(size - 1, rng.randint(1, 6))))
