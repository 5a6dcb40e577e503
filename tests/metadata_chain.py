# Test helpers for the metadata path: the seed in a real registry, the API and agent on a background event loop,
# raw HTTP over the agent's unix socket, and a router namespace + VM namespaces with a real proxy process.
from __future__ import annotations

import asyncio
import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import unique

from provnet.metadata.agent import MetadataAgent, api_target
from provnet.metadata.api import MetadataApi
from provnet.metadata.ratelimit import RateLimiter

SECRET = "s3cret-for-tests"
PROJECT = "6f1e1f1e0a0a4c2b9d3c1a2b3c4d5e6f"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGprovnettestkeyprovnettestkeyprov vm@provnet"
USER_DATA = b"#cloud-config\nhostname: from-user-data\n"
PROVNET_BIN = str(Path(sys.executable).parent / "provnet")


@dataclass
class Seed:
    network_id: str
    subnet_id: str
    router_id: str
    instances: dict[str, str] = field(default_factory=dict)  # name -> instance uuid
    ports: dict[str, str] = field(default_factory=dict)  # name -> port id
    ips: dict[str, str] = field(default_factory=dict)  # name -> fixed ip


def build_seed(registry, vms: dict[str, str] | None = None, cidr: str = "172.16.1.0/24",
               gateway: str = "172.16.1.2", external_router: str = "172.16.1.1", name: str = "phy_net") -> Seed:
    """The seed's flat external network, its DHCP-less subnet, a router on the gateway, and one VM per entry."""
    vms = vms if vms is not None else {"vm1": "172.16.1.103", "vm2": "172.16.1.104"}
    net = registry.create_network({"name": name, "router:external": True, "provider:network_type": "flat",
                                   "provider:physical_network": f"physnet-{unique('')}"})
    prefix = cidr.rsplit(".", 1)[0]
    subnet = registry.create_subnet({
        "network_id": net.id, "cidr": cidr, "ip_version": 4, "gateway_ip": gateway, "enable_dhcp": False,
        "name": "phy_subnet_without_dhcp",
        "allocation_pools": [{"start": f"{prefix}.102", "end": f"{prefix}.126"}],
        "host_routes": [{"destination": "0.0.0.0/0", "nexthop": external_router}],
        "dns_nameservers": [external_router]})
    router = registry.create_router({"name": f"router-{name}"})
    registry.add_router_interface(router.id, subnet_id=subnet.id)
    seed = Seed(net.id, subnet.id, router.id)
    for vm, ip in vms.items():
        add_vm(registry, seed, vm, ip)
    return seed


def add_vm(registry, seed: Seed, vm: str, ip: str, project_id: str = PROJECT) -> None:
    inst = registry.create_instance({
        "name": vm, "hostname": vm, "project_id": project_id,
        "user_data": base64.b64encode(USER_DATA + f"# {vm}\n".encode()).decode(),
        "key_pairs": [{"name": f"{vm}-key", "data": KEY, "type": "ssh"}], "metadata": {"vm": vm}})
    port = registry.create_port({"network_id": seed.network_id, "project_id": project_id,
                                 "fixed_ips": [{"subnet_id": seed.subnet_id, "ip_address": ip}],
                                 "device_id": inst.id, "device_owner": "compute:nova", "name": f"{vm}-port"})
    seed.instances[vm], seed.ports[vm], seed.ips[vm] = inst.id, port.id, ip


class LoopThread:
    """An asyncio loop in a daemon thread, so blocking clients (cloud-init, urllib) can run in the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Chain:
    """The metadata API on 127.0.0.1:<free port> and the agent on a unix socket, sharing one registry."""

    def __init__(self, registry, tmp_path: Path, *, secret: str = SECRET, agent_secret: str | None = None,
                 rate_limiter: RateLimiter | None = None, trusted_networks=(), api_timeout: float = 60.0,
                 **api_options) -> None:
        self.registry = registry
        self.socket_path = str(tmp_path / "metadata_proxy")
        self.loop = LoopThread()
        self.api = MetadataApi(registry, shared_secret=secret, port=0, trusted_networks=trusted_networks,
                               **api_options)
        self.loop.run(self.api.start())
        self.agent = MetadataAgent(registry, shared_secret=secret if agent_secret is None else agent_secret,
                                   socket_path=self.socket_path, api=api_target("127.0.0.1", self.api.port),
                                   rate_limiter=rate_limiter, api_timeout=api_timeout)
        self.loop.run(self.agent.start())

    def settle(self, timeout: float = 30) -> None:
        """Wait until the agent's and the API's change feeds applied everything committed so far (a change is
        seen by the metadata path when its feed delivers it: milliseconds, not at the commit's return)."""
        target = self.registry.revision()
        deadline = time.monotonic() + timeout
        for feed in (self.agent.feed, self.api.feed):
            while feed.revision is None or feed.revision < target:
                assert time.monotonic() < deadline, f"{feed.name} did not reach revision {target}"
                time.sleep(0.002)

    def close(self) -> None:
        try:
            self.loop.run(self.agent.stop())
            self.loop.run(self.api.stop())
        finally:
            self.loop.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode()


def http_request(conn: http.client.HTTPConnection, method: str, path: str,
                 headers: list[tuple[str, str]] = (), body: bytes | None = None) -> Answer:
    """One request with exactly these headers (duplicates and any letter case kept)."""
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})


def agent_get(chain_or_path, path: str, headers: list[tuple[str, str]], method: str = "GET",
              body: bytes | None = None) -> Answer:
    socket_path = chain_or_path if isinstance(chain_or_path, str) else chain_or_path.socket_path
    conn = UnixHTTPConnection(socket_path)
    try:
        return http_request(conn, method, path, [("Host", "localhost"), *headers], body)
    finally:
        conn.close()


def api_get(port: int, path: str, headers: list[tuple[str, str]], method: str = "GET",
            body: bytes | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        return http_request(conn, method, path, [("Host", "127.0.0.1"), *headers], body)
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---- network namespaces: a router namespace with the proxy, VM namespaces on a bridge -----------------------

def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class Topology:
    """Router namespace (bridge with the gateway address, iptables REDIRECT 169.254.169.254:80 -> 9697)
    and one namespace per VM, each with its port's address and the routes network_data.json describes."""

    router_ns: str
    bridge: str
    vm_ns: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def exec_args(self, vm: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.vm_ns[vm], *args]

    def start_proxy(self, socket_path: str, router_id: str, state_path: str, log_path: str,
                    port: int = 9697) -> subprocess.Popen:
        log = open(log_path, "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.router_ns, PROVNET_BIN, "--debug",
             "--state-path", state_path, "metadata-proxy", "--router-id", router_id, "--port", str(port),
             "--socket", socket_path], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def stop_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def teardown(self) -> None:
        self.stop_procs()
        for ns in [*self.vm_ns.values(), self.router_ns]:
            sh("ip", "netns", "delete", ns, check=False)


def build_topology(vms: dict[str, str], gateway: str = "172.16.1.2", prefix: int = 24,
                   routes: list[tuple[str, str]] | None = None, macs: dict[str, str] | None = None) -> Topology:
    """Creates the namespaces; the caller must call `teardown()` (fixtures do, in a finalizer)."""
    topo = Topology(router_ns=unique("pnr"), bridge=unique("pnb"))
    try:
        sh("ip", "netns", "add", topo.router_ns)
        rns = ["ip", "-n", topo.router_ns]
        sh(*rns, "link", "set", "lo", "up")
        sh(*rns, "link", "add", topo.bridge, "type", "bridge")
        sh(*rns, "addr", "add", f"{gateway}/{prefix}", "dev", topo.bridge)
        sh(*rns, "link", "set", topo.bridge, "up")
        sh("ip", "netns", "exec", topo.router_ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-d",
           "169.254.169.254/32", "-i", topo.bridge, "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "REDIRECT",
           "--to-ports", "9697")
        for vm, ip in vms.items():
            ns = unique("pnv")
            topo.vm_ns[vm] = ns
            outer, inner = unique("pnh"), unique("pnc")
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outer, "netns", topo.router_ns, "type", "veth", "peer", "name", inner,
               "netns", ns)
            sh(*rns, "link", "set", outer, "master", topo.bridge, "up")
            vns = ["ip", "-n", ns]
            sh(*vns, "link", "set", "lo", "up")
            sh(*vns, "link", "set", inner, "name", "eth0")
            if macs and vm in macs:
                sh(*vns, "link", "set", "eth0", "address", macs[vm])
            sh(*vns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
            sh(*vns, "link", "set", "eth0", "up")
            for dest, hop in routes or [("169.254.169.254/32", gateway)]:
                sh(*vns, "route", "add", dest, "via", hop)
    except BaseException:
        topo.teardown()
        raise
    return topo


def wait_port(ns: str, address: str, port: int, timeout: float = 15.0) -> None:
    def ready() -> bool:
        return sh("ip", "netns", "exec", ns, "python3", "-c",
                  f"import socket; socket.create_connection(({address!r}, {port}), 1).close()",
                  check=False).returncode == 0
    wait_for(ready, timeout, f"{address}:{port} in {ns}")


def ns_python(topo: Topology, vm: str, code: str, timeout: float = 120,
              python: str = "/usr/bin/python3") -> subprocess.CompletedProcess:
    """Run Python code inside a VM namespace (Debian's python3 by default: it has cloud-init)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    return subprocess.run(topo.exec_args(vm, python, "-c", code), capture_output=True, text=True,
                          timeout=timeout, env=env)


# Runs inside a VM namespace: sends raw HTTP requests (headers exactly as given: any case, duplicates) to
# 169.254.169.254:80, one connection each, and prints the answers as JSON.
RAW_CLIENT = r'''
import json, socket, sys
out = []
for method, path, headers, body in json.loads(sys.argv[1]):
    body = body.encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 169.254.169.254", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    s = socket.create_connection(("169.254.169.254", 80), 10)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = dict((k.lower(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines))
    out.append({"status": int(status_line.split()[1]), "headers": hdrs, "body": payload.decode("utf-8", "replace")})
print(json.dumps(out))
'''


def vm_requests(topo: Topology, vm: str, requests: list) -> list[dict]:
    import json

    proc = subprocess.run(topo.exec_args(vm, "/usr/bin/python3", "-c", RAW_CLIENT, json.dumps(requests)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def setup(db_url, tmp_path):
    """(registry, seed, chain): the seed's network on `db_url` and an API + agent chain over it, torn down after."""
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    seed = build_seed(registry)
    chain = Chain(registry, tmp_path)
    yield registry, seed, chain
    chain.close()
    registry.close()
