# Scale (issue 16): 100,000 ports on one flat network; a 10,000-VM boot storm through several hosts' proxies, perfdhcp
# at 2,000 DORA/s against `provnet dhcp` fed by the registry, and 200 port creates/deletes per second on the same
# network, all at once; the same storm and DHCP load without churn in the same run, and the haproxy -> nginx anchor.
#
# One command, as root (namespaces for perfdhcp), from the repository:
#   .venv/bin/python benchmarks/scale.py --db sqlite            (--db postgresql: a PostgreSQL of its own)
#   .venv/bin/python benchmarks/scale.py --ports 20000 --vms 2000 --period 10    (a smaller run)
#
# The store (built once per size through the registry's bulk path, with a progress line, kept in --store-dir):
#   network "scale"; subnet A 127.0.0.0/15 (its gateway 127.0.0.2 a router's interface; every simulated VM has its
#   own loopback source address) holding 2 x --vms instance ports and filler ports; subnet B 10.77.0.0/16 holding
#   --dhcp-hosts ports whose MACs and addresses are perfdhcp's static scenario (/work/shared/bench/dhcp/run.sh).
# Processes: `provnet serve` (networking API; metadata API, metadata agent as supervised children), --proxies
# metadata proxies (one per simulated host, VMs spread over them), `provnet dhcp` in a namespace pn...s whose veth
# peer (namespace pn...c) carries perfdhcp acting as a relay.
# Printed: cold start of serve and of the DHCP server (seconds until serving), then per phase (no churn, churn):
# boot-storm requests/s, p50/p99 and errors, perfdhcp's achieved rate and DORA drop, the DHCP server's CPU, the
# churn rate reached, the agent's and the metadata API's cache hits, and every process's memory (RSS).
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import metadata_bootstorm as bs  # noqa: E402 - the storm's clients and the anchor

PROVNET = str(Path(sys.executable).parent / "provnet")
SECRET = "scale-secret"
SRV_IP, CLI_IP = "10.77.0.1", "10.77.0.2"


def progress(text: str) -> None:
    print(f"\r{text}", end="", flush=True)


# ---- the store ------------------------------------------------------------------------------------------------

def dhcp_host(i: int) -> tuple[str, str]:
    """perfdhcp's static scenario: the i-th MAC and its reservation (run.sh's gen_static), i from 1."""
    return f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", f"10.77.{1 + i // 256}.{i % 256}"


def build_store(url: str, ports: int, vms: int, dhcp_hosts: int) -> dict:
    from provnet.registry import open_registry

    registry = open_registry(url)
    try:
        found = [n for n in registry.list_networks() if n.name == "scale"]
        if found:
            meta = json.loads(found[0].description or "{}")
            if meta.get("ports") == ports and meta.get("vms", 0) >= 2 * vms and meta.get("dhcp_hosts") == dhcp_hosts:
                print(f"store: reusing {ports} ports", flush=True)
                return meta
            raise SystemExit("the store holds another size: give another --store-dir")
        started = time.monotonic()
        net = registry.create_network({"name": "scale", "provider:network_type": "flat",
                                       "provider:physical_network": "physscale"})
        a = registry.create_subnet({"network_id": net.id, "cidr": "127.0.0.0/15", "ip_version": 4,
                                    "gateway_ip": "127.0.0.2", "enable_dhcp": False,
                                    "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "127.0.0.3"}]})
        b = registry.create_subnet({"network_id": net.id, "cidr": "10.77.0.0/16", "ip_version": 4,
                                    "gateway_ip": SRV_IP, "enable_dhcp": False})
        router = registry.create_router({"name": "scale-router"})
        registry.add_router_interface(router.id, subnet_id=a.id)
        instances = []
        for i in range(2 * vms):
            instances.append(registry.create_instance({
                "name": f"vm{i}", "hostname": f"vm{i}", "user_data": "I2Nsb3VkLWNvbmZpZwo=",
                "key_pairs": [{"name": "k", "data": "ssh-ed25519 AAAAscale k"}]}).id)
            if i % 500 == 0:
                progress(f"store: {i} instances")
        bodies = []
        for i in range(ports - dhcp_hosts):
            device = instances[i] if i < len(instances) else f"filler-{i}"
            bodies.append({"network_id": net.id, "device_id": device, "device_owner": "compute:nova",
                           "mac_address": f"fa:16:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                                          f"{i & 255:02x}",
                           "fixed_ips": [{"subnet_id": a.id, "ip_address": bs.vm_ip(i)}]})
        for i in range(1, dhcp_hosts + 1):
            mac, ip = dhcp_host(i)
            bodies.append({"network_id": net.id, "device_id": f"dhcp-{i}", "device_owner": "compute:nova",
                           "mac_address": mac, "fixed_ips": [{"subnet_id": b.id, "ip_address": ip}]})
        for start in range(0, len(bodies), 500):
            registry.create_many("port", bodies[start:start + 500])
            done = min(start + 500, len(bodies))
            rate = done / max(0.001, time.monotonic() - started)
            progress(f"store: {done:,} of {len(bodies):,} ports ({rate:,.0f}/s)   ")
        meta = {"ports": ports, "vms": 2 * vms, "dhcp_hosts": dhcp_hosts, "router_id": router.id,
                "network_id": net.id, "subnet_a": a.id, "instances": instances}
        registry.update_network(net.id, {"description": json.dumps({k: v for k, v in meta.items()
                                                                     if k != "instances"})})
        print(f"\nstore: {ports:,} ports built in {time.monotonic() - started:.0f} s", flush=True)
        return meta
    finally:
        registry.close()


def instances_of(url: str, count: int) -> list[str]:
    from provnet.registry import open_registry

    registry = open_registry(url)
    try:
        by_name = {i.name: i.id for i in registry.list_instances()}
        return [by_name[f"vm{i}"] for i in range(count)]
    finally:
        registry.close()


# ---- processes --------------------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def wait_for(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


class Namespaces:
    """pn...s (the DHCP server's side, SRV_IP) and pn...c (perfdhcp, CLI_IP) joined by one veth pair."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.srv, self.cli = f"pnscs{suffix}", f"pnscc{suffix}"
        self.srv_if, self.cli_if = f"pnss{suffix}", f"pnsc{suffix}"
        for ns in (self.srv, self.cli):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", self.srv_if, "netns", self.srv, "type", "veth", "peer", "name",
                        self.cli_if, "netns", self.cli], check=True)
        for ns, dev, ip in ((self.srv, self.srv_if, SRV_IP), (self.cli, self.cli_if, CLI_IP)):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.core.rmem_default=4194304",
                            "net.core.wmem_default=4194304"], check=False, capture_output=True)  # not in every kernel

    def close(self) -> None:
        for ns in (self.srv, self.cli):
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], check=False)


def perfdhcp(ns: Namespaces, macs: Path, rate: int, period: int, server_pid: int) -> dict:
    """perfdhcp's figures and the DHCP server's CPU over perfdhcp's own run (not the whole phase)."""
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    out = subprocess.run(["ip", "netns", "exec", ns.cli, "perfdhcp", "-4", "-l", CLI_IP, "-r", str(rate), "-p",
                          str(period), "-o", "55,79f9", "-M", str(macs), SRV_IP],
                         capture_output=True, text=True, timeout=period + 60).stdout
    cpu_pct = round(100 * (cpu_seconds(server_pid) - cpu0) / (time.monotonic() - t0))

    def section(name: str) -> str:
        m = re.search(rf"\*\*\*Statistics for: {name}\*\*\*(.*?)(\*\*\*|\Z)", out, re.S)
        return m.group(1) if m else ""

    def num(text: str, key: str) -> float:
        m = re.search(rf"^{re.escape(key)}: ([-\d.naninf]+)", text, re.M)
        return float(m.group(1)) if m else float("nan")

    do, ra = section("DISCOVER-OFFER"), section("REQUEST-ACK")
    sent, acked = num(do, "sent packets"), num(ra, "received packets")
    rate_m = re.search(r"Rate: ([\d.]+)", out)
    return {"rate": float(rate_m.group(1)) if rate_m else float("nan"),
            "dora_drop_pct": round(100 * (1 - acked / sent), 2) if sent else float("nan"),
            "server_cpu_pct": cpu_pct}


def churn(db_url: str, network_id: str, subnet_id: str, rate: float, stop, done) -> None:
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    writes, started, alive = 0, time.monotonic(), []
    while not stop.is_set():
        delay = started + writes / rate - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        if len(alive) < 100:
            alive.append(registry.create_port({"network_id": network_id, "fixed_ips": [{"subnet_id": subnet_id}]}).id)
        else:
            registry.delete_port(alive.pop(0))
        writes += 1
    for port_id in alive:
        registry.delete_port(port_id)
    done.put((writes, time.monotonic() - started))
    registry.close()


# ---- the storm over several proxies -----------------------------------------------------------------------------

async def storm(ports: list[int], first: int, vms: int, concurrency: int, instances: list[str]) -> dict:
    latencies: list[float] = []
    errors = failed = 0
    queue = list(range(first, first + vms))
    queue.reverse()

    async def worker() -> None:
        nonlocal errors, failed
        while queue:
            i = queue.pop()
            try:
                found = await bs.one_boot(ports[i % len(ports)], bs.vm_ip(i), instances[i], latencies,
                                          failures=failures)
                errors += found  # not `errors += await ...` (that loses counts between coroutines)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                failed += 1

    failures: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else -1

    return {"boots": vms, "failed": failed, "errors": errors, "rps": round(len(latencies) / elapsed),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "seconds": round(elapsed, 1),
            "failures": sorted({f"{status} {path}: {body[:80]}" for path, status, body in failures})[:5]}


def cache_line(metrics: str, service: str) -> tuple[float, float]:
    def value(result: str) -> float:
        m = re.search(rf'provnet_metadata_{service}_cache_total{{result="{result}"}} ([\d.e+]+)', metrics)
        return float(m.group(1)) if m else 0.0

    return value("hit"), value("miss")


def caches(state: str, api_port: int) -> dict[str, tuple[float, float]]:
    agent = subprocess.run(["curl", "-s", "--unix-socket", f"{state}/metadata_proxy", "http://x/metrics"],
                           capture_output=True, text=True, timeout=10).stdout
    api = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10).read().decode()
    return {"agent": cache_line(agent, "agent"), "api": cache_line(api, "api")}


def hit_ratio(before: dict, after: dict) -> dict[str, str]:
    out = {}
    for name in before:
        hits, misses = (after[name][i] - before[name][i] for i in (0, 1))
        out[name] = f"{100 * hits / (hits + misses):.1f}% of {hits + misses:.0f}" if hits + misses else "-"
    return out


# ---- the run ----------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description="provnet at 100,000 ports under load and churn")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--ports", type=int, default=100_000)
    parser.add_argument("--dhcp-hosts", type=int, default=60_000)
    parser.add_argument("--vms", type=int, default=10_000, help="VMs per boot storm (two storms: 2x instances)")
    parser.add_argument("--proxies", type=int, default=4, help="simulated hosts, one metadata proxy each")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dhcp-rate", type=int, default=2000)
    parser.add_argument("--churn-rate", type=float, default=200.0)
    parser.add_argument("--period", type=int, default=30, help="seconds of perfdhcp per phase")
    parser.add_argument("--store-dir", default="/var/tmp/provnet-scale")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("scale.py: run as root (perfdhcp runs in network namespaces)")
    store = Path(args.store_dir) / f"{args.db}-{args.ports}-{args.vms}-{args.dhcp_hosts}"
    store.mkdir(parents=True, exist_ok=True)
    os.chmod(store, 0o755)
    pg = None
    if args.db == "postgresql":
        from pg_private import PrivatePostgres

        pg = PrivatePostgres(store / "pg", database="scale", reuse=(store / "pg" / "data").exists())
        db_url = pg.url
    else:
        db_url = f"sqlite:///{store}/scale.sqlite"
    workdir = Path(tempfile.mkdtemp(prefix="pn-scale-"))
    ns = None
    procs: list[subprocess.Popen] = []
    try:
        meta = build_store(db_url, args.ports, args.vms, args.dhcp_hosts)
        instances = instances_of(db_url, 2 * args.vms)
        macs = workdir / "macs.txt"
        macs.write_text("".join(dhcp_host(i)[0] + "\n" for i in range(1, args.dhcp_hosts + 1)))
        api_port, metadata_port = bs.free_port(), bs.free_port()
        state = tempfile.mkdtemp(prefix="pnsc-", dir="/tmp")
        conf = workdir / "provnet.conf"
        conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {SECRET}\nbind_port = {api_port}\n"
                        f"metadata_listen_port = {metadata_port}\nstate_path = {state}\n"
                        f"[database]\nconnection = {db_url}\n")

        def start(name: str, *argv: str, netns: str | None = None) -> subprocess.Popen:
            log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
            command = [PROVNET, "--config-file", str(conf), *argv]
            proc = subprocess.Popen((["ip", "netns", "exec", netns] if netns else []) + command, stdout=log,
                                    stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        t0 = time.monotonic()
        serve = start("serve", "serve")
        wait_for(lambda: listening(api_port) and listening(metadata_port)
                 and os.path.exists(f"{state}/metadata_proxy"), 300, "provnet serve")
        cold_serve = time.monotonic() - t0
        proxy_ports = [bs.free_port() for _ in range(args.proxies)]
        for k, port in enumerate(proxy_ports):
            start(f"proxy{k}", "metadata-proxy", "--router-id", meta["router_id"], "--bind", "127.0.0.1",
                  "--port", str(port), "--status-socket", f"{state}/proxy{k}.sock")
        for port in proxy_ports:
            wait_for(lambda p=port: listening(p), 60, "a metadata proxy")
        ns = Namespaces()
        t0 = time.monotonic()
        dhcp = start("dhcp", "--state-path", f"{state}/dhcp", "dhcp", "--interface", ns.srv_if, "--network", "scale",
                     netns=ns.srv)
        wait_for(lambda: "DHCP on" in (workdir / "dhcp.log").read_text() or dhcp.poll() is not None, 300,
                 "provnet dhcp")
        cold_dhcp = time.monotonic() - t0
        if dhcp.poll() is not None:
            raise SystemExit((workdir / "dhcp.log").read_text())
        print(f"cold start: serve {cold_serve:.1f} s, DHCP server with {args.ports:,} reservations "
              f"{cold_dhcp:.1f} s", flush=True)

        results: dict[str, dict] = {}
        for phase, first in (("no churn", 0), ("churn", args.vms)):
            before = caches(state, metadata_port)
            stop, done = multiprocessing.Event(), multiprocessing.Queue()
            churner = None
            if phase == "churn":
                churner = multiprocessing.Process(target=churn, args=(db_url, meta["network_id"], meta["subnet_a"],
                                                                      args.churn_rate, stop, done))
                churner.start()
                time.sleep(1.0)  # at its rate before the load starts
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                perf = pool.submit(perfdhcp, ns, macs, args.dhcp_rate, args.period, dhcp.pid)
                result = asyncio.run(storm(proxy_ports, first, args.vms, args.concurrency, instances))
                result["dhcp"] = perf.result(timeout=args.period + 120)
            if churner is not None:
                stop.set()
                writes, seconds = done.get(timeout=120)
                churner.join(60)
                result["churn_writes_per_s"] = round(writes / seconds, 1)
            result["cache_hits"] = hit_ratio(before, caches(state, metadata_port))
            results[phase] = result
            print(f"{phase}: {json.dumps(result)}", flush=True)
        memory = {"serve": rss_mb(serve.pid), **{f"child {pid}": rss_mb(pid) for pid in children_of(serve.pid)},
                  "dhcp": rss_mb(dhcp.pid), "proxy0": rss_mb(procs[1].pid)}
        print("memory (RSS MB): " + json.dumps({k: round(v) for k, v in memory.items()}), flush=True)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ns is not None:
            ns.close()
        if pg is not None:
            pg.stop()
    anchor_port = bs.free_port()
    out = subprocess.run(["bash", bs.ANCHOR, "start", str(anchor_port)], capture_output=True, text=True)
    try:
        if out.returncode == 0:
            anchor = asyncio.run(bs.storm(anchor_port, min(args.vms, 2000), args.concurrency, None))
            print(f"anchor (haproxy -> nginx, {min(args.vms, 2000)} boots): {json.dumps(anchor)}")
            for phase in ("no churn", "churn"):
                print(f"{phase}: {results[phase]['rps'] / anchor['rps']:.2f} of the anchor's requests/s")
    finally:
        subprocess.run(["bash", bs.ANCHOR, "stop"], capture_output=True)
    ratio = results["churn"]["p99_ms"] / results["no churn"]["p99_ms"]
    print(f"p99 with churn / without: {ratio:.2f} (target <= 1.5); boot-storm errors: "
          f"{results['no churn']['errors'] + results['churn']['errors']} (target 0)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
