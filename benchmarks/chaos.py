# Chaos run (issue 10): the faults and abuse of the table against `provnet serve` with real parts, one table.
"""One world, built and torn down by this command (root):

- a router namespace (`pnr...`) with a bridge at 172.16.1.2/24, the iptables redirect of 169.254.169.254:80, the real
  `provnet metadata-proxy` (at a stock 1,024 open files, so it cannot raise them) and the real `provnet serve`
  (networking API, metadata API, metadata agent, DHCP server on the bridge), on a private PostgreSQL
  (tests/pg_private.py: initdb in a temp dir, so it can be stopped and frozen) and a state directory on a small
  tmpfs of its own (so the lease journal's disk can fill);
- victim VMs (`pnv...` namespaces, static addresses): each asks for its own meta_data.json through the proxy,
  --rate times a second on a new connection (as cloud-init does), the whole run long;
- DHCP VMs (namespaces without an address): busybox udhcpc gets a lease (DISCOVER, REQUEST, ACK) again and again;
- an abuser VM, registered like the others, for the rows that need a hostile guest.

Rows (issue 10's numbers), each for --seconds where it is a timed fault:

  none      nobody misbehaves: the baseline the other rows are read against
  1 hold    the abuser opens 2,000 connections to 169.254.169.254 and holds whatever it gets, idle
  2 sigstop PostgreSQL frozen (SIGSTOP of the postmaster and every backend)
  3 pgstop  PostgreSQL stopped (fast shutdown), then started again
  4 kill-*  kill -9 of each child of serve (metadata API, metadata agent, DHCP server), one at a time
  5 disk    the tmpfs holding serve's state (the lease journal) filled to the last byte, then freed
  6 pipe    --pipeline requests pipelined on one keep-alive connection through the proxy
  7 cl      requests with `Content-Length: ²` (byte 0xb2) at the proxy, --hostile of them; and malformed chunk
            sizes (-6, 0x5, +5, 5_0, ...) from an upstream, to the real upstream client (in this process)
  8 badapi  hostile API input: JSON nested 100,000 deep, lone surrogates, integers past 2^63, NUL, 10 MB bodies
  9 bulk    one POST of 20,000 ports without MACs (the server draws them) on a /14
  10 list   with --ports ports stored: GET /v2.0/ports?limit=1, then 8 concurrent full listings (following the
            pages' next links)

Columns: victims' metadata requests answered / failed during the row (and p99 ms), DHCP ACKs the DHCP VMs got
during it (and udhcpc runs that got none), recovery (seconds from the end of the fault until the service it hit
answers again), and what was lost. At the end serve is killed with SIGKILL and the lease journal replayed: every ACK
a DHCP VM got must be in it.

    .venv/bin/python benchmarks/chaos.py                       # every row, 15 s faults, 20,000 ports
    .venv/bin/python benchmarks/chaos.py --rows none,2,3 --seconds 22
    .venv/bin/python benchmarks/chaos.py --ports 100000        # row 10 at the issue's size (bulks more first)
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from api_scale import full_listing  # noqa: E402
from conftest import unique  # noqa: E402
from metadata_abuse import start_abuser, stop  # noqa: E402
from metadata_chain import PROVNET_BIN, Topology, add_vm, build_seed, build_topology, wait_port  # noqa: E402
from pg_private import PrivatePostgres  # noqa: E402

from provnet.dhcp.journal import JOURNAL_NAME, read_journal  # noqa: E402
from provnet.metadata.upstream import Target, Upstream, UpstreamUnavailable  # noqa: E402
from provnet.registry import open_registry  # noqa: E402

API = "http://127.0.0.1:9696"
SECRET = "chaos-secret"
ROWS = ["none", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]

# A victim VM: --rate requests a second for its own meta_data.json, each on a new connection; one line per request:
# "<unix time> <1|0> <ms> [why]".
VICTIM = r'''
import socket, sys, time
expect, rate = sys.argv[1].encode(), float(sys.argv[2])
req = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n"
due = time.monotonic()
while True:
    due += 1 / rate
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    else:
        due = time.monotonic()
    t0, p0, ok, why = time.time(), time.perf_counter(), 0, ""
    try:
        s = socket.create_connection(("169.254.169.254", 80), 60)
        s.settimeout(60)
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = int(data.startswith(b"HTTP/1.1 200") and expect in data)
        why = "" if ok else (data.split(b"\r\n", 1)[0].decode(errors="replace").replace(" ", "_") or "empty")
    except OSError as exc:
        why = type(exc).__name__
    print(f"{t0:.3f} {ok} {(time.perf_counter() - p0) * 1000:.2f} {why}", flush=True)
'''

# Row 6: `count` GETs pipelined on one connection (written by a thread while the answers are read); prints
# {"answered": n, "ok": n, "in_order": bool, "seconds": s, "error": ...}.
PIPELINE = r'''
import json, socket, sys, threading, time
count, expect = int(sys.argv[1]), sys.argv[2].encode()
req = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
s = socket.create_connection(("169.254.169.254", 80), 10)
s.settimeout(30)
t0 = time.perf_counter()
threading.Thread(target=lambda: s.sendall(req * count), daemon=True).start()
buf, answered, ok, error = b"", 0, 0, ""
try:
    while answered < count:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = s.recv(1 << 16)
            if not chunk:
                error = "closed"
                break
            buf += chunk
            continue
        head = buf[:end].lower()
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(buf) < end + 4 + length:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise OSError("closed in a body")
            buf += chunk
        answered += 1
        ok += head.startswith(b"http/1.1 200") and expect in buf[end + 4:end + 4 + length]
        buf = buf[end + 4 + length:]
except OSError as exc:
    error = repr(exc)
print(json.dumps({"answered": answered, "ok": ok, "seconds": time.perf_counter() - t0, "error": error}))
'''

# Row 7: `count` requests with Content-Length: \xb2, each on a new connection, `rate` a second; prints the statuses.
HOSTILE_CL = r'''
import json, socket, sys, time
count, rate = int(sys.argv[1]), float(sys.argv[2])
req = b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: \xb2\r\n\r\nxx"
statuses = {}
start = time.monotonic()
for i in range(count):
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    try:
        s = socket.create_connection(("169.254.169.254", 80), 10)
        s.settimeout(10)
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        key = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "no answer"
    except OSError as exc:
        key = type(exc).__name__
    statuses[key] = statuses.get(key, 0) + 1
print(json.dumps(statuses))
'''

LEASE_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
echo "$ip" > "$(dirname "$0")/lease"
"""


def setns(name: str) -> None:
    """Move this process (its only thread, so far) into network namespace `name`: serve's API listens on the
    router namespace's loopback."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def http(method: str, path: str, body: bytes | None = None, timeout: float = 60,
         headers: dict | None = None) -> tuple[int, bytes, float]:
    """(status or 0 when there was no answer, body, seconds) of one request to serve's networking API."""
    started = time.perf_counter()
    req = urllib.request.Request(API + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.perf_counter() - started
    except OSError:
        return 0, b"", time.perf_counter() - started


@dataclass
class Recorder:
    """Timestamped outcomes from the victims, the DHCP VMs and the /healthz probe, read by window afterwards."""

    metadata: list[tuple[float, bool, float, str]] = field(default_factory=list)
    dhcp: list[tuple[float, bool, str, str]] = field(default_factory=list)  # (time, ACK?, ip, mac)
    health: list[tuple[float, bool, float]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def read_victim(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            parts = line.split()
            if len(parts) >= 3:
                self.metadata.append((float(parts[0]), parts[1] == "1", float(parts[2]),
                                      parts[3] if len(parts) > 3 else ""))

    def dhcp_loop(self, ns: str, mac: str, workdir: Path) -> None:
        script = workdir / "lease.sh"
        script.write_text(LEASE_SCRIPT)
        script.chmod(0o755)
        lease = workdir / "lease"
        while not self.stopping.is_set():
            lease.unlink(missing_ok=True)
            done = subprocess.run(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "2",
                                   "-T", "1", "-i", "eth0", "-s", str(script)], capture_output=True, timeout=60)
            got = done.returncode == 0 and lease.exists()
            self.dhcp.append((time.time(), got, lease.read_text().strip() if got else "", mac))
            self.stopping.wait(0.3)

    def health_loop(self) -> None:
        while not self.stopping.is_set():
            status, _, seconds = http("GET", "/healthz", timeout=30)
            self.health.append((time.time(), status == 200, seconds * 1000))
            self.stopping.wait(0.05)

    def window(self, start: float, end: float) -> dict:
        meta = [m for m in self.metadata if start <= m[0] <= end]
        acks = [d for d in self.dhcp if start <= d[0] <= end]
        health = [h for h in self.health if start <= h[0] <= end]
        return {"answered": sum(m[1] for m in meta), "failed": sum(not m[1] for m in meta),
                "p99": pct([m[2] for m in meta if m[1]], 0.99), "max": max((m[2] for m in meta), default=float("nan")),
                "why": dict(Counter(m[3] for m in meta if not m[1]).most_common(3)),
                "acks": sum(d[1] for d in acks), "dhcp_failed": sum(not d[1] for d in acks),
                "health_p99": pct([h[2] for h in health if h[1]], 0.99),
                "health_max": max((h[2] for h in health), default=float("nan")),
                "health_failed": sum(not h[1] for h in health)}

    def first_after(self, kind: str, since: float) -> float | None:
        """Seconds from `since` to the first success of `kind` (metadata | dhcp) after it."""
        rows = self.metadata if kind == "metadata" else self.dhcp
        found = [r[0] for r in rows if r[0] >= since and r[1]]
        return min(found) - since if found else None


class World:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="pn-chaos-"))
        self.mnt = self.workdir / "disk"
        self.topo: Topology | None = None
        self.pg: PrivatePostgres | None = None
        self.serve: subprocess.Popen | None = None
        self.victims: list[subprocess.Popen] = []
        self.dhcp_ns: dict[str, str] = {}  # namespace -> MAC
        self.rec = Recorder()
        self.threads: list[threading.Thread] = []
        self.dhcp_threads: list[threading.Thread] = []
        self.mounted = False

    # -- building -----------------------------------------------------------------------------------------------
    def build(self) -> None:
        args = self.args
        self.pg = PrivatePostgres(Path(f"/tmp/{unique('pnpg')}"))
        registry = open_registry(self.pg.url)
        vms = {f"vm{i + 1}": f"172.16.1.{103 + i}" for i in range(args.victims)}
        vms["abuser"] = "172.16.1.110"
        self.seed = build_seed(registry, vms)
        dhcp_macs = {f"fa:16:3e:cc:00:{i:02x}": f"172.16.1.{120 + i}" for i in range(args.dhcp_vms)}
        for mac, ip in dhcp_macs.items():
            registry.create_port({"network_id": self.seed.network_id, "mac_address": mac,
                                  "fixed_ips": [{"subnet_id": self.seed.subnet_id, "ip_address": ip}],
                                  "device_owner": "compute:nova", "name": f"dhcp-{ip}"})
        add_vm(registry, self.seed, "uncached", "172.16.1.111")  # a lookup no cache holds before row 2
        macs = {vm: registry.get_port(port).mac_address for vm, port in self.seed.ports.items()}  # as Nova plugs
        registry.close()

        self.mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_kib}k,mode=0700", unique(), str(self.mnt)],
                       check=True)
        self.mounted = True
        self.state = self.mnt / "state"
        self.topo = build_topology(vms, macs=macs)
        for mac in dhcp_macs:
            ns, outer = unique("pnv"), unique("pnh")
            self.topo.vm_ns[ns] = ns  # torn down with the others
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name",
                            outer, "netns", self.topo.router_ns], check=True)
            subprocess.run(["ip", "-n", self.topo.router_ns, "link", "set", outer, "master", self.topo.bridge, "up"],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
            self.dhcp_ns[ns] = mac
        setns(self.topo.router_ns)

        self.conf = self.workdir / "provnet.conf"
        self.conf.write_text(
            f"[DEFAULT]\nstate_path = {self.state}\nmetadata_proxy_shared_secret = {SECRET}\n"
            f"[database]\nconnection = {self.pg.url}\n[dhcp]\ninterface = {self.topo.bridge}\nnetwork = phy_net\n"
            + (f"[metadata]\nregistry_timeout = {self.args.registry_timeout}\n" if self.args.registry_timeout else ""))
        self.serve_log = self.workdir / "serve.log"
        with open(self.serve_log, "ab") as log:
            self.serve = subprocess.Popen([PROVNET_BIN, "--config-file", str(self.conf), "serve"], stdout=log,
                                          stderr=subprocess.STDOUT, env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
        deadline = time.monotonic() + 90
        while http("GET", "/healthz", timeout=2)[0] != 200 or not self.children():
            if self.serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start:\n{self.serve_log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.proxy_log = self.workdir / "proxy.log"
        nofile = args.nofile
        with open(self.proxy_log, "ab") as log:
            proxy = subprocess.Popen(
                ["ip", "netns", "exec", self.topo.router_ns, PROVNET_BIN, "--config-file", str(self.conf),
                 "--state-path", str(self.workdir / "proxy-state"), "metadata-proxy", "--router-id",
                 self.seed.router_id, "--port", "9697", "--socket", str(self.state / "metadata_proxy")],
                stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.topo.procs.append(proxy)
        wait_port(self.topo.router_ns, "127.0.0.1", 9697, timeout=120)
        wait_for_children = time.monotonic() + 30
        while len(self.children()) < 3:
            if time.monotonic() > wait_for_children:
                raise RuntimeError(f"serve has children {self.children()}:\n{self.serve_log.read_text()[-3000:]}")
            time.sleep(0.1)

    def start_load(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        for vm in self.seed.instances:
            if vm.startswith("vm"):
                proc = subprocess.Popen(self.topo.exec_args(vm, "/usr/bin/python3", "-c", VICTIM,
                                                            self.seed.instances[vm], str(self.args.rate)),
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
                self.victims.append(proc)
                self.threads.append(threading.Thread(target=self.rec.read_victim, args=(proc,), daemon=True))
        for ns, mac in self.dhcp_ns.items():
            d = self.workdir / ns
            d.mkdir()
            self.dhcp_threads.append(threading.Thread(target=self.rec.dhcp_loop, args=(ns, mac, d), daemon=True))
        self.threads.extend(self.dhcp_threads)
        self.threads.append(threading.Thread(target=self.rec.health_loop, daemon=True))
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 30
        while not (self.rec.metadata and any(d[1] for d in self.rec.dhcp)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no load: metadata {self.rec.metadata[-3:]}, dhcp {self.rec.dhcp[-3:]}\n"
                                   f"{self.serve_log.read_text()[-3000:]}")
            time.sleep(0.1)

    # -- serve's children --------------------------------------------------------------------------------------
    def children(self) -> dict[str, int]:
        """serve's children by name: {"metadata API": pid, "metadata agent": pid, "DHCP server": pid}."""
        names = {"metadata-api": "metadata API", "metadata-agent": "metadata agent", "dhcp": "DHCP server"}
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != self.serve.pid or fields[0] == "Z":
                    continue
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            for word, name in names.items():
                if word.encode() in argv:
                    found[name] = int(stat.parent.name)
        return found

    def agent_ask(self, vm: str = "vm1", timeout: float = 30) -> tuple[int, float]:
        """One request as the proxy sends it, over the agent's unix socket: (status, 0 when there was no answer or
        the answer was for someone else; seconds)."""
        started = time.perf_counter()
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(str(self.state / "metadata_proxy"))
                s.sendall(f"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          f"X-Forwarded-For: {self.seed.ips[vm]}\r\nX-Neutron-Router-ID: {self.seed.router_id}"
                          f"\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
            if status == 200 and self.seed.instances[vm].encode() not in data:
                status = 0
        except (OSError, ValueError):
            status = 0
        return status, time.perf_counter() - started

    def agent_ok(self, vm: str = "vm1") -> bool:
        return self.agent_ask(vm, timeout=5)[0] == 200

    def metadata_api_ok(self) -> bool:
        try:
            with urllib.request.urlopen("http://127.0.0.1:8775/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_until(self, check, timeout: float = 120) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def log_lines(self, path: Path) -> list[str]:
        return path.read_text(errors="replace").splitlines()

    # -- teardown ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.rec.stopping.set()
        for proc in self.victims:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.serve is not None and self.serve.poll() is None:
            self.serve.kill()
            self.serve.wait()
        for t in self.dhcp_threads:
            t.join(timeout=30)
        if self.topo is not None:
            self.topo.teardown()
        if self.pg is not None:
            self.pg.close()
        if self.mounted:
            if subprocess.run(["umount", str(self.mnt)]).returncode != 0:
                subprocess.run(["umount", "-l", str(self.mnt)])
        if self.args.keep:
            (self.workdir / "records.json").write_text(json.dumps(
                {"metadata": self.rec.metadata, "dhcp": self.rec.dhcp, "health": self.rec.health}))
            print(f"logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- the rows ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    fault: str
    start: float
    end: float
    recovery: str = "-"
    lost: str = "-"
    notes: str = ""
    stats: dict = field(default_factory=dict)


def timed(world: World, seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)  # the fault lasts this long: the time is the experiment
    return start, time.time()


def row_none(w: World) -> list[Row]:
    start, end = timed(w, w.args.seconds)
    return [Row("none (baseline)", start, end)]


def row_hold(w: World) -> list[Row]:
    before = len(w.log_lines(w.proxy_log))
    start = time.time()
    abuser, got = start_abuser(w.topo, "abuser", "hold", 2000, w.args.seconds + 60)
    time.sleep(w.args.seconds)
    stop(abuser)
    end = time.time()
    lines = w.log_lines(w.proxy_log)[before:]
    return [Row("1: one VM opens 2,000 idle connections (proxy at 1,024 fds)", start, end,
                notes=f"abuser held {got['open']}, refused {got['refused']}, failed {got['failed']}; "
                      f"proxy log +{len(lines)} lines")]


def row_sigstop(w: World) -> list[Row]:
    # one lookup nobody cached: what needs the database (the agent must say 503 within registry_timeout)
    w.pg.freeze()
    start = time.time()
    try:
        t0 = time.monotonic()
        status_api = http("GET", "/v2.0/networks", timeout=60)
        uncached = w.agent_ask("uncached", timeout=60)
        during = (f"API /v2.0/networks {status_api[0]} in {status_api[2]:.1f} s; agent, a VM no cache holds: "
                  f"{uncached[0]} in {uncached[1]:.1f} s")
        time.sleep(max(0.0, w.args.seconds - (time.monotonic() - t0)))
    finally:
        w.pg.resume()
    end = time.time()
    recovery = w.wait_until(lambda: http("GET", "/v2.0/networks", timeout=5)[0] == 200)
    return [Row("2: PostgreSQL frozen (SIGSTOP)", start, end,
                recovery=f"{recovery:.1f} s (API lists again)" if recovery is not None else "never",
                notes=during)]


def row_pgstop(w: World) -> list[Row]:
    tail = len(w.log_lines(w.serve_log))
    w.pg.stop()
    start = time.time()
    try:
        status_api = http("GET", "/v2.0/networks", timeout=60)
        time.sleep(w.args.seconds)
    finally:
        w.pg.start()
    end = time.time()
    recovery = w.wait_until(lambda: http("GET", "/v2.0/networks", timeout=5)[0] == 200)
    lines = w.log_lines(w.serve_log)[tail:]
    return [Row("3: PostgreSQL stopped", start, end,
                recovery=f"{recovery:.1f} s (API lists again)" if recovery is not None else "never",
                notes=f"API /v2.0/networks {status_api[0]} in {status_api[2]:.1f} s; serve log +{len(lines)} "
                      f"lines, {sum('Traceback' in line for line in lines)} tracebacks")]


def row_kill(w: World) -> list[Row]:
    rows = []
    for name in ("metadata API", "metadata agent", "DHCP server"):
        pid = w.children()[name]
        start = time.time()
        os.kill(pid, signal.SIGKILL)
        back = w.wait_until(lambda n=name, p=pid: w.children().get(n) not in (None, p), timeout=120)
        listening = None
        if name == "metadata API":
            listening = w.wait_until(w.metadata_api_ok, timeout=120)
        if name == "DHCP server":
            ready = w.wait_until(lambda s=start: w.rec.first_after("dhcp", s) is not None, timeout=120)
            what = "a DHCP VM got an ACK"
        else:
            ready = w.wait_until(w.agent_ok, timeout=120)
            what = "the agent answers a VM"
        end = time.time()
        time.sleep(1)
        rows.append(Row(f"4: kill -9 of serve's {name}", start, end,
                        recovery=f"{end - start:.1f} s ({what})" if ready is not None else "never",
                        lost="serve stopped!" if w.serve.poll() is not None else "-",
                        notes=(f"a new process after {back:.1f} s" if back is not None else "not restarted")
                        + (f", its /healthz answered after {back + listening:.1f} s" if back and listening
                           else "")))
    return rows


def row_disk(w: World) -> list[Row]:
    tail = len(w.log_lines(w.serve_log))
    filler = w.mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    start = time.time()
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    time.sleep(w.args.seconds)
    filler.unlink()
    end = time.time()
    recovery = w.wait_until(lambda: w.rec.first_after("dhcp", end) is not None, timeout=120)
    lines = w.log_lines(w.serve_log)[tail:]
    full = [line for line in lines if "cannot write" in line or "writable again" in line]
    return [Row("5: lease journal's disk full, then freed", start, end,
                recovery=f"{recovery:.1f} s (next ACK)" if recovery is not None else "never",
                notes=f"journal log lines: {len(full)}; serve log +{len(lines)} lines, "
                      f"{sum('Traceback' in line for line in lines)} tracebacks")]


def vm_script(w: World, vm: str, script: str, *argv: str, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    done = subprocess.run(w.topo.exec_args(vm, "/usr/bin/python3", "-c", script, *argv), capture_output=True,
                          text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout)


def row_pipeline(w: World) -> list[Row]:
    start = time.time()
    got = vm_script(w, "abuser", PIPELINE, str(w.args.pipeline), w.seed.instances["abuser"], timeout=600)
    end = time.time()
    lost = w.args.pipeline - got["ok"]
    return [Row(f"6: {w.args.pipeline:,} requests pipelined on one connection", start, end,
                lost=f"{lost} unanswered" if lost else "0",
                notes=f"{got['ok']:,} answered 200 in {got['seconds']:.1f} s ({got['ok'] / got['seconds']:,.0f}/s)"
                      + (f"; {got['error']}" if got["error"] else ""))]


async def upstream_refusals() -> tuple[int, int, float]:
    """Malformed chunk sizes from an upstream to the real upstream client: (refused, taken, slowest seconds)."""
    sizes = [b"-6", b"0x5", b"+5", b"5_0", b"5 ", b"fffffffffffffffffffff", b"\xb2"]
    refused = taken = 0
    slowest = 0.0
    for size in sizes:
        async def answer(reader, writer, size=size):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
            await reader.read()  # the connection stays open until the client gives up: only its parser can end this
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(Upstream(Target(port=port), timeout=20).request("GET", "/", []), 25)
            taken += 1
        except UpstreamUnavailable:
            refused += 1
        except TimeoutError:
            pass
        slowest = max(slowest, time.perf_counter() - t0)
        server.close()
    return refused, taken, slowest


def row_content_length(w: World) -> list[Row]:
    before = len(w.log_lines(w.proxy_log))
    start = time.time()
    statuses = vm_script(w, "abuser", HOSTILE_CL, str(w.args.hostile), "50", timeout=600)
    end = time.time()
    lines = w.log_lines(w.proxy_log)[before:]
    refused, taken, slowest = asyncio.run(upstream_refusals())
    bad = sum(n for status, n in statuses.items() if status != "400")
    return [Row(f"7: {w.args.hostile:,} requests with Content-Length: ² at the proxy", start, end,
                lost=f"{bad} not 400" if bad else "0",
                notes=f"answers {statuses}; proxy log +{len(lines)} lines, "
                      f"{sum('Traceback' in line for line in lines)} tracebacks; upstream chunk sizes -6, 0x5, +5, "
                      f"5_0, '5 ', 2^84, ²: {refused} of 7 refused, {taken} taken, slowest {slowest * 1000:.0f} ms")]


def hostile_api_requests(network_id: str) -> list[tuple[str, str, bytes | None]]:
    deep = b'{"network": {"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    return [
        ("POST", "/v2.0/networks", deep),
        ("POST", "/v2.0/networks", b'{"network": {"name": "\\ud800"}}'),
        ("POST", "/v2.0/networks", b'{"network": {"name": "a\\u0000b"}}'),
        ("GET", "/v2.0/networks?name=a%00b", None),
        ("GET", "/v2.0/subnets?ip_version=1180591620717411303424", None),
        ("GET", "/v2.0/ports?limit=99999999999999999999999", None),
        ("POST", "/provnet/v1/instances", b'{"instance": {"name": "x", "launch_index": ' + str(2**70).encode() + b"}}"),
        ("POST", "/v2.0/subnets", json.dumps({"subnet": {"network_id": network_id, "ip_version": 2**64,
                                                          "cidr": "10.9.0.0/24"}}).encode()),
        ("POST", "/v2.0/ports", b'{"port": {"network_id": "' + network_id.encode() + b'", "name": 1e400}}'),
        ("POST", "/v2.0/networks", b'{"network": {"name": "x"' + b" " * (10 << 20) + b"}}"),
        ("POST", "/v2.0/networks", b'{"network": '),
        ("PUT", f"/v2.0/networks/{network_id}", b'{"network": {"mtu": ' + b"9" * 5000 + b"}}"),
    ]


def row_bad_api(w: World) -> list[Row]:
    tail = len(w.log_lines(w.serve_log))
    statuses: Counter = Counter()
    start = time.time()
    requests = hostile_api_requests(w.seed.network_id)
    for _ in range(w.args.api_rounds):
        for method, path, body in requests:
            statuses[http(method, path, body, timeout=60)[0]] += 1
    end = time.time()
    lines = w.log_lines(w.serve_log)[tail:]
    bad = sum(n for status, n in statuses.items() if not 400 <= status < 500)
    return [Row(f"8: bad API input ({len(requests)} kinds x {w.args.api_rounds})", start, end,
                lost=f"{bad} not 4xx" if bad else "0",
                notes=f"answers {dict(sorted(statuses.items()))}; serve log +{len(lines)} lines, "
                      f"{sum('Traceback' in line for line in lines)} tracebacks")]


def bulk_network() -> str:
    status, body, _ = http("POST", "/v2.0/networks", json.dumps({"network": {"name": "chaos-bulk"}}).encode())
    assert status == 201, body
    net = json.loads(body)["network"]["id"]
    status, body, _ = http("POST", "/v2.0/subnets", json.dumps({"subnet": {
        "network_id": net, "ip_version": 4, "cidr": "10.0.0.0/14", "gateway_ip": None}}).encode())
    assert status == 201, body
    return net


def bulk(network_id: str, count: int) -> tuple[int, float, bytes]:
    body = json.dumps({"ports": [{"network_id": network_id, "device_owner": "compute:nova",
                                  "device_id": f"chaos-{i}"} for i in range(count)]}).encode()
    status, answer, seconds = http("POST", "/v2.0/ports", body, timeout=900)
    return status, seconds, answer


def row_bulk(w: World) -> list[Row]:
    w.bulk_network = bulk_network()
    start = time.time()
    status, seconds, answer = bulk(w.bulk_network, 20_000)
    end = time.time()
    registry = open_registry(w.pg.url)
    try:
        ports = registry.list_ports({"network_id": [w.bulk_network]})
    finally:
        registry.close()
    macs = {p.mac_address for p in ports}
    ips = {ip.ip_address for p in ports for ip in p.fixed_ips}
    missing = 20_000 - len(ports) if status == 201 else 0
    return [Row("9: one bulk POST of 20,000 ports, MACs drawn by the server", start, end,
                lost=f"{missing} missing, {len(ports) - len(macs)} duplicate MACs, {len(ports) - len(ips)} "
                     f"duplicate IPs",
                notes=f"{status} in {seconds:.1f} s" + ("" if status == 201 else f": {answer[:200]!r}"))]


def row_list(w: World) -> list[Row]:
    network = getattr(w, "bulk_network", None) or bulk_network()
    registry = open_registry(w.pg.url)
    try:
        have = len(registry.list_ports({}))
    finally:
        registry.close()
    while have < w.args.ports:
        count = min(10_000, w.args.ports - have)
        status, _, answer = bulk(network, count)
        assert status == 201, answer[:300]
        have += count
    start = time.time()
    one = [http("GET", "/v2.0/ports?limit=1")[2] * 1000 for _ in range(50)]
    mid = time.time()
    nice = w.args.listing_nice
    with multiprocessing.get_context("fork").Pool(8, initializer=os.nice, initargs=(nice,)) as pool:
        results = pool.map(full_listing, [API] * 8)
    end = time.time()
    counts = sorted({count for count, _, _ in results})
    slowest = max(s for _, _, s in results)
    return [Row(f"10a: GET /v2.0/ports?limit=1 x 50 with {have:,} ports", start, mid,
                notes=f"p50 {pct(one, 0.5):.1f} ms, p99 {pct(one, 0.99):.1f} ms"),
            Row(f"10b: 8 concurrent full listings of {have:,} ports", mid, end,
                lost="-" if counts == [have] else f"listed {counts}",
                notes=f"each {counts} ports, slowest {slowest:.1f} s" + (f"; clients at nice {nice}" if nice else ""))]


RUNNERS = {"none": row_none, "1": row_hold, "2": row_sigstop, "3": row_pgstop, "4": row_kill, "5": row_disk,
           "6": row_pipeline, "7": row_content_length, "8": row_bad_api, "9": row_bulk, "10": row_list}


def journal_check(w: World) -> str:
    """serve killed with SIGKILL; the journal replayed: is every ACK a DHCP VM got in it?"""
    w.rec.stopping.set()
    for t in w.dhcp_threads:
        t.join(timeout=60)
    os.kill(w.serve.pid, signal.SIGKILL)
    w.serve.wait()
    time.sleep(0.5)
    found = read_journal(w.state / JOURNAL_NAME)
    journaled = Counter((r.ip, r.mac) for r in found.records if r.state == "ack")
    got = Counter((d[2], d[3]) for d in w.rec.dhcp if d[1])
    lost = sum(max(0, n - journaled[key]) for key, n in got.items())
    return (f"after SIGKILL of serve: {sum(got.values())} ACKs received by DHCP VMs, {sum(journaled.values())} ack "
            f"records in the journal, {lost} received ACKs missing from it; damaged: {found.damaged}, torn tail "
            f"{found.torn_tail} bytes")


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="rows to run, in order (default: all)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed fault (default 15)")
    parser.add_argument("--victims", type=int, default=3, help="victim VMs asking for metadata (default 3)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second per victim (default 20)")
    parser.add_argument("--dhcp-vms", type=int, default=2, help="VMs running udhcpc in a loop (default 2)")
    parser.add_argument("--pipeline", type=int, default=10_000, help="row 6's pipelining depth (default 10,000)")
    parser.add_argument("--hostile", type=int, default=1_000, help="row 7's requests (default 1,000, 50 a second)")
    parser.add_argument("--api-rounds", type=int, default=20, help="row 8's rounds of every hostile request")
    parser.add_argument("--ports", type=int, default=20_000,
                        help="ports stored for row 10 (default 20,000, what row 9 creates; the issue's 100,000 takes "
                             "a few minutes more)")
    parser.add_argument("--listing-nice", type=int, default=0,
                        help="row 10's listing clients at this niceness (19: a stand-in for clients on other machines, "
                             "so that only the API's own work competes with the metadata path)")
    parser.add_argument("--nofile", type=int, default=1024, help="the proxy's open files limit (default 1,024)")
    parser.add_argument("--disk-kib", type=int, default=1024, help="size of serve's state tmpfs (default 1,024 KiB)")
    parser.add_argument("--registry-timeout", type=float, default=0,
                        help="[metadata] registry_timeout for serve (default: provnet's own, 10 s)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (serve's and the proxy's logs)")
    parser.add_argument("--json", action="store_true", help="also print every row as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("chaos.py needs root (network namespaces, tmpfs, a private PostgreSQL)")
    wanted = args.rows.split(",")
    unknown = [r for r in wanted if r not in RUNNERS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    print(f"# benchmarks/chaos.py {' '.join(sys.argv[1:])}  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    world = World(args)
    rows: list[Row] = []
    try:
        world.build()
        world.start_load()
        for name in wanted:
            for row in RUNNERS[name](world):
                row.stats = world.rec.window(row.start, row.end)
                rows.append(row)
                s = row.stats
                print(f"{row.fault}: {row.end - row.start:.1f} s, victims {s['answered']}/{s['failed']} "
                      f"p99 {fmt(s['p99'])} max {fmt(s['max'])} ms {s['why'] or ''}, ACKs {s['acks']} "
                      f"(runs without {s['dhcp_failed']}),"
                      f" /healthz p99 {fmt(s['health_p99'])} max {fmt(s['health_max'])} ms, recovery "
                      f"{row.recovery}, lost {row.lost}; {row.notes}", flush=True)
            time.sleep(2)  # let the last fault's stragglers land before the next window opens
        final = journal_check(world)
        tracebacks = sum("Traceback" in line for line in world.log_lines(world.serve_log))
        proxy_tracebacks = sum("Traceback" in line for line in world.log_lines(world.proxy_log))
    except BaseException:
        for log in ("serve.log", "proxy.log"):
            if (world.workdir / log).exists():
                print(f"--- {log}, last lines:\n" + "\n".join(world.log_lines(world.workdir / log)[-30:]),
                      file=sys.stderr)
        raise
    finally:
        world.close()
    print("\n| fault | seconds | victims' metadata answered / failed (p99 / max ms) | DHCP ACKs (runs without) | "
          "/healthz p99 / max ms | recovery | lost | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        s = row.stats
        why = f" {s['why']}" if s["why"] else ""
        print(f"| {row.fault} | {row.end - row.start:.1f} | {s['answered']:,} / {s['failed']:,} "
              f"({fmt(s['p99'])} / {fmt(s['max'])})"
              f"{why} | {s['acks']} ({s['dhcp_failed']}) | {fmt(s['health_p99'])} / {fmt(s['health_max'])} | "
              f"{row.recovery} | {row.lost} | {row.notes} |")
    print(f"\nJournal: {final}. Tracebacks in serve's log: {tracebacks}, in the proxy's: {proxy_tracebacks}.")
    if args.json:
        print(json.dumps([{**row.__dict__} for row in rows], indent=1, default=str))


if __name__ == "__main__":
    main()
