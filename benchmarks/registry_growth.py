# Benchmark: does each registry operation stay as cheap as the store grows, before PostgreSQL re-analyzes it?
"""Grow one network by --step ports at a time, through the real SqlRegistry, and time every common operation at
each size: automatic create (the one-statement path), create on a named subnet and create with a fixed address and
MAC (the general path), lookup by IP and by MAC, get, list by device, update, revision().

Autovacuum is switched off for the benchmark's tables, so PostgreSQL plans every statement from the statistics it
had when the tables were empty: the worst case of a store that grows fast (a fresh cloud, a bulk import), which the
next ANALYZE (autovacuum, about a minute later) would mend. A statement whose plan depends on those statistics shows
as a cost that grows with the size; the figure to read is `growth`, the cost at the last size over the cost at the
first (1.0: flat). The anchor, measured at the same moments, is one primary-key SELECT on a raw DBAPI connection
(what any lookup costs the database, without provnet).

Run (from the repository root):

    PROVNET_TEST_PG_URL=$(bash scripts/postgres.sh) .venv/bin/python benchmarks/registry_growth.py
    .venv/bin/python benchmarks/registry_growth.py --db sqlite --steps 3        # SQLite only, smaller
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from provnet.registry.sql import SqlRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_ports import pg_base_url  # noqa: E402  (the same PostgreSQL URL as the API benchmark)

TABLES = ("networks", "subnets", "ports", "ip_allocations", "provnet_revision", "instances")


def per_op(fn: Callable[[int], object], count: int) -> float:
    """Median milliseconds of `count` calls of fn(i)."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run(kind: str, steps: int, step: int, samples: int) -> None:
    schema = None
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='pngrow')}/growth.sqlite"
        admin = None
    else:
        base = pg_base_url()
        schema = f"growth{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    reg = SqlRegistry(url)
    raw = reg.engine.raw_connection()
    try:
        if admin is not None:
            with admin.begin() as conn:
                for table in TABLES:
                    conn.execute(sa.text(f'ALTER TABLE "{schema}".{table} SET (autovacuum_enabled = false)'))
        net = reg.create_network({"name": "growth"})
        subnet = reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.80.0.0/14"})
        # fixed addresses come from a second subnet: automatic creates only ever draw from the first
        reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.90.0.0/16"})
        rng = random.Random(7)
        ports: list = []
        fixed = iter(range(1, 1 << 20))

        def fixed_create(_: int) -> object:
            n = next(fixed)
            return reg.create_port({"network_id": net.id, "fixed_ips": [{"ip_address": f"10.90.{n >> 8}.{n & 255}"}],
                                    "mac_address": f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}"})  # never drawn at random

        def anchor(_: int) -> object:
            cur = raw.cursor()
            cur.execute("SELECT id FROM ports WHERE id = " + ("%s" if kind != "sqlite" else "?"),
                        (rng.choice(ports).id,))
            return cur.fetchall()

        ops: dict[str, Callable[[int], object]] = {
            "create (automatic)": lambda i: reg.create_port({"network_id": net.id}),
            "create (subnet given)": lambda i: reg.create_port({"network_id": net.id,
                                                                "fixed_ips": [{"subnet_id": subnet.id}]}),
            "create (fixed IP and MAC)": fixed_create,
            "find_ports_by_ip": lambda i: reg.find_ports_by_ip(rng.choice(ports).fixed_ips[0].ip_address, [net.id]),
            "find_ports_by_mac": lambda i: reg.find_ports_by_mac(rng.choice(ports).mac_address, [net.id]),
            "get_port": lambda i: reg.get_port(rng.choice(ports).id),
            "list_ports by device_id": lambda i: reg.list_ports({"device_id": [rng.choice(ports).device_id]}),
            "update_port": lambda i: reg.update_port(rng.choice(ports).id, {"name": f"n{i}"}),
            "revision": lambda i: reg.revision(),
            "anchor: raw primary-key SELECT": anchor,
        }
        table: dict[str, list[float]] = {name: [] for name in ops}
        sizes = []
        for _ in range(steps):
            for _i in range(step):
                ports.append(reg.create_port({"network_id": net.id, "device_id": f"vm-{len(ports)}"}))
            sizes.append(len(reg.list_ports({"network_id": [net.id]})))
            for name, fn in ops.items():
                table[name].append(per_op(fn, samples))
        print(f"\n[{kind}] median ms per operation, {samples} calls each, autovacuum "
              f"{'off' if kind != 'sqlite' else 'n/a'}; columns: ports in the network")
        print(f"{'operation':<32}" + "".join(f"{n:>9,}" for n in sizes) + "   growth")
        for name, values in table.items():
            print(f"{name:<32}" + "".join(f"{v:9.2f}" for v in values) + f"   {values[-1] / values[0]:6.2f}")
    finally:
        raw.close()
        reg.close()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="store(s) (default both)")
    parser.add_argument("--steps", type=int, default=6, help="sizes measured (default 6)")
    parser.add_argument("--step", type=int, default=2000, help="ports added between sizes (default 2000)")
    parser.add_argument("--samples", type=int, default=100, help="calls timed per operation and size (default 100)")
    args = parser.parse_args()
    print(f"# benchmarks/registry_growth.py on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"python {sys.version.split()[0]}")
    for kind in args.db or ["sqlite", "postgresql"]:
        run(kind, args.steps, args.step, args.samples)


if __name__ == "__main__":
    main()
