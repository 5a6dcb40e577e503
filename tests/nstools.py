# Test helpers: `pn`-named network namespaces on a bridge, real DHCP clients in them, and clean teardown.
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import unique

# Applies a lease inside a client namespace, like cirros-dhcpc does for the seed: the address, then the classless
# routes (121, else 249), the router option only when neither came (RFC 3442). udhcpc calls it with $1 and its
# variables, dhclient with $reason and new_*; it also records what it got as JSON next to itself.
LEASE_SCRIPT = r'''#!/usr/bin/python3
import json, os, subprocess, sys
env = os.environ
event = sys.argv[1] if len(sys.argv) > 1 else env.get("reason", "")
if event not in ("bound", "renew", "BOUND", "RENEW", "REBOOT", "REBIND"):
    sys.exit(0)
dev = env.get("interface", "eth0")
if "reason" in env:
    ip, mask = env["new_ip_address"], env["new_subnet_mask"]
    b = [int(x) for x in env.get("new_rfc3442_classless_static_routes", "").split()]
    routes = []
    while len(b) >= 5:
        n = (b[0] + 7) // 8
        dest = b[1:1 + n] + [0] * (4 - n)
        routes.append(("%d.%d.%d.%d/%d" % (*dest, b[0]), "%d.%d.%d.%d" % tuple(b[1 + n:5 + n])))
        b = b[5 + n:]
    router = env.get("new_routers", "").split()
    hostname = env.get("new_host_name", "")
else:
    ip, mask = env["ip"], env["subnet"]
    words = (env.get("staticroutes") or env.get("msstaticroutes") or "").split()
    routes = list(zip(words[0::2], words[1::2]))
    router = env.get("router", "").split()
    hostname = env.get("hostname", "")
def sh(*args):
    subprocess.run(["ip", *args], check=True)
sh("-4", "addr", "flush", "dev", dev)
sh("addr", "add", "%s/%s" % (ip, mask), "dev", dev)
sh("link", "set", dev, "up")
for dest, hop in routes:
    if hop == "0.0.0.0":
        sh("route", "replace", dest, "dev", dev, "scope", "link")
    else:
        sh("route", "replace", dest, "via", hop, "dev", dev)
if not routes and router:
    sh("route", "replace", "default", "via", router[0], "dev", dev)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lease-%s.json" % dev)
with open(out, "w") as fh:
    json.dump({"ip": ip, "mask": mask, "routes": routes, "router": router, "hostname": hostname}, fh)
'''


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def routes(ns: str, dev: str = "eth0") -> set[str]:
    """The namespace's IPv4 routes as 'dest via hop' / 'dest dev' strings (kernel 'default' shown as 0.0.0.0/0)."""
    out = set()
    for r in json.loads(sh("ip", "-n", ns, "-4", "-j", "route", "show", "dev", dev).stdout or "[]"):
        dst = "0.0.0.0/0" if r["dst"] == "default" else r["dst"]
        if "/" not in dst:
            dst += "/32"
        out.add(f"{dst} via {r['gateway']}" if "gateway" in r else f"{dst} connected")
    return out


def addresses(ns: str, dev: str = "eth0") -> list[str]:
    info = json.loads(sh("ip", "-n", ns, "-4", "-j", "addr", "show", "dev", dev).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]


@dataclass
class Lan:
    """A server namespace holding bridge `bridge` (with `server_cidr`) and client namespaces plugged into it."""

    server_ns: str
    bridge: str
    server_cidr: str
    workdir: Path
    clients: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def add_client(self, mac: str) -> str:
        """A namespace with `eth0` (MAC `mac`, no address) whose peer is on the bridge; returns its name."""
        ns = unique()
        sh("ip", "netns", "add", ns)
        self.clients.append(ns)
        peer = unique()
        sh("ip", "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", peer,
           "netns", self.server_ns)
        sh("ip", "-n", self.server_ns, "link", "set", peer, "master", self.bridge, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def spawn(self, ns: str, *args: str, log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
        """Start a process in `ns`; it is killed at teardown."""
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(in_ns(ns, *args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def script(self, ns: str) -> Path:
        """A private copy of the lease script for the client in `ns` (it writes lease-eth0.json beside itself)."""
        d = self.workdir / ns
        d.mkdir(parents=True, exist_ok=True)
        path = d / "lease.py"
        path.write_text(LEASE_SCRIPT)
        path.chmod(0o755)
        return path

    def udhcpc(self, ns: str, timeout: float = 15, ask_routes: bool = True) -> subprocess.CompletedProcess:
        """busybox udhcpc asking for 121 and 249 (as cloud-init and the seed's cirros do, unless ask_routes is
        False: then its default request list, without them); exits after a lease."""
        ask = ["-O", "staticroutes", "-O", "msstaticroutes"] if ask_routes else []
        return sh(*in_ns(ns, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "4", "-T", "2", "-i", "eth0", *ask,
                         "-s", str(self.script(ns))), check=False, timeout=timeout)

    def dhclient(self, ns: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """ISC dhclient with Debian's dhclient.conf (it requests 121); -1: one try, then it stays to renew."""
        d = self.workdir / ns
        script = self.script(ns)
        res = sh(*in_ns(ns, "dhclient", "-1", "-v", "-sf", str(script), "-lf", str(d / "dhclient.leases"),
                        "-pf", str(d / "dhclient.pid"), "eth0"), check=False, timeout=timeout)
        return res

    def lease(self, ns: str) -> dict | None:
        path = self.workdir / ns / "lease-eth0.json"
        return json.loads(path.read_text()) if path.exists() else None

    def teardown(self) -> None:
        for proc in self.procs:
            _kill(proc)
        for ns in self.clients:
            pidfile = self.workdir / ns / "dhclient.pid"
            if pidfile.exists():
                try:
                    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
        for ns in [*self.clients, self.server_ns]:
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", ns, check=False)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


def make_lan(workdir: Path, server_cidr: str = "172.16.1.99/24") -> Lan:
    """Server namespace + bridge with `server_cidr`. Call .teardown() (a fixture finalizer) to remove it all."""
    ns, bridge = unique(), unique()
    sh("ip", "netns", "add", ns)
    lan = Lan(ns, bridge, server_cidr, workdir)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", bridge, "type", "bridge", "forward_delay", "0")
        sh("ip", "-n", ns, "addr", "add", server_cidr, "dev", bridge)
        sh("ip", "-n", ns, "link", "set", bridge, "up")
    except Exception:
        lan.teardown()
        raise
    return lan


def wait_udp_listen(ns: str, port: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sh("ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}", check=False).stdout.strip():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on udp {port} in {ns}")



class LoopbackRelay:
    """Make host-loopback TCP ports reachable at the same 127.0.0.1:PORT inside namespace `ns` (two socat each:
    TCP in the namespace -> a unix socket file -> TCP on the host's loopback). No host interface is touched."""

    def __init__(self, ns: str, workdir: Path) -> None:
        self.ns, self.workdir = ns, workdir
        self.procs: list[subprocess.Popen] = []
        workdir.mkdir(parents=True, exist_ok=True)

    def add(self, port: int) -> None:
        sock = self.workdir / f"relay-{port}.sock"
        self.procs.append(subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{sock},fork,unlink-early", f"TCP:127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"socat did not create {sock}")
            time.sleep(0.05)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        self.procs.append(subprocess.Popen(
            in_ns(self.ns, "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{sock}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 10
        while not sh(*in_ns(self.ns, "ss", "-Hltn", f"sport = :{port}"), check=False).stdout.strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"socat does not listen on {port} in {self.ns}")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.procs:
            _kill(proc)
        self.procs.clear()
