# The boot storm with and without port churn on another network, in one run: the change feed must keep every
# other VM's cache entries warm (issue 9: p99 within 1.2x of the storm without churn; the agent's hit ratio shown).
#
#   .venv/bin/python benchmarks/churn.py --ports 20000 --boots 300 --rounds 5 --concurrency 64 --churn-rate 200
#
# What it does: the store of benchmarks/metadata_bootstorm.py (one flat network, a router, --ports ports, instances
# for every phase) plus a second network; `provnet serve` + `provnet metadata-proxy` on it; then --rounds rounds of
#   1. the storm of the next --boots VMs (cloud-init's 28 first-boot requests each, keep-alive, own source address)
#      with no other writes;
#   2. the storm of the next --boots VMs while another process creates and deletes ports on the second network at
#      --churn-rate writes per second (each a committed write: the feed carries every one of them);
# and at the end the haproxy -> nginx anchor's storm, so the figures are ratios of this run. Every phase has VMs of
# its own (cold caches for both kinds); alternating them spreads this machine's drift over both kinds.
# It prints, per phase and pooled per kind (with the median of the rounds' p99 ratios): requests/s, p50/p99 and
# errors, the churn rate reached, and the agent's and the metadata API's cache hits and misses (their /metrics).
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metadata_bootstorm as bs  # noqa: E402 - the storm's store, processes and clients
from scale import cpu_seconds  # noqa: E402 - one reader of /proc/PID/stat for both benchmarks

ROOT = Path(__file__).resolve().parent.parent


def churn(db_url: str, network_id: str, rate: float, go: multiprocessing.Event, stop: multiprocessing.Event,
          done: multiprocessing.Queue) -> None:
    """While `go` is set, create and delete ports on `network_id` at `rate` writes per second; at `stop`, report
    how many writes were made and over how many seconds of `go`."""
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    writes, active = 0, 0.0
    alive: list[str] = []
    while not stop.is_set():
        if not go.wait(0.2):
            continue
        started, made = time.monotonic(), 0
        while go.is_set() and not stop.is_set():
            delay = started + made / rate - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            if len(alive) < 50:
                alive.append(registry.create_port({"network_id": network_id}).id)
            else:
                registry.delete_port(alive.pop(0))
            made += 1
        writes, active = writes + made, active + time.monotonic() - started
    for port_id in alive:
        registry.delete_port(port_id)
    done.put((writes, active))
    registry.close()


def process_tree(roots: dict[str, int]) -> dict[str, int]:
    """The named processes and the children of serve and the proxy (serve's metadata API and agent), by PID."""
    out = dict(roots)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        for name, pid in roots.items():
            if ppid == pid and name in ("serve", "proxy"):
                argv = Path(stat.parent, "cmdline").read_bytes().split(b"\0")
                role = next((a.decode() for a in argv if a.startswith(b"metadata-") or a == b"dhcp"), "child")
                out[f"{name}/{role}"] = int(stat.parent.name)
    return out


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
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "latencies": latencies, "seconds": elapsed}


def pooled(rounds: list[dict]) -> dict:
    """The phases of one kind over all rounds, as one storm: every latency, every error."""
    latencies = sorted(x for r in rounds for x in r["latencies"])

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {"boots": sum(r["boots"] for r in rounds), "failed": sum(r["failed"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
            "rps": round(len(latencies) / sum(r["seconds"] for r in rounds)), "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", type=int, default=20000)
    parser.add_argument("--boots", type=int, default=300, help="VMs per phase")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating phases without and with churn (this machine's speed drifts: one pair "
                             "of phases says little)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--churn-rate", type=float, default=200.0)
    parser.add_argument("--store-dir", default="/tmp/provnet-bench")
    args = parser.parse_args()
    workdir = Path(bs.tempfile.mkdtemp(prefix="pn-churn-"))
    db_url, meta = bs.prepare_store(Path(args.store_dir), args.ports, 2 * args.rounds * args.boots)
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
    phases: dict[str, list[dict]] = {"no churn": [], "churn": []}
    caches: dict[str, list[dict]] = {"no churn": [], "churn": []}
    go, stop, done = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Queue()
    churner = multiprocessing.Process(target=churn, args=(db_url, network_id, args.churn_rate, go, stop, done))
    churner.start()
    tree = process_tree({**{name: proc.pid for name, proc in procs.by_name.items()},
                         "churner": churner.pid, "benchmark": os.getpid()})
    cpu: dict[str, dict[str, float]] = {"no churn": {}, "churn": {}}
    first = 0
    try:
        for n in range(args.rounds):
            for name in ("no churn", "churn"):
                if name == "churn":
                    go.set()
                    time.sleep(1.0)  # the churn is at its rate before the storm starts
                before = snapshot(procs.state, api_port)
                cpu0 = {name: cpu_seconds(pid) for name, pid in tree.items()}
                result = asyncio.run(storm_from(proxy_port, first, args.boots, args.concurrency, meta["instances"]))
                go.clear()
                for proc_name, pid in tree.items():
                    cpu[name][proc_name] = cpu[name].get(proc_name, 0.0) + cpu_seconds(pid) - cpu0[proc_name]
                caches[name].append(delta(before, snapshot(procs.state, api_port)))
                first += args.boots
                phases[name].append(result)
                print(f"round {n + 1} {name:8s} rps {result['rps']:.0f} p50 {result['p50_ms']:.2f} ms "
                      f"p99 {result['p99_ms']:.2f} ms errors {result['errors'] + result['failed']} "
                      f"caches {json.dumps(caches[name][-1])}", flush=True)
    finally:
        stop.set()
        writes, seconds = done.get(timeout=60)
        churner.join(30)
        procs.stop()

    results = {name: pooled(rounds) for name, rounds in phases.items()}
    results["churn"]["churn_writes_per_s"] = round(writes / seconds, 1) if seconds else 0.0
    anchor_port = bs.free_port()
    out = subprocess.run(["bash", bs.ANCHOR, "start", str(anchor_port)], capture_output=True, text=True)
    try:
        if out.returncode == 0:
            results["anchor"] = asyncio.run(bs.storm(anchor_port, args.boots, args.concurrency, None))
    finally:
        subprocess.run(["bash", bs.ANCHOR, "stop"], capture_output=True)

    for name, r in results.items():
        print(f"{name:9s} " + json.dumps({k: v for k, v in r.items() if k != "failures"}))
    for name in ("no churn", "churn"):
        seconds = sum(r["seconds"] for r in phases[name])
        print(f"CPU during the {name} phases (% of one core): "
              + ", ".join(f"{proc} {100 * used / seconds:.0f}" for proc, used in cpu[name].items()))
    if "anchor" in results:
        for name in ("no churn", "churn"):
            print(f"{name}: {results[name]['rps'] / results['anchor']['rps']:.2f} of the anchor's requests/s")
    ratios = sorted(c["p99_ms"] / q["p99_ms"] for q, c in zip(phases["no churn"], phases["churn"], strict=True))
    ratio = results["churn"]["p99_ms"] / results["no churn"]["p99_ms"]
    print(f"p99 with churn / without: {ratio:.2f} pooled, {ratios[len(ratios) // 2]:.2f} median of the rounds' "
          f"ratios ({', '.join(f'{r:.2f}' for r in ratios)}) (target <= 1.2); load average "
          f"{open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
