# Benchmark: 100,000 ports through the API's bulk create, then paged and full listings of them, /healthz meanwhile.
"""One run per store, each figure beside its anchor from the same run:

1. anchor: the registry alone (in this process, no HTTP) creates --ports ports in bulks of --bulk;
2. the same number through `provnet api` (a subprocess) as bulk POSTs of --bulk, while a probe GETs /healthz
   every 20 ms: creates/s (and the ratio to the anchor), /healthz p50 / p99 / max during the bulk;
3. with the ports stored: /healthz idle (the latency anchor), `GET /v2.0/ports?limit=1` p50 / p99, and 8
   concurrent full listings (each client, a process of its own, follows the `next` links of the API's
   pagination_max_limit pages to the end) with /healthz p50 / p99 / max meanwhile, and the API's peak RSS;
4. the longest the API holds the GIL for one list answer: one page of pagination_max_limit ports read, shaped
   and encoded, against the whole list in one answer (what pagination_max_limit = 0 would cost per request).

Run (from the repository root):

    PROVNET_TEST_PG_URL=$(bash scripts/postgres.sh) .venv/bin/python benchmarks/api_scale.py
    .venv/bin/python benchmarks/api_scale.py --db sqlite --ports 20000      # smaller
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_ports import PROVNET, Store, free_port, wait_ready  # noqa: E402

from provnet.api import wire  # noqa: E402
from provnet.registry.base import Page  # noqa: E402
from provnet.registry.sql import SqlRegistry  # noqa: E402

CIDR = "10.0.0.0/14"  # room for 262,142 ports


def get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post(url: str, body: dict, timeout: float = 600) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")


def _probe(url: str, interval: float, stop, out) -> None:  # noqa: ANN001  (multiprocessing objects)
    latencies = []
    while not stop.is_set():
        t0 = time.perf_counter()
        get(f"{url}/healthz", timeout=60)
        latencies.append(time.perf_counter() - t0)
        stop.wait(interval)
    out.send(latencies)


class Probe:
    """GETs /healthz every `interval` seconds from a process of its own (so this process's own work, e.g.
    decoding a 6 MB answer, does not delay it) until stopped; the latencies, in seconds."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.latencies: list[float] = []
        self._stop = multiprocessing.Event()
        self._recv, send = multiprocessing.Pipe(duplex=False)
        self._proc = multiprocessing.Process(target=_probe, args=(url, interval, self._stop, send), daemon=True)

    def __enter__(self) -> Probe:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.latencies = self._recv.recv()
        self._proc.join()

    def summary(self) -> str:
        return (f"/healthz p50 {pct(self.latencies, 0.5):.1f} ms  p99 {pct(self.latencies, 0.99):.1f} ms  "
                f"max {max(self.latencies) * 1000:.1f} ms  ({len(self.latencies)} probes)")


def make_network(registry_or_url, name: str) -> str:
    if isinstance(registry_or_url, str):
        net = post(f"{registry_or_url}/v2.0/networks", {"network": {"name": name}})["network"]
        post(f"{registry_or_url}/v2.0/subnets",
             {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": CIDR}})
        return net["id"]
    net = registry_or_url.create_network({"name": name})
    registry_or_url.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": CIDR})
    return net.id


def registry_alone(db_url: str, ports: int, bulk: int) -> float:
    registry = SqlRegistry(db_url)
    try:
        network_id = make_network(registry, "anchor")
        start = time.perf_counter()
        for done in range(0, ports, bulk):
            registry.create_many("port", [{"network_id": network_id, "device_id": f"vm-{done + i}"}
                                          for i in range(min(bulk, ports - done))])
        return ports / (time.perf_counter() - start)
    finally:
        registry.close()


def full_listing(url: str) -> tuple[int, int, float]:
    """One client listing every port by following next links: (ports, pages, seconds)."""
    start, count, pages = time.perf_counter(), 0, 0
    page: str | None = f"{url}/v2.0/ports"
    while page:
        body = json.loads(get(page))
        count, pages = count + len(body["ports"]), pages + 1
        page = next((link["href"] for link in body.get("ports_links", []) if link["rel"] == "next"), None)
        if not body["ports"]:
            break
    return count, pages, time.perf_counter() - start


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def gil_hold(db_url: str) -> str:
    """What one list answer costs the API process in Python (GIL held): a capped page, and the whole list."""
    registry = SqlRegistry(db_url)
    try:
        def answer(page: Page | None) -> tuple[float, int]:
            t0 = time.perf_counter()
            items = registry.list_ports(None, page)
            body = json.dumps({"ports": [p.to_api() for p in items]}).encode()
            return time.perf_counter() - t0, len(body)

        capped = [answer(Page(limit=wire.PAGINATION_MAX_LIMIT))[0] for _ in range(5)]
        whole, size = answer(None)
        return (f"one page of {wire.PAGINATION_MAX_LIMIT}: {statistics.median(capped) * 1000:.1f} ms;  the whole list "
                f"in one answer: {whole * 1000:.0f} ms, {size / 1e6:.0f} MB of JSON")
    finally:
        registry.close()


def bench(kind: str, args: argparse.Namespace, tmp: str) -> None:
    anchor_store = Store(kind, tmp)
    anchor = registry_alone(anchor_store.url, args.ports, args.bulk)
    anchor_store.drop()
    print(f"{kind:<10} anchor   registry alone: {anchor:8.0f} ports/s  ({args.ports} in bulks of {args.bulk})",
          flush=True)

    store = Store(kind, tmp)
    url = f"http://127.0.0.1:{free_port()}"
    log = open(Path(tmp) / f"api-{kind}.log", "w+")
    proc = subprocess.Popen([str(PROVNET), "--state-path", tmp, "--db", store.url, "api",
                             "--bind-port", url.rsplit(":", 1)[1]],
                            stdout=subprocess.DEVNULL, stderr=log, text=True,
                            env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    try:
        wait_ready(url, proc, log)
        network_id = make_network(url, "bench")
        with Probe(url) as probe:
            start = time.perf_counter()
            for done in range(0, args.ports, args.bulk):
                post(f"{url}/v2.0/ports", {"ports": [{"network_id": network_id, "device_id": f"vm-{done + i}"}
                                                     for i in range(min(args.bulk, args.ports - done))]})
            rate = args.ports / (time.perf_counter() - start)
        print(f"{kind:<10} bulk     API: {rate:8.0f} ports/s = {rate / anchor:.2f} x the registry alone;  during "
              f"it {probe.summary()}", flush=True)

        idle = []
        for _ in range(200):
            t0 = time.perf_counter()
            get(f"{url}/healthz")
            idle.append(time.perf_counter() - t0)
        one = []
        for _ in range(200):
            t0 = time.perf_counter()
            get(f"{url}/v2.0/ports?limit=1")
            one.append(time.perf_counter() - t0)
        print(f"{kind:<10} idle     anchor /healthz p50 {pct(idle, 0.5):.2f} ms  p99 {pct(idle, 0.99):.2f} ms;  "
              f"GET /v2.0/ports?limit=1 with {args.ports} stored: p50 {pct(one, 0.5):.2f} ms  "
              f"p99 {pct(one, 0.99):.2f} ms", flush=True)

        with Probe(url) as probe, multiprocessing.Pool(args.listings) as pool:
            start = time.perf_counter()
            results = pool.map(full_listing, [url] * args.listings)
            wall = time.perf_counter() - start
        counts = {count for count, _, _ in results}
        pages = sum(p for _, p, _ in results)
        print(f"{kind:<10} listing  {args.listings} concurrent full listings of {sorted(counts)} ports, "
              f"{pages} pages in {wall:.1f} s ({pages / wall:.0f} pages/s);  meanwhile {probe.summary()};  "
              f"API peak RSS {peak_rss_mb(proc.pid):.0f} MB", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    print(f"{kind:<10} GIL      {gil_hold(store.url)}", flush=True)
    store.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="store(s) (default both)")
    parser.add_argument("--ports", type=int, default=100_000, help="ports created (default 100,000)")
    parser.add_argument("--bulk", type=int, default=10_000, help="ports per bulk request (default 10,000)")
    parser.add_argument("--listings", type=int, default=8, help="concurrent full listings (default 8)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"# benchmarks/api_scale.py on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"load average {load:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db or ["sqlite", "postgresql"]:
            bench(kind, args, tmp)


if __name__ == "__main__":
    main()
