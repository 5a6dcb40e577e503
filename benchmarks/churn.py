# The boot storm with and without port churn on another network, in one run: the change feed must keep every
# other VM's cache entries warm (issue 9: p99 within 1.2x of the storm without churn; the agent's hit ratio shown).
#
#   .venv/bin/python benchmarks/churn.py --ports 20000 --boots 300 --concurrency 64 --churn-rate 200
#
# What it does: the store of benchmarks/metadata_bootstorm.py (one flat network, a router, --ports ports, 2 x
# --boots instances) plus a second network; `provnet serve` + `provnet metadata-proxy` on it; then
#   1. the storm of the first --boots VMs (cloud-init's 28 first-boot requests each, keep-alive, own source address)
#      with no other writes;
#   2. the storm of the next --boots VMs while another process creates and deletes ports on the second network at
#      --churn-rate writes per second (each a committed write: the feed carries every one of them);
#   3. the haproxy -> nginx anchor's storm, so the figures are ratios of this run.
# It prints, per phase: requests/s, p50/p99 and errors, the churn rate reached, and the agent's and the metadata
# API's cache hits and misses during the phase (from their /metrics).
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metadata_bootstorm as bs  # noqa: E402 - the storm's store, processes and clients

ROOT = Path(__file__).resolve().parent.parent


def churn(db_url: str, network_id: str, rate: float, stop: multiprocessing.Event, done: multiprocessing.Queue) -> None:
    """Create and delete ports on `network_id` at `rate` writes per second until `stop`; report how many."""
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    writes, started = 0, time.monotonic()
    alive: list[str] = []
    while not stop.is_set():
        due = started + writes / rate
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        if len(alive) < 50:
            alive.append(registry.create_port({"network_id": network_id}).id)
        else:
            registry.delete_port(alive.pop(0))
        writes += 1
    done.put((writes, time.monotonic() - started))
    registry.close()


def unix_get(path: str, target: str) -> str:
    out = subprocess.run(["curl", "-s", "--unix-socket", path, f"http://x{target}"], capture_output=True, text=True,
                         timeout=10)
    return out.stdout


def cache_counts(metrics: str, service: str) -> tuple[float, float]:
    def value(result: str) -> float:
        m = re.search(rf'provnet_metadata_{service}_cache_total{{result="{result}"}} ([\d.e+]+)', metrics)
        return float(m.group(1)) if m else 0.0

    return value("hit"), value("miss")


def snapshot(state: str, api_port: int) -> dict[str, tuple[float, float]]:
    import urllib.request

    agent = unix_get(f"{state}/metadata_proxy", "/metrics")
    api = urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10).read().decode()
    return {"agent": cache_counts(agent, "agent"), "api": cache_counts(api, "api")}


def delta(before: dict, after: dict) -> dict[str, str]:
    out = {}
    for name in before:
        hits = after[name][0] - before[name][0]
        misses = after[name][1] - before[name][1]
        total = hits + misses
        out[name] = f"{hits:.0f} hits / {misses:.0f} misses ({100 * hits / total:.1f} %)" if total else "-"
    return out


async def one_boot(port: int, ip: str, instance: str, latencies: list[float], seen: list[str]) -> int:
    """bs.one_boot, also noting what each wrong answer was (status and path)."""
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0), limit=1 << 20)
    try:
        for path in bs.SEQUENCE:
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept: */*\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = await reader.readexactly(int(match.group(1))) if match else b""
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200" or (path.endswith("meta_data.json") and instance.encode() not in body):
                errors += 1
                seen.append(f"{ip} {path} -> {head[9:12].decode()} {body[:120]!r}")
    finally:
        writer.close()
    return errors


async def storm_from(port: int, first: int, boots: int, concurrency: int, instances: list[str]) -> dict:
    latencies: list[float] = []
    errors = failed = 0
    seen: list[str] = []
    queue = list(range(first, first + boots))
    queue.reverse()

    async def worker() -> None:
        nonlocal errors, failed
        while queue:
            i = queue.pop()
            try:
                found = await one_boot(port, bs.vm_ip(i), instances[i], latencies, seen)
                errors += found  # not `errors += await ...`: that reads `errors` before the await
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                failed += 1
                seen.append(f"{bs.vm_ip(i)}: {exc!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    for line in seen[:5]:
        print("  wrong answer:", line)
    return {"boots": boots, "failed": failed, "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", type=int, default=20000)
    parser.add_argument("--boots", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--churn-rate", type=float, default=200.0)
    parser.add_argument("--store-dir", default="/tmp/provnet-bench")
    args = parser.parse_args()
    workdir = Path(bs.tempfile.mkdtemp(prefix="pn-churn-"))
    db_url, meta = bs.prepare_store(Path(args.store_dir), args.ports, 2 * args.boots)
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    other = [n for n in registry.list_networks() if n.name == "churn"]
    if not other:
        net = registry.create_network({"name": "churn"})
        registry.create_subnet({"network_id": net.id, "cidr": "10.200.0.0/16", "ip_version": 4})
        other = [net]
    network_id = other[0].id
    registry.close()

    procs, proxy_port = bs.start_provnet("serve", db_url, meta["router_id"], workdir)
    api_port = int(re.search(r"metadata_listen_port = (\d+)", (workdir / "provnet.conf").read_text()).group(1))
    results: dict[str, dict] = {}
    try:
        before = snapshot(procs.state, api_port)
        results["no churn"] = asyncio.run(storm_from(proxy_port, 0, args.boots, args.concurrency, meta["instances"]))
        middle = snapshot(procs.state, api_port)
        results["no churn"]["caches"] = delta(before, middle)

        stop, done = multiprocessing.Event(), multiprocessing.Queue()
        churner = multiprocessing.Process(target=churn, args=(db_url, network_id, args.churn_rate, stop, done))
        churner.start()
        try:
            time.sleep(1.0)  # the churn is at its rate before the storm starts
            results["churn"] = asyncio.run(storm_from(proxy_port, args.boots, args.boots, args.concurrency,
                                                      meta["instances"]))
        finally:
            stop.set()
            writes, seconds = done.get(timeout=60)
            churner.join(30)
        results["churn"]["caches"] = delta(middle, snapshot(procs.state, api_port))
        results["churn"]["churn_writes_per_s"] = round(writes / seconds, 1)
    finally:
        procs.stop()

    anchor_port = bs.free_port()
    out = subprocess.run(["bash", bs.ANCHOR, "start", str(anchor_port)], capture_output=True, text=True)
    try:
        if out.returncode == 0:
            results["anchor"] = asyncio.run(bs.storm(anchor_port, args.boots, args.concurrency, None))
    finally:
        subprocess.run(["bash", bs.ANCHOR, "stop"], capture_output=True)

    for name, r in results.items():
        print(f"{name:9s} " + json.dumps(r))
    if "anchor" in results:
        for name in ("no churn", "churn"):
            print(f"{name}: {results[name]['rps'] / results['anchor']['rps']:.2f} of the anchor's requests/s")
    ratio = results["churn"]["p99_ms"] / results["no churn"]["p99_ms"]
    print(f"p99 with churn / without: {ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
