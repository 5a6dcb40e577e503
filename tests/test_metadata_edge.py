# The HTTP edge on real sockets: pipelining of any depth (also through proxy -> agent -> API), clients that never
# read or send one byte at a time, half-closes, connection caps per address and in all, eviction, timeouts that
# shrink under pressure, a bounded log, and a seeded differential run against h11 at the proxy, agent and API.
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import subprocess
import threading
import time

import pytest
from http_oracle import (
    REQUEST_TOKENS,
    REQUESTS,
    RESPONSE_TOKENS,
    RESPONSES,
    Bad,
    Incomplete,
    Resp,
    compare_answers,
    compare_response,
    expect_requests,
    expect_response,
    mutate,
    split_answers,
)
from metadata_chain import PROVNET_BIN, Chain, LoopThread, build_seed, wait_for

from provnet.metadata.proxy import MetadataProxy
from provnet.metadata.serving import FLOOR, SLICE, HttpServer, Response, scaled
from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable
from provnet.registry import open_registry


@pytest.fixture
def loop():
    thread = LoopThread()
    yield thread
    thread.close()


def serve(loop: LoopThread, handler, **kw) -> tuple[HttpServer, int]:
    server = HttpServer(handler, **kw)
    port = loop.run(server.listen_tcp("127.0.0.1", 0))
    return server, port


def echo(request, peer) -> Response:
    return Response(200, request.target.encode())


async def slow_echo(request, peer) -> Response:
    await asyncio.sleep(0)
    return Response(200, request.target.encode())


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def bodies(stream: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(stream):
        end = stream.index(b"\r\n\r\n", pos)
        length = int(re.search(rb"Content-Length: (\d+)", stream[pos:end]).group(1))
        out.append((int(stream[pos + 9:pos + 12]), stream[end + 4:end + 4 + length]))
        pos = end + 4 + length
    return out


def pipeline(port: int, requests: list[bytes], source: str = "127.0.0.1") -> list[tuple[int, bytes]]:
    """Send all requests at once from a thread (the last one closes), read every answer in the meantime."""
    sock = connect(port, source, timeout=60)
    sender = threading.Thread(target=sock.sendall, args=(b"".join(requests),), daemon=True)
    sender.start()
    try:
        return bodies(read_all(sock))
    finally:
        sender.join(10)
        sock.close()


def get(i: int, path: str = "/", close: bool = False) -> bytes:
    return f"GET {path}{i} HTTP/1.1\r\nHost: x\r\n{'Connection: close' if close else 'X: y'}\r\n\r\n".encode()


@pytest.mark.parametrize("handler", [echo, slow_echo], ids=["sync", "async"])
def test_twenty_thousand_pipelined_requests_are_answered_in_order(loop, handler):
    server, port = serve(loop, handler)
    count = 20_000
    try:
        answers = pipeline(port, [get(i, "/r") for i in range(count - 1)] + [get(count - 1, "/r", close=True)])
        assert [b for _, b in answers] == [b"/r%d" % i for i in range(count)]
    finally:
        loop.run(server.close())


def test_ten_thousand_pipelined_requests_through_proxy_agent_and_api(loop, tmp_path):
    """Issue 10 row 6: the real chain, one keep-alive connection from a VM's address, answers in request order."""
    registry = open_registry(f"sqlite:///{tmp_path}/p.sqlite")
    seed = build_seed(registry, {"vm1": "127.0.0.103"}, cidr="127.0.0.0/24", gateway="127.0.0.2",
                      external_router="127.0.0.1")
    chain = Chain(registry, tmp_path)
    proxy = MetadataProxy(socket_path=chain.socket_path, router_id=seed.router_id, bind="127.0.0.1", port=0)
    loop.run(proxy.start())
    try:
        paths = {"/latest/meta-data/local-ipv4": b"127.0.0.103", "/latest/meta-data/hostname": b"vm1.novalocal",
                 "/latest/meta-data/ami-launch-index": b"0", "/latest/meta-data/nothing-here": None}
        rng = random.Random(6)
        order = [rng.choice(list(paths)) for _ in range(10_000)]
        requests = [f"GET {p} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode() for p in order]
        requests[-1] = requests[-1].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        answers = pipeline(proxy.port, requests, source="127.0.0.103")
        assert len(answers) == len(order)
        for path, (status, body) in zip(order, answers, strict=True):
            assert (status, body) == ((200, paths[path]) if paths[path] else (404, body)), path
    finally:
        loop.run(proxy.stop())
        chain.close()
        registry.close()


def test_a_client_that_never_reads_is_bounded_then_dropped_and_others_are_served(loop):
    big = b"x" * 4096
    server, port = serve(loop, lambda req, peer: Response(200, big), idle_timeout=1.0)
    hog = connect(port)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = get(0) * 200_000  # 5 MB of requests, 800 MB of answers if it read them

    def send() -> None:
        try:
            hog.sendall(flood)
        except OSError:
            pass  # dropped by the server: what this test waits for

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_for(lambda: any(c.stalled_since for c in list(server._connections)), 10, "the server to see a stall")
        (conn,) = [c for c in list(server._connections) if c.stalled_since]
        assert not conn.reading  # it stopped reading the hog's requests
        assert len(conn.pending) <= 1 << 20 and len(conn.reader.ready) <= SLICE // len(get(0)) + 1
        assert conn.transport.get_write_buffer_size() <= 1 << 20
        with connect(port) as other:  # a neighbour is served meanwhile
            other.sendall(get(1, close=True))
            assert read_all(other).startswith(b"HTTP/1.1 200")
        wait_for(lambda: server.stats["stalled"] == 1, 10, "the stalled connection to be dropped")
        assert not server._connections
    finally:
        hog.close()
        sender.join(10)
        loop.run(server.close())


def test_slow_loris_gets_408_and_does_not_hold_others(loop):
    server, port = serve(loop, echo, header_timeout=0.5, idle_timeout=5)
    started = time.monotonic()
    with connect(port) as slow:
        answer = b""
        for byte in get(0):  # one byte every 0.1 s, as a slow loris would
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            with connect(port) as other:
                other.sendall(get(1, close=True))
                assert read_all(other).startswith(b"HTTP/1.1 200")
            slow.settimeout(0.1)
            try:
                answer += slow.recv(1000)
            except TimeoutError:
                continue
            if answer:
                break
        slow.settimeout(5)
        answer += read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408") and b"Connection: close" in answer
    assert time.monotonic() - started < 5 and server.stats["408"] == 1
    loop.run(server.close())


def test_a_half_closed_client_gets_every_answer(loop):
    server, port = serve(loop, slow_echo)
    with connect(port) as sock:
        sock.sendall(get(1) + get(2) + get(3)[:10])  # two whole requests and the start of a third
        sock.shutdown(socket.SHUT_WR)
        assert [b for _, b in bodies(read_all(sock))] == [b"/1", b"/2"]
    loop.run(server.close())


def test_one_address_at_its_cap_is_refused_at_once_and_its_neighbours_are_served(loop):
    server, port = serve(loop, echo, max_per_source=4, max_connections=100)
    held = [connect(port, "127.0.0.50", timeout=0.3) for _ in range(4)]
    try:
        for _ in range(16):
            with connect(port, "127.0.0.50", timeout=5) as extra:
                answer = read_all(extra)  # no request sent: refused without waiting for one
                assert answer.startswith(b"HTTP/1.1 429") and b"127.0.0.50" in answer
        for sock in held:
            with pytest.raises(TimeoutError):
                sock.recv(10)  # the first four are open and untouched
        with connect(port, "127.0.0.51") as victim:
            victim.sendall(get(7, close=True))
            assert read_all(victim).startswith(b"HTTP/1.1 200")
        assert server.stats["refused_source"] == 16
    finally:
        for sock in held:
            sock.close()
        loop.run(server.close())


def test_when_full_the_biggest_holder_loses_its_oldest_idle_connection(loop):
    gate = asyncio.Event()

    async def held(request, peer):
        if request.target == "/wait":
            await gate.wait()
        return Response(200, request.target.encode())

    server, port = serve(loop, held, max_connections=6, idle_timeout=60)
    abuser = [connect(port, "127.0.0.60") for _ in range(4)]
    other = [connect(port, "127.0.0.61") for _ in range(2)]
    try:
        wait_for(lambda: server.open_connections == 6, 5, "six connections")
        with connect(port, "127.0.0.62") as victim:
            victim.sendall(get(1, close=True))
            assert read_all(victim).startswith(b"HTTP/1.1 200")
        abuser[0].settimeout(5)
        assert abuser[0].recv(10) == b""  # the oldest idle connection of the address holding most was closed
        for sock in abuser[1:] + other:
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                sock.recv(10)
        assert server.stats["evicted"] == 1
        # every connection busy: nothing to evict, the newcomer gets 503 at once
        other.append(connect(port, "127.0.0.64"))
        busy = abuser[1:] + other
        for sock in busy:
            sock.sendall(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: sum(c.busy is not None for c in list(server._connections)) == 6, 5, "six busy")
        with connect(port, "127.0.0.63") as late:
            assert read_all(late).startswith(b"HTTP/1.1 503")
        loop.loop.call_soon_threadsafe(gate.set)
        for sock in busy:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for sock in abuser + other:
            sock.close()
        loop.run(server.close())


def test_timeouts_shrink_as_the_server_fills(loop):
    assert scaled(30, 0.0) == scaled(30, 0.5) == 30
    assert scaled(30, 0.75) == 15 and scaled(30, 1.0) == FLOOR and scaled(0.5, 1.0) == 0.5
    server, port = serve(loop, echo, max_connections=10, idle_timeout=30, header_timeout=30)
    socks = [connect(port, f"127.0.0.{70 + i}") for i in range(5)]
    try:
        wait_for(lambda: server.open_connections == 5, 5, "five connections")
        assert server.timeouts() == (30, 30)
        socks += [connect(port, f"127.0.0.{80 + i}") for i in range(5)]
        wait_for(lambda: server.open_connections == 10, 5, "ten connections")
        assert server.timeouts() == (FLOOR, FLOOR)
        started = time.monotonic()
        wait_for(lambda: server.open_connections < 10, 10, "an idle connection closed under pressure")
        assert time.monotonic() - started < 5  # not the configured 30 s
    finally:
        for sock in socks:
            sock.close()
        loop.run(server.close())


def test_malformed_requests_log_at_most_a_line_a_second(loop, caplog):
    server, port = serve(loop, echo)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="provnet.metadata"):
        for i in range(300):
            with connect(port, f"127.0.1.{i % 250 + 1}") as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n")
                assert read_all(sock).startswith(b"HTTP/1.1 400")
    elapsed = time.monotonic() - started
    records = [r for r in caplog.records if r.name.startswith("provnet.metadata")]
    assert 1 <= len(records) <= elapsed + 2 and not any(r.exc_info for r in records)
    assert "Content-Length" in records[0].getMessage()
    assert server.stats["400"] == 300
    loop.run(server.close())


# ---- differential, on sockets -------------------------------------------------------------------------------

def exchange(connect_to, data: bytes) -> bytes:
    with connect_to() as sock:
        sock.settimeout(10)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def differential(connect_to, cases: int, seed: int, extra: bytes = b"") -> list:
    rng = random.Random(seed)
    failures = []
    for _ in range(cases):
        data, _ = mutate(rng, REQUESTS, REQUEST_TOKENS, extra)
        expected = expect_requests(data)
        methods = [getattr(e, "method", "") for e in expected]
        answers = split_answers(exchange(connect_to, data), methods)
        failure = answers if isinstance(answers, str) else compare_answers(expected, answers)
        if failure:
            failures.append((data, failure))
    return failures


def test_differential_at_the_proxy_agent_and_api(loop, tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/d.sqlite")
    seed = build_seed(registry, {"vm1": "127.0.0.103"}, cidr="127.0.0.0/24", gateway="127.0.0.2",
                      external_router="127.0.0.1")
    chain = Chain(registry, tmp_path)
    proxy = MetadataProxy(socket_path=chain.socket_path, router_id=seed.router_id, bind="127.0.0.1", port=0,
                          max_rate_per_source=0)  # (1,500 connections in a few seconds from one address)
    loop.run(proxy.start())
    try:
        at_proxy = differential(lambda: connect(proxy.port, "127.0.0.103"), 1500, 1)
        agent_headers = f"X-Forwarded-For: 127.0.0.103\r\nX-Neutron-Router-ID: {seed.router_id}\r\n".encode()

        def agent() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(chain.socket_path)
            return sock

        at_agent = differential(agent, 500, 2, agent_headers)
        at_api = differential(lambda: connect(chain.api.port), 500, 3)
        assert (at_proxy, at_agent, at_api) == ([], [], [])
    finally:
        loop.run(proxy.stop())
        chain.close()
        registry.close()


def test_differential_upstream_client(loop, tmp_path):
    """Mutated responses from a real socket to the real Upstream pool: h11's answer or a clean refusal, no hang."""
    rng = random.Random(77)
    cases: dict[str, tuple[bytes, bool]] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        data, keep_open = cases[head.split(b" ")[1].decode()]
        writer.write(data)
        if keep_open:
            await asyncio.sleep(5)
        writer.close()

    path = str(tmp_path / "up.sock")
    server = loop.run(asyncio.start_unix_server(upstream, path))
    failures = []
    try:
        for i in range(1000):
            data, mutated = mutate(rng, RESPONSES, RESPONSE_TOKENS)
            head_only = rng.random() < 0.15
            expected = expect_response(data, head_only, eof=True)
            keep_open = rng.random() < 0.3 and not isinstance(expect_response(data, head_only, False), Incomplete)
            if keep_open:
                expected = expect_response(data, head_only, eof=False)
            cases[f"/{i}"] = (data, keep_open)

            async def ask(i=i, head_only=head_only):
                up = Upstream(Target(unix_path=path), timeout=3)
                try:
                    msg = await up.request("HEAD" if head_only else "GET", f"/{i}", [("Host", "x")])
                    return Resp(msg.status, msg.body)
                except (UpstreamUnavailable, UpstreamTimeout) as exc:
                    return Bad(str(exc))
                finally:
                    await up.close()

            failure, _ = compare_response(expected, loop.run(ask()), mutated)
            if failure:
                failures.append((data, keep_open, failure))
    finally:
        server.close()
    assert failures == []


# ---- the proxy process ----------------------------------------------------------------------------------------

def test_the_proxy_raises_its_open_files_limit_and_never_floods_its_log(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 512, "this test needs a hard limit above 512"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PROVNET_BIN, "--state-path", str(tmp_path), "metadata-proxy", "--router-id", "r1", "--bind",
             "127.0.0.1", "--port", str(port), "--socket", str(tmp_path / "no-agent.sock")],
            stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard)))
    try:
        wait_for(lambda: "metadata proxy for" in log_path.read_text(), 15, "the proxy to start")
        limits = open(f"/proc/{proc.pid}/limits").read()
        assert re.search(rf"Max open files\s+{hard if hard != resource.RLIM_INFINITY else ''}", limits)
        started = time.monotonic()
        for i in range(400):
            with connect(port, f"127.0.2.{i % 250 + 1}") as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n" if i % 2 else
                             b"GET  / HTTP/1.1\r\n\r\n")
                assert read_all(sock).startswith(b"HTTP/1.1 400")
        with connect(port, "127.0.3.1") as sock:  # valid requests while the agent is down: 502 each
            sock.sendall(get(0, "/latest/meta-data/") * 300 + get(1, close=True))
            assert [status for status, _ in bodies(read_all(sock))] == [502] * 301
        elapsed = time.monotonic() - started
        text = log_path.read_text()
        assert "Traceback" not in text
        assert len([line for line in text.splitlines() if "400" in line]) <= elapsed + 2
        assert 1 <= len([line for line in text.splitlines() if "agent unavailable" in line]) <= elapsed + 2
    finally:
        proc.terminate()
        proc.wait(10)
    assert os.path.exists(log_path)
