# Benchmark: port lookup by (IP, network) with 100,000 ports on SQLite and PostgreSQL, plus registry create rate.
"""Measure SqlRegistry.find_ports_by_ip, the metadata agent's per-request lookup, on a large registry.

Run (from the repository root, PostgreSQL via scripts/postgres.sh):

    .venv/bin/python benchmarks/registry_lookup.py                       # 100k ports, SQLite and PostgreSQL
    .venv/bin/python benchmarks/registry_lookup.py --ports 5000 --lookups 500 --creates 200   # smoke run

PostgreSQL is used when `--pg-url` or $PROVNET_TEST_PG_URL is set (a throw-away schema is created and
dropped). The 100k ports are bulk-inserted with executemany straight into the tables (a path only this
benchmark uses); lookups then go through the real SqlRegistry.find_ports_by_ip. Alongside, the anchor: the
same indexed lookup as one hand-written SQL statement on a raw DBAPI connection, i.e. what the database
itself costs without provnet's layers. Target: p99 <= 1 ms. Also prints SqlRegistry.create_port per second
(in-process, no HTTP) on a fresh subnet.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from provnet.registry import schema as t
from provnet.registry.sql import SqlRegistry

CIDR = "10.64.0.0/14"  # room for 262k addresses


def bulk_load(reg: SqlRegistry, count: int) -> tuple[str, list[str]]:
    """A network and subnet with `count` ports inserted in batches; returns (network_id, their IPs)."""
    net = reg.create_network({"name": "bench"})
    subnet = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": CIDR})
    hosts = ipaddress.ip_network(CIDR).hosts()
    next(hosts)  # the gateway
    now = datetime.now(UTC)
    ips: list[str] = []
    batch = 5000
    with reg.engine.begin() as conn:
        for start in range(0, count, batch):
            ports, allocs = [], []
            for i in range(start, min(count, start + batch)):
                pid, ip = str(uuid.uuid4()), str(next(hosts))
                ips.append(ip)
                ports.append({"id": pid, "network_id": net.id, "name": f"p{i}", "project_id": "bench",
                              "admin_state_up": True, "mac_address": f"fa:16:3e:{i >> 16 & 255:02x}:"
                              f"{i >> 8 & 255:02x}:{i & 255:02x}", "device_id": f"vm-{i}",
                              "device_owner": "compute:nova", "status": "ACTIVE", "security_groups": [],
                              "port_security_enabled": True, "allowed_address_pairs": [], "binding_host_id": "",
                              "binding_vnic_type": "normal", "binding_profile": {}, "binding_vif_type": "unbound",
                              "binding_vif_details": {}, "binding_failure_reason": None, "created_at": now})
                allocs.append({"subnet_id": subnet.id, "ip_address": ip, "port_id": pid, "network_id": net.id,
                               "position": 0})
            conn.execute(sa.insert(t.ports), ports)
            conn.execute(sa.insert(t.ip_allocations), allocs)
        conn.execute(sa.update(t.revision).values(value=t.revision.c.value + 1))
    if reg.engine.dialect.name == "postgresql":
        with reg.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return net.id, ips


def percentiles(samples_ns: list[int]) -> str:
    ms = sorted(s / 1e6 for s in samples_ns)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.3f} ms  p99 {p99:.3f} ms  max {ms[-1]:.3f} ms  (n={len(ms)})"


def measure(fn: Callable[[str], object], ips: list[str], lookups: int) -> list[int]:
    rng = random.Random(1)
    for ip in rng.sample(ips, min(200, len(ips))):  # warm the pool and caches
        fn(ip)
    samples = []
    for _ in range(lookups):
        ip = rng.choice(ips)
        start = time.perf_counter_ns()
        fn(ip)
        samples.append(time.perf_counter_ns() - start)
    return samples


def raw_anchor(reg: SqlRegistry, network_id: str) -> Callable[[str], object]:
    """One hand-written indexed SELECT on a raw DBAPI connection (kept open): the database's own cost."""
    dbapi = reg.engine.raw_connection()
    postgres = reg.engine.dialect.name == "postgresql"
    if postgres:
        dbapi.dbapi_connection.autocommit = True  # as the registry's reads: no BEGIN/ROLLBACK round trips
    mark = "%s" if postgres else "?"
    sql = (f"SELECT p.* FROM ports p JOIN ip_allocations a ON a.port_id = p.id "
           f"WHERE a.ip_address = {mark} AND a.network_id = {mark}")

    def lookup(ip: str) -> object:
        cur = dbapi.cursor()
        cur.execute(sql, (ip, network_id))
        rows = cur.fetchall()
        cur.close()
        return rows
    return lookup


def create_rate(reg: SqlRegistry, creates: int) -> str:
    net = reg.create_network({"name": "create-bench"})
    reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.200.0.0/16"})
    for _ in range(20):  # warm-up: statement compilation, server-side prepares
        reg.create_port({"network_id": net.id})
    start = time.perf_counter()
    for _ in range(creates):
        reg.create_port({"network_id": net.id})
    elapsed = time.perf_counter() - start
    return f"{creates / elapsed:.0f} creates/s ({creates} ports, {elapsed * 1000 / creates:.2f} ms each)"


def run(label: str, db_url: str, ports: int, lookups: int, creates: int) -> None:
    reg = SqlRegistry(db_url)
    try:
        start = time.perf_counter()
        network_id, ips = bulk_load(reg, ports)
        print(f"[{label}] bulk-loaded {ports} ports in {time.perf_counter() - start:.1f} s")
        found = reg.find_ports_by_ip(ips[len(ips) // 2], [network_id])
        assert len(found) == 1 and found[0].fixed_ips[0].ip_address == ips[len(ips) // 2], found
        samples = measure(lambda ip: reg.find_ports_by_ip(ip, [network_id]), ips, lookups)
        print(f"[{label}] find_ports_by_ip (IP, network):        {percentiles(samples)}")
        samples = measure(raw_anchor(reg, network_id), ips, lookups)
        print(f"[{label}] anchor: raw DBAPI indexed SELECT:        {percentiles(samples)}")
        samples = measure(lambda ip: reg.revision(), ips, lookups)
        print(f"[{label}] revision():                              {percentiles(samples)}")
        if creates:
            print(f"[{label}] create_port in-process:                  {create_rate(reg, creates)}")
    finally:
        reg.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", type=int, default=100_000, help="ports to bulk-load (default 100000)")
    parser.add_argument("--lookups", type=int, default=5000, help="timed lookups per backend (default 5000)")
    parser.add_argument("--creates", type=int, default=1000, help="ports to create for the create rate (0: skip)")
    parser.add_argument("--pg-url", default=os.environ.get("PROVNET_TEST_PG_URL", ""),
                        help="PostgreSQL URL (default $PROVNET_TEST_PG_URL; empty: SQLite only)")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    args = parser.parse_args()
    if not 1 <= args.ports <= 200_000:
        parser.error("--ports must be between 1 and 200000 (the benchmark subnet holds 262k addresses)")
    if args.lookups < 1 or args.creates < 0:
        parser.error("--lookups must be >= 1 and --creates >= 0")
    print(f"registry lookup benchmark: {args.ports} ports, {args.lookups} lookups; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory(prefix="pnbench") as tmp:
            run("sqlite", f"sqlite:///{tmp}/bench.sqlite", args.ports, args.lookups, args.creates)
    if args.backend in ("both", "postgresql"):
        if not args.pg_url:
            print("[postgresql] skipped: no --pg-url / PROVNET_TEST_PG_URL (scripts/postgres.sh prints one)")
            return 0 if args.backend == "both" else 2
        schema = f"pnbench{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            sep = "&" if "?" in args.pg_url else "?"
            run("postgresql", f"{args.pg_url}{sep}options=-csearch_path%3D{schema}", args.ports, args.lookups,
                args.creates)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
