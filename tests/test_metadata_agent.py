# The metadata agent over its unix socket on a real registry: the exact outgoing request (captured), Neutron's
# statuses, same IP on two networks, the lookup cache against registry changes, rate limiting, status pages.
from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time

import pytest
from metadata_chain import SECRET, Chain, add_vm, agent_get, build_seed

from provnet.metadata.agent import MetadataAgent, api_target
from provnet.metadata.lookup import mac_from_link_local
from provnet.metadata.ratelimit import RateLimiter, Window


class Capture(http.server.BaseHTTPRequestHandler):
    """An upstream that records what it receives, byte for byte, and answers as told."""

    seen: list[dict] = []
    status = 200
    delay = 0.0

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Capture.seen.append({"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                             "body": body})
        time.sleep(Capture.delay)
        out = b"captured"
        self.send_response(Capture.status)
        self.send_header("Content-Type", "text/x-captured")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _any

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def capture():
    Capture.seen, Capture.status, Capture.delay = [], 200, 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def router_headers(seed, ip="172.16.1.103"):
    return [("X-Forwarded-For", ip), ("X-Neutron-Router-ID", seed.router_id)]


def agent_to(chain: Chain, port: int, tmp_path, api_timeout: float = 60.0, **kw) -> str:
    """A second agent on its own socket, forwarding to `port` (the capturing server or nothing)."""
    path = str(tmp_path / f"agent-{port}")
    agent = MetadataAgent(chain.registry, shared_secret=SECRET, socket_path=path,
                          api=api_target("127.0.0.1", port), api_timeout=api_timeout, **kw)
    chain.loop.run(agent.start())
    chain.extra = getattr(chain, "extra", []) + [agent]
    return path


@pytest.fixture
def extra_agents(setup):
    yield
    chain = setup[2]
    for agent in getattr(chain, "extra", []):
        chain.loop.run(agent.stop())


def test_outgoing_request_has_exactly_the_four_headers_and_a_valid_signature(setup, capture, tmp_path,
                                                                             extra_agents):
    registry, seed, chain = setup
    path = agent_to(chain, capture.server_address[1], tmp_path)
    spoof = [("X-Instance-ID", "forged"), ("X-Tenant-ID", "forged"), ("X-Instance-ID-Signature", "f" * 64),
             ("User-Agent", "Cloud-Init/22.4"), ("Cookie", "a=b")]
    answer = agent_get(path, "/openstack/latest/password?x=1&y=2", router_headers(seed) + spoof, "POST",
                       b"secret-body")
    assert answer.status == 200 and answer.body == b"captured"
    assert answer.headers["content-type"] == "text/x-captured"
    (seen,) = Capture.seen
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/openstack/latest/password?x=1&y=2",
                                                            b"secret-body")
    names = sorted(k.lower() for k, _ in seen["headers"])
    # the four identity headers, plus Host, the request id for the logs, and the body's type and length
    assert names == sorted(["host", "x-forwarded-for", "x-instance-id", "x-tenant-id", "x-instance-id-signature",
                            "x-openstack-request-id", "content-type", "content-length"])
    headers = dict((k.lower(), v) for k, v in seen["headers"])
    vm1 = seed.instances["vm1"]
    assert headers["x-instance-id"] == vm1
    assert headers["x-tenant-id"] == registry.get_instance(vm1).project_id
    assert headers["x-forwarded-for"] == "172.16.1.103"
    # HMAC-SHA256(secret, instance id), hex: written here from the reference, not with provnet's helper
    assert headers["x-instance-id-signature"] == hmac.new(SECRET.encode(), vm1.encode(), hashlib.sha256).hexdigest()
    agent_get(path, "/latest/meta-data/", router_headers(seed))
    get_names = sorted(k.lower() for k, _ in Capture.seen[1]["headers"])
    assert get_names == sorted(["host", "x-forwarded-for", "x-instance-id", "x-tenant-id",
                                "x-instance-id-signature", "x-openstack-request-id"])


@pytest.mark.parametrize("status", [400, 403, 404, 409, 500, 502, 503, 504])
def test_api_statuses_pass_through(setup, capture, tmp_path, extra_agents, status):
    _, seed, chain = setup
    Capture.status = status
    path = agent_to(chain, capture.server_address[1], tmp_path)
    assert agent_get(path, "/latest/meta-data/", router_headers(seed)).status == status


def test_api_down_is_503_and_slow_api_is_504(setup, capture, tmp_path, extra_agents):
    _, seed, chain = setup
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    free_port = sock.getsockname()[1]
    sock.close()
    down = agent_to(chain, free_port, tmp_path)
    assert agent_get(down, "/latest/meta-data/", router_headers(seed)).status == 503
    Capture.delay = 2.0
    slow = agent_to(chain, capture.server_address[1], tmp_path, api_timeout=0.5)
    assert agent_get(slow, "/latest/meta-data/", router_headers(seed)).status == 504


@pytest.mark.parametrize("headers,status", [
    ([("X-Forwarded-For", "172.16.1.199")], 404),  # no port with that address
    ([("X-Forwarded-For", "172.16.1.103"), ("X-Neutron-Network-ID", "x")], 400),  # both id headers
    ([("X-Forwarded-For", "172.16.1.103"), ("x-neutron-router-id", "second")], 400),  # two router ids
    ([("X-Forwarded-For", "172.16.1.103, 172.16.1.104")], 400),  # several addresses
    ([("X-Forwarded-For", "172.16.1.104"), ("X-Forwarded-For", "172.16.1.103")], 400),
    ([("X-Forwarded-For", "not-an-ip")], 400),
    ([], 400),  # router id without address
])
def test_bad_or_unknown_callers(setup, headers, status):
    _, seed, chain = setup
    answer = agent_get(chain, "/latest/meta-data/instance-id", [("X-Neutron-Router-ID", seed.router_id), *headers])
    assert answer.status == status
    assert agent_get(chain, "/latest/meta-data/", [("X-Forwarded-For", "172.16.1.103")]).status == 400
    assert agent_get(chain, "/latest/meta-data/", [("X-Neutron-Router-ID", "unknown-router"),
                                                   ("X-Forwarded-For", "172.16.1.103")]).status == 404


def test_same_ip_on_two_networks_told_apart_by_router_and_network(setup):
    registry, seed_a, chain = setup
    seed_b = build_seed(registry, {"other": "172.16.1.103"}, name="second_net")
    for seed, vm in ((seed_a, "vm1"), (seed_b, "other")):
        by_router = agent_get(chain, "/openstack/latest/meta_data.json",
                              [("X-Forwarded-For", "172.16.1.103"), ("X-Neutron-Router-ID", seed.router_id)])
        by_network = agent_get(chain, "/openstack/latest/meta_data.json",
                               [("X-Forwarded-For", "172.16.1.103"), ("X-Neutron-Network-ID", seed.network_id)])
        for answer in (by_router, by_network):
            assert answer.status == 200 and f'"uuid": "{seed.instances[vm]}"' in answer.text


def test_port_moving_to_another_instance_is_answered_with_its_new_owner_once_delivered(setup):
    registry, seed, chain = setup
    path = "/latest/meta-data/hostname"
    headers = router_headers(seed)
    assert agent_get(chain, path, headers).text == "vm1.novalocal"
    # the port moves to another instance
    add_vm(registry, seed, "vm3", "172.16.1.110")
    registry.update_port(seed.ports["vm1"], {"device_id": seed.instances["vm3"]})
    chain.settle()  # the change reaches the agent's and the API's caches through the feed (milliseconds)
    assert agent_get(chain, path, headers).text == "vm3.novalocal"
    # the address moves to another port (delete, then a new port takes the address)
    registry.delete_port(seed.ports["vm1"])
    chain.settle()
    assert agent_get(chain, path, headers).status == 404
    registry.create_port({"network_id": seed.network_id, "device_id": seed.instances["vm2"],
                          "device_owner": "compute:nova", "project_id": registry.get_instance(
                              seed.instances["vm2"]).project_id,
                          "fixed_ips": [{"subnet_id": seed.subnet_id, "ip_address": "172.16.1.103"}]})
    chain.settle()
    assert agent_get(chain, path, headers).text == "vm2.novalocal"
    # many alternations: every answer after a commit is the committed owner
    for i in range(10):
        inst = seed.instances["vm2" if i % 2 else "vm3"]
        port = registry.find_ports_by_ip("172.16.1.103", [seed.network_id])[0]
        registry.update_port(port.id, {"device_id": inst})
        chain.settle()
        expected = registry.get_instance(inst).hostname
        assert agent_get(chain, path, headers).text == f"{expected}.novalocal"


def test_rate_limit_answers_429_with_retry_after(setup, tmp_path, extra_agents):
    _, seed, chain = setup
    path = agent_to(chain, chain.api.port, tmp_path,
                    rate_limiter=RateLimiter([Window(60, 100), Window(10, 3)]))
    statuses = [agent_get(path, "/latest/meta-data/", router_headers(seed)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = agent_get(path, "/latest/meta-data/", router_headers(seed))
    assert limited.status == 429 and 1 <= int(limited.headers["retry-after"]) <= 10
    assert agent_get(path, "/latest/meta-data/", router_headers(seed, "172.16.1.104")).status == 200
    # off by default
    assert all(agent_get(chain, "/latest/meta-data/", router_headers(seed)).status == 200 for _ in range(5))


def test_status_pages_are_local_only(setup):
    _, seed, chain = setup
    assert agent_get(chain, "/healthz", []).status == 200
    assert agent_get(chain, "/readyz", []).status == 200
    agent_get(chain, "/latest/meta-data/", router_headers(seed))
    agent_get(chain, "/latest/meta-data/", router_headers(seed))
    metrics = agent_get(chain, "/metrics", []).text
    assert 'provnet_metadata_agent_cache_total{result="hit"}' in metrics
    assert 'provnet_metadata_agent_lookups_total{result="found"}' in metrics
    assert 'provnet_metadata_agent_requests_total{status="200"}' in metrics
    # a request that came through a proxy is a metadata request: the API answers 404 for /healthz
    assert agent_get(chain, "/healthz", router_headers(seed)).status == 404
    assert agent_get(chain, "/metrics", router_headers(seed)).status == 404


def test_ipv6_link_local_source_is_found_by_its_mac(setup):
    registry, seed, chain = setup
    mac = registry.get_port(seed.ports["vm2"]).mac_address
    octets = [int(x, 16) for x in mac.split(":")]
    eui = [octets[0] ^ 0x02, octets[1], octets[2], 0xFF, 0xFE, octets[3], octets[4], octets[5]]
    address = "fe80::" + ":".join(f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2))
    answer = agent_get(chain, "/openstack/latest/meta_data.json",
                       [("X-Forwarded-For", address), ("X-Neutron-Network-ID", seed.network_id)])
    assert answer.status == 200 and seed.instances["vm2"] in answer.text
    assert mac_from_link_local(address) == mac
    assert mac_from_link_local("fe80::1") is None and mac_from_link_local("172.16.1.103") is None
    privacy = agent_get(chain, "/latest/meta-data/", [("X-Forwarded-For", "fe80::1234:5678:9abc:def0"),
                                                      ("X-Neutron-Network-ID", seed.network_id)])
    assert privacy.status == 404


def test_router_losing_its_interface_stops_answering_for_that_network(setup):
    registry, seed, chain = setup
    headers = router_headers(seed)
    assert agent_get(chain, "/latest/meta-data/hostname", headers).status == 200
    registry.remove_router_interface(seed.router_id, subnet_id=seed.subnet_id)
    chain.settle()
    assert agent_get(chain, "/latest/meta-data/hostname", headers).status == 404
    registry.add_router_interface(seed.router_id, subnet_id=seed.subnet_id)
    chain.settle()
    assert agent_get(chain, "/latest/meta-data/hostname", headers).text == "vm1.novalocal"


def test_no_stale_answer_once_the_feed_delivered_a_commit_while_other_vms_keep_the_agent_busy(setup):
    registry, seed, chain = setup
    add_vm(registry, seed, "vm3", "172.16.1.110")
    stop = threading.Event()
    errors: list[str] = []

    def background() -> None:  # other VMs' traffic, so revision reads are shared between requests
        while not stop.is_set():
            answer = agent_get(chain, "/latest/meta-data/hostname", router_headers(seed, "172.16.1.104"))
            if answer.text != "vm2.novalocal":
                errors.append(answer.text)

    threads = [threading.Thread(target=background) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        port = seed.ports["vm1"]
        for i in range(20):
            owner = seed.instances["vm3" if i % 2 == 0 else "vm1"]
            registry.update_port(port, {"device_id": owner})
            chain.settle()
            expected = registry.get_instance(owner).hostname
            assert agent_get(chain, "/latest/meta-data/hostname", router_headers(seed)).text == \
                f"{expected}.novalocal"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


def make_pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    from conftest import need_tool

    need_tool("openssl")
    import subprocess

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    for ca in ("ca", "otherca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN={ca}")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=provnet-{name}")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")
    return tmp_path


def test_https_to_the_api_with_ca_and_client_certificate(setup, tmp_path, extra_agents):
    import ssl

    _, seed, chain = setup
    pki = make_pki(tmp_path)
    Capture.seen, Capture.status, Capture.delay = [], 200, 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED  # nova_client_cert must be presented
    context.load_verify_locations(pki / "ca.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    def agent(name: str, **tls) -> str:
        path = str(tmp_path / name)
        a = MetadataAgent(chain.registry, shared_secret=SECRET, socket_path=path,
                          api=api_target("127.0.0.1", port, "https", **tls), api_timeout=5)
        chain.loop.run(a.start())
        chain.extra = getattr(chain, "extra", []) + [a]
        return path

    try:
        good = agent("good", ca_cert=str(pki / "ca.pem"), client_cert=str(pki / "client.pem"),
                     client_key=str(pki / "client.key"))
        assert agent_get(good, "/latest/meta-data/", router_headers(seed)).status == 200
        wrong_ca = agent("wrong", ca_cert=str(pki / "otherca.pem"), client_cert=str(pki / "client.pem"),
                         client_key=str(pki / "client.key"))
        assert agent_get(wrong_ca, "/latest/meta-data/", router_headers(seed)).status == 503
        insecure = agent("insecure", insecure=True, ca_cert=str(pki / "otherca.pem"),
                         client_cert=str(pki / "client.pem"), client_key=str(pki / "client.key"))
        assert agent_get(insecure, "/latest/meta-data/", router_headers(seed)).status == 200
        no_client_cert = agent("nocert", ca_cert=str(pki / "ca.pem"))
        assert agent_get(no_client_cert, "/latest/meta-data/", router_headers(seed)).status == 503
        assert len(Capture.seen) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_one_ports_change_leaves_every_other_vms_entries_warm(setup):
    """Per-change invalidation (issue 16), counted: churn on other ports drops nothing of vm1's; a change to vm2's
    port drops vm2's entries only, in the agent and in the metadata API (SQLite and PostgreSQL)."""
    registry, seed, chain = setup
    add_vm(registry, seed, "vm3", "172.16.1.110")
    chain.settle()
    for ip in ("172.16.1.103", "172.16.1.104", "172.16.1.110"):  # everyone's entries are cached
        assert agent_get(chain, "/latest/meta-data/hostname", router_headers(seed, ip)).status == 200
    agent, api = chain.agent.lookup, chain.api
    dropped_agent, dropped_api = agent.invalidated, api.invalidated
    misses = chain.agent.metrics.cache_miss._value.get()
    for _ in range(20):  # churn elsewhere on the same network: ports created and deleted
        registry.delete_port(registry.create_port({"network_id": seed.network_id}).id)
    registry.update_port(seed.ports["vm2"], {"name": "renamed"})
    chain.settle()
    assert agent.invalidated - dropped_agent == 1  # vm2's (router, 172.16.1.104) entry, nothing else
    assert api.invalidated - dropped_api == 1  # vm2's tree
    for ip in ("172.16.1.103", "172.16.1.110"):
        assert agent_get(chain, "/latest/meta-data/hostname", router_headers(seed, ip)).status == 200
    assert chain.agent.metrics.cache_miss._value.get() == misses  # both answered from the cache
    assert agent_get(chain, "/latest/meta-data/hostname", router_headers(seed, "172.16.1.104")).status == 200
    assert chain.agent.metrics.cache_miss._value.get() == misses + 1  # vm2 alone was read again
