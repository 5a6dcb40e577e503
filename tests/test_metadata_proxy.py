# The metadata proxy's own limits, in-process on loopback: head size (431) and time (408), body size (413),
# 502 while the agent is down and recovery when it returns, 504 for a silent agent, its status socket.
from __future__ import annotations

import socket
import time

import pytest
from metadata_chain import Chain, LoopThread, UnixHTTPConnection, build_seed, http_request

from provnet.metadata.proxy import MetadataProxy
from provnet.registry import open_registry


@pytest.fixture
def loop():
    thread = LoopThread()
    yield thread
    thread.close()


def start_proxy(loop: LoopThread, socket_path: str, tmp_path, **kw) -> MetadataProxy:
    proxy = MetadataProxy(socket_path=socket_path, router_id="r-1", bind="127.0.0.1", port=0,
                          status_socket=str(tmp_path / "status.sock"), **kw)
    loop.run(proxy.start())
    return proxy


def raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), wait) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def get(port: int, path: str = "/latest/meta-data/") -> int:
    return status_of(raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))


def test_agent_down_is_502_and_the_proxy_recovers_by_itself(loop, tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/p.sqlite")
    socket_path = str(tmp_path / "metadata_proxy")
    proxy = start_proxy(loop, socket_path, tmp_path)
    try:
        assert get(proxy.port) == 502  # no agent yet
        chain = Chain(registry, tmp_path)  # the agent appears on the socket
        assert chain.socket_path == socket_path
        assert get(proxy.port) == 404  # the agent answers: 127.0.0.1 is nobody's port on router r-1
        chain.close()
        assert get(proxy.port) == 502
        chain = Chain(registry, tmp_path)
        assert get(proxy.port) == 404
        chain.close()
    finally:
        loop.run(proxy.stop())
        registry.close()


def test_silent_agent_is_504(loop, tmp_path):
    import asyncio

    socket_path = str(tmp_path / "silent.sock")

    async def swallow(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(30)

    server = loop.run(asyncio.start_unix_server(swallow, socket_path))
    proxy = start_proxy(loop, socket_path, tmp_path, agent_timeout=0.5)
    try:
        assert get(proxy.port) == 504
    finally:
        loop.run(proxy.stop())
        server.close()


def test_head_and_body_limits(loop, tmp_path):
    proxy = start_proxy(loop, str(tmp_path / "none.sock"), tmp_path, header_timeout=0.5, idle_timeout=0.5)
    try:
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
        assert status_of(raw(proxy.port, huge)) == 431
        started = time.monotonic()
        slow = raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        assert status_of(slow) == 408 and time.monotonic() - started < 5
        body = b"POST /openstack/latest/password HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
        assert status_of(raw(proxy.port, body)) == 413
        assert status_of(raw(proxy.port, b"GARBAGE\r\n\r\n")) == 400
        # issue 10 row 7: a non-ASCII digit in Content-Length was a traceback per request; now a 400
        assert status_of(raw(proxy.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nxx")) == 400
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert status_of(raw(proxy.port, chunked)) == 501
        # an idle keep-alive connection is closed quietly, without a stray 408
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            sock.settimeout(5)
            assert sock.recv(10) == b""
    finally:
        loop.run(proxy.stop())


def test_keep_alive_serves_many_requests_on_one_connection(loop, tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/k.sqlite")
    seed = build_seed(registry, {"vm1": "172.16.1.103"})
    chain = Chain(registry, tmp_path)
    proxy = MetadataProxy(socket_path=chain.socket_path, router_id=seed.router_id, bind="127.0.0.1", port=0)
    loop.run(proxy.start())
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
            for _ in range(20):
                sock.sendall(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(65536)
                assert head.startswith(b"HTTP/1.1 404")  # 127.0.0.1 is not a VM port, but the chain answers
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                rest = head.split(b"\r\n\r\n", 1)[1]
                while len(rest) < length:
                    rest += sock.recv(65536)
    finally:
        loop.run(proxy.stop())
        chain.close()
        registry.close()


def test_status_socket(loop, tmp_path):
    proxy = start_proxy(loop, str(tmp_path / "none.sock"), tmp_path)
    try:
        get(proxy.port)

        def ask(path: str):
            conn = UnixHTTPConnection(str(tmp_path / "status.sock"))
            try:
                return http_request(conn, "GET", path, [("Host", "localhost")])
            finally:
                conn.close()

        assert ask("/healthz").status == 200
        assert ask("/readyz").status == 503  # the agent's socket is missing
        metrics = ask("/metrics").text
        assert 'provnet_metadata_proxy_requests_total{status="502"} 1.0' in metrics
        assert ask("/latest/meta-data/").status == 404
    finally:
        loop.run(proxy.stop())


def test_proxy_needs_exactly_one_scope(tmp_path):
    with pytest.raises(ValueError):
        MetadataProxy(socket_path="x", router_id="r", network_id="n")
    with pytest.raises(ValueError):
        MetadataProxy(socket_path="x")


def test_dual_stack_bind_sets_each_clients_own_address(loop, tmp_path):
    from provnet.metadata.serving import HttpServer, Response

    seen: list[str | None] = []
    agent = HttpServer(lambda req, peer: seen.append(req.get("x-forwarded-for")) or Response(200, b"ok"))
    loop.run(agent.listen_unix(str(tmp_path / "agent.sock")))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = MetadataProxy(socket_path=str(tmp_path / "agent.sock"), router_id="r", bind="0.0.0.0,::", port=port)
    loop.run(proxy.start())
    try:
        for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            with socket.socket(family) as sock:
                sock.settimeout(5)
                sock.connect((host, port))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.1 200")
        assert seen == ["127.0.0.1", "::1"]
    finally:
        loop.run(proxy.stop())
        loop.run(agent.close())
