# Port creates per second through the networking API (`provnet api` subprocess, concurrent HTTP clients).
#
# One command (smoke size shown; the lead's full run: --ports 5000 --seconds 10 --concurrency 16):
#   .venv/bin/python benchmarks/api_ports.py --ports 300 --seconds 2 --concurrency 8 --lookups 300
# Runs on SQLite and on PostgreSQL (URL from $PROVNET_TEST_PG_URL, else `bash scripts/postgres.sh`), a fresh store each.
# Per store it prints:
#   - wrk (C, so the load generator takes little of the 2 cores): POST /v2.0/ports for --seconds; creates/s, latency
#     p50/p99, non-201 answers, and duplicate fixed IPs counted afterwards through the API;
#   - an aiohttp client (Python, like an agent or CLI would be) making --ports creates: the same figures;
#   - RemoteRegistry.find_ports_by_ip through the API (what a metadata agent on another host pays): p50/p99;
#   - the anchor: the same creates straight on the registry in one thread, no HTTP, so the API's cost is visible.
# Target (issue 2): >= 500 creates/s through the API on this 2-core machine.
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PROVNET = Path(sys.executable).parent / "provnet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_base_url() -> str:
    url = os.environ.get("PROVNET_TEST_PG_URL")
    if url:
        return url
    out = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh")], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


class Store:
    """A fresh database: an SQLite file, or a new schema on the PostgreSQL server (dropped afterwards)."""

    def __init__(self, kind: str, tmp: str) -> None:
        self.schema = None
        if kind == "sqlite":
            self.url = f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.sqlite"
        else:
            import sqlalchemy as sa

            base = pg_base_url()
            self.schema = f"bench{uuid.uuid4().hex[:8]}"
            self.engine = sa.create_engine(base)
            with self.engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            self.url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{self.schema}"

    def drop(self) -> None:
        if self.schema:
            import sqlalchemy as sa

            with self.engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self.engine.dispose()


def call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def make_network(url: str, name: str, cidr: str) -> str:
    net = call(f"{url}/v2.0/networks", "POST", {"network": {"name": name}})["network"]
    call(f"{url}/v2.0/subnets", "POST", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}})
    return net["id"]


def duplicates(url: str, network_id: str) -> tuple[int, int]:
    ports: list[dict] = []
    page = f"{url}/v2.0/ports?network_id={network_id}&fields=id&fields=fixed_ips"
    while page:  # every page of the list (the API caps each answer at its pagination_max_limit)
        body = call(page)
        ports += body["ports"]
        page = next((link["href"] for link in body.get("ports_links", []) if link["rel"] == "next"), None)
        if not body["ports"]:
            break
    ips = [ip["ip_address"] for p in ports for ip in p["fixed_ips"]]
    return len(ports), len(ips) - len(set(ips))


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk_run(url: str, seconds: int, concurrency: int, tmp: str) -> str:
    network_id = make_network(url, "bench-wrk", "10.64.0.0/16")
    script = Path(tmp) / "post_port.lua"
    script.write_text('wrk.method = "POST"\n'
                      f'wrk.body = \'{{"port": {{"network_id": "{network_id}"}}}}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"{url}/v2.0/ports"], check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # the latency distribution's own lines: "+/- Stdev" columns such as "62.50%" must not match
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    made, dups = duplicates(url, network_id)
    return (f"{rate:8.0f} creates/s  wrk, {concurrency} connections, {seconds:g} s, {made} ports  "
            f"latency p50 {p50:.1f} ms  p99 {p99:.1f} ms  failures {bad.group(1) if bad else 0}  duplicate IPs {dups}")


async def aiohttp_run(url: str, ports: int, concurrency: int) -> str:
    network_id = make_network(url, "bench-aiohttp", "10.65.0.0/16")
    latencies: list[float] = []
    failures = 0
    todo = iter(range(ports))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            nonlocal failures
            for i in todo:
                t0 = time.perf_counter()
                async with session.post(f"{url}/v2.0/ports",
                                        json={"port": {"network_id": network_id, "device_id": f"vm-{i}"}}) as r:
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                failures += r.status != 201

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    made, dups = duplicates(url, network_id)
    return (f"{ports / elapsed:8.0f} creates/s  aiohttp, {concurrency} connections, {made} ports  "
            f"latency p50 {statistics.median(latencies) * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  "
            f"failures {failures}  duplicate IPs {dups}")


def remote_lookups(url: str, count: int) -> str:
    """What an agent on another host pays per lookup: RemoteRegistry.find_ports_by_ip through this API."""
    from provnet.registry.remote import RemoteRegistry

    remote = RemoteRegistry(url)
    try:
        net = remote.list_networks({"name": ["bench-aiohttp"]})[0]
        ports = remote.list_ports({"network_id": [net.id]})
        stored = len(remote.list_ports())
        latencies = []
        for i in range(count):
            port = ports[i % len(ports)]
            t0 = time.perf_counter()
            (found,) = remote.find_ports_by_ip(port.fixed_ips[0].ip_address, [net.id])
            latencies.append(time.perf_counter() - t0)
            assert found.id == port.id
    finally:
        remote.close()
    latencies.sort()
    return (f"{count} RemoteRegistry.find_ports_by_ip over HTTP ({stored} ports stored): "
            f"p50 {statistics.median(latencies) * 1000:.2f} ms  p99 "
            f"{latencies[min(count - 1, int(count * 0.99))] * 1000:.2f} ms")


def registry_run(db_url: str, ports: int) -> str:
    """The anchor: the same creates straight on the registry, one thread, no HTTP."""
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    try:
        net = registry.create_network({"name": "anchor"})
        registry.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.66.0.0/16"})
        start = time.perf_counter()
        for i in range(ports):
            registry.create_port({"network_id": net.id, "device_id": f"vm-{i}"})
        return f"{ports / (time.perf_counter() - start):8.0f} creates/s  registry alone, 1 thread, no HTTP"
    finally:
        registry.close()


def wait_ready(url: str, proc: subprocess.Popen, log, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"provnet api exited: {log.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("provnet api did not start")


def bench(kind: str, args: argparse.Namespace, tmp: str) -> None:
    store = Store(kind, tmp)
    url = f"http://127.0.0.1:{free_port()}"
    log = open(Path(tmp) / f"api-{kind}.log", "w+")  # the access log is one line per request: a file, not a pipe
    proc = subprocess.Popen([str(PROVNET), "--state-path", tmp, "--db", store.url, "api",
                             "--bind-port", url.rsplit(":", 1)[1]],
                            stdout=subprocess.DEVNULL, stderr=log, text=True,
                            env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    try:
        wait_ready(url, proc, log)
        if shutil.which("wrk"):
            print(f"{kind:<10} API     {wrk_run(url, args.seconds, args.concurrency, tmp)}", flush=True)
        else:
            print(f"{kind:<10} API     (wrk not installed: apt-get install wrk)")
        print(f"{kind:<10} API     {asyncio.run(aiohttp_run(url, args.ports, args.concurrency))}", flush=True)
        print(f"{kind:<10} lookup  {remote_lookups(url, args.lookups)}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    print(f"{kind:<10} anchor  {registry_run(store.url, args.ports)}", flush=True)
    store.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Port creates per second through the networking API.")
    parser.add_argument("--ports", type=int, default=2000, help="creates by the aiohttp client and the anchor")
    parser.add_argument("--seconds", type=int, default=5, help="duration of the wrk run (default 5)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent client connections (default 16)")
    parser.add_argument("--lookups", type=int, default=2000, help="remote IP lookups timed (default 2000)")
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"],
                        help="store(s) to measure (default both)")
    args = parser.parse_args()
    print(f"# benchmarks/api_ports.py on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="pnbench") as tmp:
        for kind in args.db or ["sqlite", "postgresql"]:
            bench(kind, args, tmp)


if __name__ == "__main__":
    main()
