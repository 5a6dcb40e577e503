# Fair share at the metadata proxy (issue 10 row 1): the neighbours' latency while one VM abuses the proxy, with real
# parts: network namespaces (a router namespace with the iptables redirect, one namespace per VM), the real
# `provnet metadata-proxy` process at a stock 1,024 open files, and the real metadata-agent and metadata-api
# processes behind it. Needs root.
#
# One command:
#   .venv/bin/python benchmarks/metadata_fairshare.py                 # 4 victims, 10 s per scenario
#   PYTHONPATH=/tmp/old .venv/bin/python benchmarks/metadata_fairshare.py --scenarios none,hold   # older code
#
# Scenarios, each with the victims running the whole time (--rate requests a second each, a new connection per
# request as cloud-init does, checking their own instance id in meta_data.json):
#   none   nobody misbehaves: the baseline of the same run, what every other figure is compared with
#   hold   the abuser opens 2,000 connections and holds whatever it gets, idle
#   flood  the abuser connects, sends a request and closes, in a loop, as fast as it can
#   loris  the abuser opens 2,000 connections and sends one byte a second on each it got
#   noread the abuser pipelines requests on 64 connections as fast as the proxy takes them and never reads
# Printed per scenario: victims' answered / failed requests, p50 / p99 / max latency; the abuser's connections.
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from metadata_abuse import start_abuser, start_victim, stop, victim_result  # noqa: E402
from metadata_bootstorm import SECRET, Procs, free_port, wait_http, wait_unix  # noqa: E402
from metadata_chain import PROVNET_BIN, build_seed, build_topology, wait_port  # noqa: E402

from provnet.registry import open_registry  # noqa: E402

ABUSE = {"none": None, "hold": ("hold", 2000), "flood": ("flood", 0), "loris": ("loris", 2000),
         "noread": ("noread", 64)}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victims", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="victims' run per scenario")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="requests a second per victim, each on a new connection (0: as fast as answered)")
    parser.add_argument("--scenarios", default=",".join(ABUSE))
    parser.add_argument("--nofile", type=int, default=1024, help="the proxy's open files limit (soft and hard)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    vms = {f"vm{i + 1}": f"172.16.1.{103 + i}" for i in range(args.victims)}
    vms["abuser"] = f"172.16.1.{103 + args.victims}"
    workdir = Path(tempfile.mkdtemp(prefix="pn-fairshare-"))
    state = tempfile.mkdtemp(prefix="pnf-", dir="/tmp")
    db_url = f"sqlite:///{workdir}/provnet.sqlite"
    registry = open_registry(db_url)
    seed = build_seed(registry, vms)
    macs = {vm: registry.get_port(port).mac_address for vm, port in seed.ports.items()}  # as Nova plugs them
    registry.close()
    sock, api_port = f"{state}/metadata_proxy", free_port()
    conf = workdir / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {SECRET}\nnova_metadata_port = {api_port}\n"
                    f"metadata_listen_port = {api_port}\n")
    base = ["--config-file", str(conf), "--state-path", state, "--db", db_url]
    procs = Procs(workdir, state)
    topo = None
    rows = []
    try:
        procs.start("api", *base, "metadata-api")
        procs.start("agent", *base, "metadata-agent", "--socket", sock)
        wait_http(api_port)
        wait_unix(sock)
        topo = build_topology(vms, macs=macs)
        with open(workdir / "proxy.log", "ab") as log:
            nofile = args.nofile
            proxy = subprocess.Popen(
                ["ip", "netns", "exec", topo.router_ns, PROVNET_BIN, *base, "metadata-proxy", "--router-id",
                 seed.router_id, "--port", "9697", "--socket", sock], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile
                else None)
        topo.procs.append(proxy)
        wait_port(topo.router_ns, "127.0.0.1", 9697)
        for name in args.scenarios.split(","):
            abuse = ABUSE[name]
            keep = args.seconds if name == "flood" else args.seconds + 30  # (flood: ends with the victims, counted)
            abuser, got = start_abuser(topo, "abuser", abuse[0], abuse[1], keep) if abuse else (None, {})
            started = time.monotonic()
            victims = [start_victim(topo, vm, args.seconds, seed.instances[vm], rate=args.rate)
                       for vm in vms if vm != "abuser"]
            results = [victim_result(v, args.seconds + 120) for v in victims]
            elapsed = time.monotonic() - started
            final = stop(abuser) if abuser else None
            latencies = [t for r in results for t in r["latencies"]]
            row = {"scenario": name, "answered": sum(r["ok"] for r in results),
                   "failed": sum(r["error_count"] for r in results), "req_s": sum(r["ok"] for r in results) / elapsed,
                   "p50_ms": pct(latencies, 0.5), "p99_ms": pct(latencies, 0.99), "max_ms": pct(latencies, 1.0),
                   "abuser": {**got, **(final or {})},
                   "errors": sorted({e for r in results for e in r["errors"]})[:5]}
            rows.append(row)
            print(f"{name:7s} victims: {row['answered']} answered, {row['failed']} failed, {row['req_s']:.0f} req/s, "
                  f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, max {row['max_ms']:.1f} ms; "
                  f"abuser {row['abuser']}", flush=True)
    finally:
        if topo is not None:
            topo.teardown()
        procs.stop()
    base_p99 = next((r["p99_ms"] for r in rows if r["scenario"] == "none"), float("nan"))
    print("\n| scenario | victims answered | failed | req/s | p50 ms | p99 ms | p99 / baseline | max ms | abuser |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['answered']:,} | {r['failed']} | {r['req_s']:,.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['p99_ms'] / base_p99:.2f} | {r['max_ms']:.1f} | {json.dumps(r['abuser'])} |")
    print(json.dumps({"victims": args.victims, "seconds": args.seconds, "rate": args.rate, "nofile": args.nofile,
                      "rows": rows},
                     indent=1))
    print(f"logs: {workdir}")
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
