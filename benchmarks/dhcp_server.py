# Benchmark entry point: provnet's DHCP server on the reservations run.sh generates (no registry; same hot path).
#
# run.sh (../shared/bench/dhcp/run.sh, `custom` mode) starts it inside its server namespace as
#   SERVER_CMD="$PY benchmarks/dhcp_server.py --interface dhcpb-s"
# with BENCH_RESERVATIONS (a Kea-style JSON list of {hw-address, ip-address, hostname}) and BENCH_WORK (where the
# lease journal goes: on disk, fsync batched, exactly as `provnet dhcp` keeps it). The subnet and options are the
# ones run.sh gives dnsmasq and Kea: 10.77.0.0/16, router 10.77.0.1, DNS 10.77.0.1, domain bench.test, and
# 121/249 = 169.254.169.254/32 via 10.77.0.3 + default via 10.77.0.1.
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from provnet.dhcp.service import DhcpService, StaticSource, interface_addresses
from provnet.dhcp.view import Settings, build_view, snapshot_from
from provnet.model.resources import FixedIP, HostRoute, Network, Port, Subnet
from provnet.runtime.service import run_services


def bench_view(reservations: list[dict], interface: str):
    net = Network(id="bench-net", name="bench", network_type="flat", physical_network="physnet1")
    sub = Subnet(id="bench-sub", network_id=net.id, cidr="10.77.0.0/16", gateway_ip="10.77.0.3",
                 host_routes=[HostRoute("0.0.0.0/0", "10.77.0.1")], dns_nameservers=["10.77.0.1"])
    ports = [Port(id=f"port-{i}", network_id=net.id, mac_address=r["hw-address"], device_id=f"vm-{i}",
                  device_owner="compute:nova", fixed_ips=[FixedIP(sub.id, r["ip-address"])])
             for i, r in enumerate(reservations)]
    names = {f"vm-{i}": r.get("hostname", "") for i, r in enumerate(reservations)}
    snap = snapshot_from(1, [net], [sub], ports, names)
    return build_view(snap, Settings(dns_domain="bench.test"), interface_addresses(interface))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--interface", required=True)
    p.add_argument("--reservations", default=os.environ.get("BENCH_RESERVATIONS"))
    p.add_argument("--journal", default=os.path.join(os.environ.get("BENCH_WORK", "."), "dhcp-leases.journal"))
    p.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's default loop")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    with open(args.reservations, encoding="utf-8") as fh:
        reservations = json.load(fh)
    service = DhcpService(StaticSource(bench_view(reservations, args.interface)), args.interface, args.journal)
    if args.uvloop:
        import uvloop

        uvloop.run(run_services([service]))
    else:
        asyncio.run(run_services([service]))


if __name__ == "__main__":
    main()
