# `provnet l3-agent` under a burst (issue 11): --routers routers with an interface each, created in one burst; seconds
# until every router's namespace, qr- device and rules exist and until every router's proxy answers; the agent's CPU
# when idle afterwards (it must not poll); the floor measured in the same run: the same namespaces, devices and rules
# made by a plain shell loop of `ip` and `iptables-restore` (one process per step, no proxy).
#
#   .venv/bin/python benchmarks/l3_agent.py --routers 200
#
# Root. Everything lives in namespaces named pnb<hex>-... and a directory under /tmp, removed at the end. One proxy
# costs ~20 MB (PSS) (a Python process): the benchmark refuses to start when MemAvailable cannot hold
# --routers of them with room to spare (say a smaller --routers).
from __future__ import annotations

import argparse
import http.client
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provnet.dataplane import iptables, l3, netns
from provnet.lab.procs import stop_pid
from provnet.model.resources import L3_AGENT_TYPE
from provnet.registry import open_registry

PROXY_MB = 30  # what one proxy may take, with margin (measured: 19 MB PSS each through provnet.runtime.proxy_main)
CIDR = "10.98.0.0/22"
IDLE_SECONDS = 30.0


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=2)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self.path)


def answers(status_socket: Path) -> bool:
    if not status_socket.exists():
        return False
    conn = UnixHTTP(str(status_socket))
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def router_ports(count: int) -> list[tuple[str, str]]:
    """(MAC, ip/prefixlen) of each router's interface, the same in the agent's run and the floor's."""
    net = ipaddress.ip_network(CIDR)
    hosts = list(net.hosts())[10:10 + count]
    return [(f"fa:16:3e:98:{i // 256:02x}:{i % 256:02x}", f"{ip}/{net.prefixlen}") for i, ip in enumerate(hosts)]


def agent_run(args: argparse.Namespace, tmp: Path, suffix: str, host_ns: str) -> dict[str, float]:
    db = f"sqlite:///{tmp}/provnet.sqlite"
    registry = open_registry(db)
    net = registry.create_network({"name": "bench", "provider:network_type": "flat",
                                   "provider:physical_network": "physnet1"})
    subnet = registry.create_subnet({"network_id": net.id, "cidr": CIDR, "ip_version": 4, "gateway_ip": None,
                                     "enable_dhcp": False})
    state = tmp / "h"
    state.mkdir()
    conf = tmp / "agent.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {state}\nhost = benchhost\nmetadata_proxy_socket = {state}/mp\n"
                    f"[database]\nconnection = {db}\n[ovs]\nbridge_mappings = physnet1:br-phy\n"
                    f"[agent]\nreport_interval = 5\n[l3_agent]\nnamespace_suffix = @{suffix}\n"
                    "resync_interval = 3600\n")
    log = tmp / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVNET_")}
    with open(log, "wb") as out:
        agent = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{host_ns}", sys.executable, "-m", "provnet.cli",
                                  "--config-file", str(conf), "l3-agent"], stdout=out, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not registry.list_agents({"agent_type": [L3_AGENT_TYPE]}):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit(f"the L3 agent did not report; {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        ports = router_ports(args.routers)
        started = time.monotonic()
        router_ids = []
        for i, (mac, address) in enumerate(ports):
            router = registry.create_router({"name": f"r{i}"})
            port = registry.create_port({"network_id": net.id, "mac_address": mac,
                                         "fixed_ips": [{"subnet_id": subnet.id,
                                                        "ip_address": address.split("/")[0]}]})
            registry.add_router_interface(router.id, port_id=port.id)
            router_ids.append(router.id)
        burst = time.monotonic() - started
        print(f"burst: {args.routers} routers, ports and interfaces written in {burst:.1f} s", flush=True)
        sockets = {rid: state / "external" / f"{rid[:13]}.sock" for rid in router_ids}
        built_at = served_at = None
        waiting = dict(sockets)
        deadline = started + args.timeout
        while waiting or built_at is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"not done after {args.timeout:.0f} s: {len(waiting)} proxies not answering; {log}")
            if built_at is None and log.read_text(errors="replace").count(": namespace qrouter-") >= args.routers:
                built_at = time.monotonic() - started
                print(f"agent: every namespace, qr- device and rule built {built_at:.1f} s after the burst began",
                      flush=True)
            waiting = {rid: path for rid, path in waiting.items() if not answers(path)}
            if not waiting and served_at is None:
                served_at = time.monotonic() - started
                print(f"agent: every proxy answers {served_at:.1f} s after the burst began", flush=True)
            time.sleep(0.2)
        assert built_at is not None and served_at is not None
        time.sleep(5.0)  # the agent's last report and the proxies' start-up settle
        proxies = [int(p.read_text()) for p in (state / "external" / "pids").glob("*.pid")]
        a0, p0 = cpu_seconds(agent.pid), sum(cpu_seconds(p) for p in proxies)
        print(f"where the time went: the agent used {a0:.1f} CPU-s (its start included), the {len(proxies)} proxies "
              f"{p0:.1f} CPU-s starting up ({p0 / max(len(proxies), 1):.2f} each), on {os.cpu_count()} CPUs",
              flush=True)
        rev0 = registry.revision()
        time.sleep(IDLE_SECONDS)
        a1, p1 = cpu_seconds(agent.pid), sum(cpu_seconds(p) for p in proxies)
        idle = 100 * (a1 - a0) / IDLE_SECONDS
        print(f"idle over {IDLE_SECONDS:.0f} s: agent {idle:.2f} % of a core, {len(proxies)} proxies together "
              f"{100 * (p1 - p0) / IDLE_SECONDS:.2f} %; registry writes meanwhile {registry.revision() - rev0} "
              "(heartbeats that change nothing write nothing)", flush=True)
        # one more write on the loaded, idle agent: the one-second target for a single change
        mac, address = router_ports(args.routers + 1)[-1]
        t0 = time.monotonic()
        router = registry.create_router({"name": "one-more"})
        port = registry.create_port({"network_id": net.id, "mac_address": mac,
                                     "fixed_ips": [{"subnet_id": subnet.id, "ip_address": address.split("/")[0]}]})
        registry.add_router_interface(router.id, port_id=port.id)
        written = time.monotonic() - t0
        ns = l3.router_namespace(router.id, f"@{suffix}")
        device = l3.router_port_device(port.id)
        one_built = one_served = None
        while one_served is None:
            now = time.monotonic() - t0
            if now > 30:
                raise SystemExit(f"the one more router is not served after 30 s; {log}")
            try:
                if one_built is None and netns.namespace_exists(ns) and device in netns.link_names(ns):
                    one_built = now
            except netns.DataplaneError:  # the namespace's file exists a moment before it is mounted
                pass
            if answers(state / "external" / f"{router.id[:13]}.sock"):
                one_served = now
            time.sleep(0.01)
        print(f"one more router after the burst: written in {written:.3f} s; namespace and qr- device "
              f"{one_built or one_served:.2f} s, proxy answering {one_served:.2f} s after the first write",
              flush=True)
        pss = [pss_mb(p) for p in proxies]
        print(f"memory: agent {pss_mb(agent.pid):.0f} MB PSS; proxies {sum(pss):.0f} MB PSS together, "
              f"{sum(pss) / max(len(pss), 1):.1f} MB each", flush=True)
        return {"burst": burst, "built": built_at, "served": served_at, "idle": idle, "one_served": one_served}
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        registry.close()


FLOOR = r"""#!/bin/bash
# The floor: what the agent makes for each router, by hand, one `ip` or `iptables-restore` process per step.
set -e
H=$1; RULES=$2; shift 2
while [ $# -gt 0 ]; do
    NS=$1; DEV=$2; MAC=$3; ADDR=$4; shift 4
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" sysctl -q -w net.ipv4.ip_forward=0
    ip -n "$H" link add "tap$DEV" type veth peer name "qr-$DEV" netns "$NS"
    ip -n "$NS" link set "qr-$DEV" address "$MAC"
    ip -n "$NS" addr add "$ADDR" dev "qr-$DEV"
    ip -n "$NS" link set "qr-$DEV" up
    ip -n "$H" link set "tap$DEV" master br-phy up
    ip netns exec "$NS" iptables-restore --noflush < "$RULES"
done
"""


def floor_run(args: argparse.Namespace, tmp: Path, suffix: str, host_ns: str) -> float:
    script = tmp / "floor.sh"
    script.write_text(FLOOR)
    rules = tmp / "rules"
    rules.write_text(iptables.plan_apply({}, l3.metadata_ruleset()))
    argv = ["bash", str(script), host_ns, str(rules)]
    for i, (mac, address) in enumerate(router_ports(args.routers)):
        argv += [f"qrouter-floor{i}@{suffix}", f"{i:011d}"[:11], mac, address]
    started = time.monotonic()
    subprocess.run(argv, check=True)
    took = time.monotonic() - started
    print(f"floor: the same {args.routers} namespaces, devices and rules by a shell loop in {took:.1f} s", flush=True)
    return took


def cleanup(suffix: str) -> None:
    pids = [pid for ns in netns.list_namespaces() if suffix in ns for pid in netns.pids_in_namespace(ns)]
    for pid in pids:  # every proxy told at once; then each waited for (a proxy drains for a moment before it exits)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        stop_pid(pid, None, grace=5)
    for ns in sorted((n for n in netns.list_namespaces() if suffix in n), key=lambda n: not n.startswith("qrouter")):
        netns.delete_namespace(ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the agent to serve them all")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, iptables)")
    for tool in ("ip", "iptables-restore", "nsenter", "bash"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    need = args.routers * PROXY_MB + 1024
    if mem_available_mb() < need:
        raise SystemExit(f"{args.routers} proxies need about {need} MB and {mem_available_mb()} MB are available: "
                         "give a smaller --routers")
    suffix = "pnb" + secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="pnl3b-", dir="/tmp"))
    host_ns = f"{suffix}-h"
    try:
        netns.ensure_namespace(host_ns)
        netns.ensure_bridge(host_ns, "br-phy")
        print(f"{args.routers} routers; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}", flush=True)
        got = agent_run(args, tmp, suffix, host_ns)
        cleanup(suffix)
        netns.ensure_namespace(host_ns)
        netns.ensure_bridge(host_ns, "br-phy")
        floor = floor_run(args, tmp, suffix, host_ns)
        print(f"ratio: the agent's dataplane took {got['built'] / floor:.2f} x the floor's time; every proxy "
              f"answering took {got['served'] / floor:.2f} x", flush=True)
    finally:
        cleanup(suffix)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
