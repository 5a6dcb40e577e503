# Test helper: a host namespace with its provider bridge, the metadata chain, the seed in the registry, VMs on the
# bridge, and `provnet l3-agent` processes run inside the host namespace as an operator would run them.
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from conftest import unique
from metadata_chain import KEY, PROJECT, USER_DATA, Chain

from provnet.dataplane import netns
from provnet.lab.procs import stop_pid

PYTHON = sys.executable


def wait_for(check, timeout: float = 10.0, what: str = "condition", step: float = 0.02) -> float:
    """Poll `check` until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def ns_curl(ns: str, url: str = "http://169.254.169.254/openstack/latest/meta_data.json", timeout: float = 2) \
        -> tuple[int, str]:
    proc = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", str(timeout), "-o", "/dev/stdout",
                           "-w", "\n%{http_code}", url], capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


# A VM polling metadata in a loop: prints one JSON line at the end with counts and failures (time, error).
POLLER = r'''
import json, sys, time, urllib.request
until = time.monotonic() + float(sys.argv[1]); ok = 0; failures = []
while time.monotonic() < until:
    t = time.monotonic()
    try:
        with urllib.request.urlopen("http://169.254.169.254/openstack/latest/meta_data.json", timeout=2) as r:
            r.read(); ok += 1
    except Exception as e:
        failures.append([round(t, 3), repr(e)[:120]])
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failures": failures}))
'''


@dataclass
class Agent:
    host: str
    conf: Path
    proc: subprocess.Popen
    log: Path


@dataclass
class World:
    registry: object
    chain: Chain
    tmp: Path
    db_url: str
    suffix: str
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> namespace (with br-phy)
    vms: dict[str, str] = field(default_factory=dict)  # vm name -> namespace
    ports: dict[str, str] = field(default_factory=dict)  # vm name -> port id
    network_id: str = ""
    subnet_id: str = ""
    router_id: str = ""
    agents: list[Agent] = field(default_factory=list)
    down_time: float = 75.0

    def ns_suffix(self, host: str) -> str:
        return f"@{self.suffix}{host}"

    def router_ns(self, host: str, router_id: str | None = None) -> str:
        return f"qrouter-{router_id or self.router_id}{self.ns_suffix(host)}"

    def add_host(self, host: str) -> str:
        ns = f"{self.suffix}-{host}"
        netns.ensure_namespace(ns)
        self.hosts[host] = ns
        netns.ensure_bridge(ns, "br-phy")
        return ns

    def join_hosts(self) -> None:
        """The provider segment between hosts: a veth from each host's br-phy to a switch namespace."""
        sw = f"{self.suffix}-sw"
        netns.ensure_namespace(sw)
        netns.ensure_bridge(sw, "seg")
        self.hosts.setdefault("_switch", sw)
        for i, (host, ns) in enumerate(sorted(self.hosts.items())):
            if host == "_switch":
                continue
            netns.ensure_veth(sw, f"{self.suffix}s{i}", ns, "uplink")
            netns.attach_to_bridge(sw, f"{self.suffix}s{i}", "seg")
            netns.attach_to_bridge(ns, "uplink", "br-phy")

    def add_vm(self, host: str, name: str, ip: str, via: str = "172.16.1.2", bound: bool = False) -> str:
        """A VM on `host`'s bridge whose route to 169.254.169.254 goes `via` (the router's address, or network
        mode's metadata port); `bound`: its port's binding:host_id names the host, as Nova sets it."""
        reg = self.registry
        inst = reg.create_instance({
            "name": name, "hostname": name, "project_id": PROJECT,
            "user_data": base64.b64encode(USER_DATA).decode(),
            "key_pairs": [{"name": "k", "data": KEY, "type": "ssh"}], "metadata": {"vm": name}})
        port = reg.create_port({"network_id": self.network_id, "project_id": PROJECT, "device_id": inst.id,
                                "device_owner": "compute:nova", "name": f"{name}-port",
                                "fixed_ips": [{"subnet_id": self.subnet_id, "ip_address": ip}],
                                **({"binding:host_id": host} if bound else {})})
        self.ports[name] = port.id
        ns = f"{self.suffix}-{name}"
        netns.ensure_namespace(ns)
        self.vms[name] = ns
        tap = f"tap{port.id[:11]}"
        netns.ensure_veth(self.hosts[host], tap, ns, "eth0", mac=port.mac_address)
        netns.attach_to_bridge(self.hosts[host], tap, "br-phy")
        netns.ensure_address(ns, "eth0", ip, 24)
        netns.ensure_route(ns, "169.254.169.254/32", via)
        return inst.id

    def agent_db_url(self) -> str:
        """The database as a process in a host namespace reaches it: SQLite is a file; PostgreSQL listens on the
        machine's loopback, which a namespace does not share, so a socat relay on a unix socket (a file) carries
        it (the server still sees a TCP client and checks its password)."""
        if not self.db_url.startswith("postgresql"):
            return self.db_url
        relay = self.tmp / "pg"
        if not relay.exists():
            relay.mkdir()
            self.start_relay()
        url = urllib.parse.urlsplit(self.db_url)
        userinfo = url.netloc.rsplit("@", 1)[0]
        query = f"{url.query}&host={relay}" if url.query else f"host={relay}"
        port = urllib.parse.urlsplit(self.db_url.replace("postgresql+psycopg", "http")).port or 5432
        return urllib.parse.urlunsplit((url.scheme, f"{userinfo}@:{port}", url.path, query, ""))

    def start_relay(self) -> None:
        relay = self.tmp / "pg"
        url = urllib.parse.urlsplit(self.db_url.replace("postgresql+psycopg", "http"))
        sock = relay / f".s.PGSQL.{url.port or 5432}"
        sock.unlink(missing_ok=True)
        self.relay = subprocess.Popen(["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:{url.hostname}:{url.port or 5432}"],
                                      start_new_session=True)
        wait_for(sock.exists, 10, "the PostgreSQL relay")

    def cut_relay(self) -> None:
        """The agents' database unreachable: the relay and every connection it carries (its process group)."""
        relay = getattr(self, "relay", None)
        if relay is not None and relay.poll() is None:
            os.killpg(relay.pid, signal.SIGKILL)
            relay.wait(5)

    def config(self, host: str, **extra: str) -> Path:
        conf = self.tmp / f"{host}.conf"
        state = self.tmp / host
        state.mkdir(exist_ok=True)
        lines = ["[DEFAULT]", f"state_path = {state}", f"host = {host}",
                 f"metadata_proxy_socket = {self.chain.socket_path}", f"agent_down_time = {self.down_time}",
                 "[database]", f"connection = {self.agent_db_url()}", "[ovs]", "bridge_mappings = physnet1:br-phy",
                 "[agent]", f"report_interval = {extra.pop('report_interval', '1')}",
                 f"resync_interval = {extra.pop('agent_resync_interval', '300')}",
                 "[l3_agent]", f"namespace_suffix = {self.ns_suffix(host)}",
                 f"resync_interval = {extra.pop('resync_interval', '300')}"]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start_agent(self, host: str, verb: str = "l3-agent", **extra: str) -> Agent:
        """The agent (`provnet l3-agent`, or `provnet agent`) in the host's network namespace only (nsenter --net),
        sharing the machine's mount namespace as on a real host: `ip netns exec` would give it a private
        /run/netns, hiding what it creates."""
        conf = self.conf_of(host) or self.config(host, **extra)
        log = self.tmp / f"{host}-{verb}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROVNET_")}
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{self.hosts[host]}", PYTHON, "-m", "provnet.cli",
                                     "--config-file", str(conf), "--debug", verb],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        agent = Agent(host, conf, proc, log)
        self.agents.append(agent)
        return agent

    def conf_of(self, host: str) -> Path | None:
        conf = self.tmp / f"{host}.conf"
        return conf if conf.exists() else None

    def stop_agent(self, agent: Agent, sig: int = signal.SIGTERM) -> None:
        if agent.proc.poll() is None:
            agent.proc.send_signal(sig)
            try:
                agent.proc.wait(10)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)

    def proxy_pid(self, host: str, router_id: str | None = None) -> int | None:
        path = self.tmp / host / "external" / "pids" / f"{router_id or self.router_id}.pid"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def agent_log(self, agent: Agent) -> str:
        return agent.log.read_text(errors="replace")

    def teardown(self) -> None:
        for agent in self.agents:
            self.stop_agent(agent, signal.SIGKILL)
        ours = [n for n in netns.list_namespaces() if self.suffix in n]
        for ns in ours:  # proxies and anything else we started in our namespaces
            for pid in netns.pids_in_namespace(ns):
                stop_pid(pid, None, grace=2)
        for ns in sorted(ours, key=lambda n: not n.startswith("qrouter-")):
            netns.delete_namespace(ns)
        self.chain.close()
        self.cut_relay()


def seed(world: World) -> None:
    reg = world.registry
    net = reg.create_network({"name": "phy_net", "router:external": True, "provider:network_type": "flat",
                              "provider:physical_network": "physnet1"})
    subnet = reg.create_subnet({
        "network_id": net.id, "cidr": "172.16.1.0/24", "ip_version": 4, "gateway_ip": "172.16.1.2",
        "enable_dhcp": False, "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
        "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}]})
    world.network_id, world.subnet_id = net.id, subnet.id


def make_world(registry, tmp: Path, db_url: str, down_time: float = 75.0) -> World:
    chain = Chain(registry, tmp)
    world = World(registry, chain, tmp, db_url, unique("pn")[:8], down_time=down_time)
    seed(world)
    return world


def poll_in_vm(ns: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", POLLER, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def poll_result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])
