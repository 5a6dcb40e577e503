# HTTP/1.1 parsers for the metadata edge, measured side by side in one run: the hand-written parser provnet had
# (loaded from git history), llhttp through httptools and through aiohttp's C parser (bare), h11, and provnet's
# framing layer (llhttp plus the checks that make it refuse what h11 refuses). Also: chunked bodies parse in time
# linear in their size.
#
# One command:
#   .venv/bin/python benchmarks/http_parsers.py            # --rounds 7 --n 20000
#
# Each figure is the best of --rounds interleaved rounds of --n parses (the machine's speed drifts; interleaving
# and the minimum keep the comparison fair), in microseconds per message, and as a ratio to the hand-written one.
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import types
from pathlib import Path

import h11
import httptools

from provnet.metadata.framing import RequestReader, ResponseReader

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "0082da1"  # the last commit with the hand-written parser (provnet/metadata/http11.py)
REQUEST = (b"GET /openstack/2018-08-27/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n"
           b"User-Agent: Cloud-Init/22.4.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
           b"Connection: keep-alive\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n"
            b"X-Openstack-Request-Id: req-0b4c2a7e-6d0e-4a49-9f59-0ad3c7b7e2a1\r\n\r\n" + b"x" * 1024)


def hand_written() -> types.ModuleType | None:
    """The old http11.py, from git (None outside a git checkout)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:provnet/metadata/http11.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("old_http11")
    sys.modules["old_http11"] = module  # (dataclasses look their module up)
    exec(compile(source, "old_http11.py", "exec"), module.__dict__)  # noqa: S102 (our own code, from history)
    return module


class _Sink:
    """httptools callbacks building what the edge needs: target, fields as str, body."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("ascii"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done += 1


def candidates() -> dict[str, dict[str, object]]:
    old = hand_written()
    out: dict[str, dict[str, object]] = {}
    if old is not None:
        def old_request() -> None:
            end = REQUEST.find(b"\r\n\r\n")
            msg, _ = old.parse_request_head(REQUEST[:end + 4])
            msg.get("host")

        def old_response() -> None:
            end = RESPONSE.find(b"\r\n\r\n")
            msg, length, _ = old.parse_response_head(RESPONSE[:end + 4])
            msg.body = RESPONSE[end + 4:end + 4 + length]

        out[f"hand-written ({BASELINE})"] = {"request": old_request, "response": old_response}
    sink = _Sink()
    request_parser = httptools.HttpRequestParser(sink)

    def ht_request() -> None:
        sink.url, sink.headers = b"", []
        request_parser.feed_data(REQUEST)

    def ht_response() -> None:
        s = _Sink()
        httptools.HttpResponseParser(s).feed_data(RESPONSE)

    out["httptools, bare callbacks"] = {"request": ht_request, "response": ht_response}
    try:
        from aiohttp.http_parser import HttpRequestParserC, HttpResponseParserC

        loop = asyncio.new_event_loop()
        protocol = types.SimpleNamespace(transport=None, pause_reading=lambda: None,
                                         resume_reading=lambda resume_parser=True: None)
        aio_request_parser = HttpRequestParserC(protocol, loop, 1 << 16)

        def aio_request() -> None:
            messages, _, _ = aio_request_parser.feed_data(REQUEST)
            messages[0][0].headers.get("host")

        def aio_response() -> None:
            parser = HttpResponseParserC(protocol, loop, 1 << 16)
            parser.feed_data(RESPONSE)

        out["aiohttp C parser, bare"] = {"request": aio_request, "response": aio_response}
    except ImportError:
        pass

    def h11_request() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        conn.next_event()
        conn.next_event()

    def h11_response() -> None:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(RESPONSE)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass

    out["h11"] = {"request": h11_request, "response": h11_response}
    reader = RequestReader()

    def framing_request() -> None:
        reader.feed(REQUEST)
        reader.ready.popleft().get("host")

    def framing_response() -> None:
        ResponseReader().feed(RESPONSE)

    out["provnet framing (llhttp + h11's rules)"] = {"request": framing_request, "response": framing_response}
    return out


def best(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def chunked_seconds(chunks: int, old_dechunk=None) -> float:
    """Parse a chunked body of `chunks` 16-byte chunks arriving 1 KiB at a time: with the framing layer, or (given
    the old `_dechunk`) as the old upstream reader did, decoding the whole buffer again on every read."""
    body = b"".join(b"%x\r\n%s\r\n" % (16, b"y" * 16) for _ in range(chunks)) + b"0\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    started = time.perf_counter()
    if old_dechunk is not None:
        buffer, result = bytearray(), None
        for i in range(0, len(body), 1024):
            buffer += body[i:i + 1024]
            result = old_dechunk(buffer)
        assert result is not None and len(result) == 16 * chunks
        return time.perf_counter() - started
    reader = ResponseReader()
    for i in range(0, len(data), 1024):
        msg = reader.feed(data[i:i + 1024])
    assert msg is not None and len(msg.body) == 16 * chunks
    return time.perf_counter() - started


def old_dechunk():
    """The old upstream reader's `_dechunk`, from git (None outside a git checkout)."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:provnet/metadata/upstream.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("old_upstream")
    sys.modules["old_upstream"] = module
    exec(compile(source, "old_upstream.py", "exec"), module.__dict__)  # noqa: S102 (our own code, from history)
    return module._dechunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    found = candidates()
    results = {name: {"request": float("inf"), "response": float("inf")} for name in found}
    for _ in range(args.rounds):
        for name, fns in found.items():
            for kind, fn in fns.items():
                results[name][kind] = min(results[name][kind], best(fn, args.n))
    reference = next(iter(results.values()))
    print(f"best of {args.rounds} rounds of {args.n}; request {len(REQUEST)} bytes (cloud-init's), response "
          f"{len(RESPONSE)} bytes\n")
    print("| parser | request us | ratio | response us | ratio |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['request']:.2f} | {r['request'] / reference['request']:.2f} | {r['response']:.2f} | "
              f"{r['response'] / reference['response']:.2f} |")
    print("\nchunked body, 16-byte chunks, arriving 1 KiB at a time (linear: the time per chunk stays flat):")
    dechunk = old_dechunk()
    for chunks in (1_000, 3_000, 10_000, 100_000):
        seconds = min(chunked_seconds(chunks) for _ in range(3))
        line = f"  {chunks:>7,} chunks: framing {seconds * 1000:8.1f} ms ({seconds / chunks * 1e6:.2f} us a chunk)"
        if dechunk is not None and chunks <= 3_000:  # (10,000 take it about 500 s)
            old = chunked_seconds(chunks, dechunk)
            line += f"; hand-written {old * 1000:8.1f} ms ({old / chunks * 1e6:.2f} us a chunk)"
        print(line)


if __name__ == "__main__":
    main()
