# The keep-alive pool to the agent/API against hand-written upstreams (chunked, close-delimited, closing idle
# connections, garbage, malformed chunk sizes).
from __future__ import annotations

import asyncio

import pytest

from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable


async def serve(answers: list[bytes], close_after: bool = False):
    """A TCP upstream that answers each request head with the next canned bytes; returns (server, port, seen)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def run(coro):
    return asyncio.run(coro)


def test_content_length_chunked_and_close_delimited_bodies():
    async def go():
        server, port, seen = await serve([
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n\r\nuntil close",
        ])
        up = Upstream(Target(port=port))
        first = await up.request("GET", "/a", [("Host", "x")])
        second = await up.request("GET", "/b", [("Host", "x")])
        third = await up.request("GET", "/c", [("Host", "x")])
        await up.close()
        server.close()
        return first, second, third, seen

    first, second, third, seen = run(go())
    assert (first.status, first.body) == (200, b"hello")
    assert (second.status, second.body) == (200, b"abcde")
    assert (third.status, third.body) == (404, b"until close")
    assert len(seen) == 3  # one connection, reused for all three


def test_idle_connection_closed_by_upstream_is_replaced_transparently():
    async def go():
        server, port, _ = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                                       b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"], close_after=True)
        up = Upstream(Target(port=port))
        a = await up.request("GET", "/", [])
        await asyncio.sleep(0.1)  # the upstream closed the pooled connection meanwhile
        b = await up.request("GET", "/", [])
        server.close()
        return a.body, b.body

    assert run(go()) == (b"a", b"b")


def test_errors_map_to_unavailable_and_timeout():
    async def go():
        results = []
        server, port, _ = await serve([b"NOT HTTP AT ALL\r\n\r\n"])
        try:
            await Upstream(Target(port=port)).request("GET", "/", [])
        except UpstreamUnavailable as exc:
            results.append(("garbage", str(exc)))
        server.close()
        server, port, _ = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], close_after=True)
        try:
            await Upstream(Target(port=port)).request("GET", "/", [])
        except UpstreamUnavailable as exc:
            results.append(("truncated", str(exc)))
        server.close()
        try:
            await Upstream(Target(unix_path="/nonexistent/socket")).request("GET", "/", [])
        except UpstreamUnavailable as exc:
            results.append(("missing", str(exc)))

        async def silent(reader, writer):
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        try:
            await Upstream(Target(port=server.sockets[0].getsockname()[1]), timeout=0.2).request("GET", "/", [])
        except UpstreamTimeout as exc:
            results.append(("silent", str(exc)))
        server.close()
        return results

    kinds = [k for k, _ in run(go())]
    assert kinds == ["garbage", "truncated", "missing", "silent"]


@pytest.mark.parametrize("count", [2, 50])
def test_concurrent_requests_each_get_their_own_answer(count):
    async def go():
        answers = [f"HTTP/1.1 200 OK\r\nContent-Length: {len(str(i))}\r\n\r\n{i}".encode() for i in range(count)]

        async def echo(reader, writer):
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                n = int(head.split(b" ")[1][1:])
                await asyncio.sleep(0.001 * (count - n))
                writer.write(answers[n])

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        up = Upstream(Target(port=server.sockets[0].getsockname()[1]))
        got = await asyncio.gather(*(up.request("GET", f"/{i}", []) for i in range(count)))
        await up.close()
        server.close()
        return [g.body for g in got]

    assert run(go()) == [str(i).encode() for i in range(count)]


def test_unasked_bytes_on_an_idle_connection_never_pass_for_the_next_answer():
    async def go():
        async def chatty(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # unasked
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")

        server = await asyncio.start_server(chatty, "127.0.0.1", 0)
        up = Upstream(Target(port=server.sockets[0].getsockname()[1]))
        first = await up.request("GET", "/", [])
        await asyncio.sleep(0.2)
        second = await up.request("GET", "/", [])
        server.close()
        return first.body, second.status, second.body

    assert run(go()) == (b"first", 200, b"first")  # the second went on a fresh connection, not the 408


@pytest.mark.parametrize("size", [b"-6", b"0x5", b"+5", b"5_0", b"5 ", b"fffffffffffffffffffff"])
def test_malformed_chunk_sizes_are_refused_at_once(size):
    """Issue 10 row 7: the old reader took 0x/_/signs and looped forever on -6; now: refused, the connection closed."""
    async def go():
        server, port, _ = await serve([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
                                       + b"\r\nhello\r\n0\r\n\r\n"])
        try:
            async with asyncio.timeout(5):  # a refusal, not the request timeout
                await Upstream(Target(port=port), timeout=60).request("GET", "/", [])
        except UpstreamUnavailable as exc:
            return str(exc)
        finally:
            server.close()

    assert "chunk size" in run(go()).lower()
