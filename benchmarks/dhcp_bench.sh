#!/usr/bin/env bash
# DHCP benchmark: provnet's server against dnsmasq and Kea in the same session, with ../shared/bench/dhcp/run.sh.
#
# One command, as root, from the repository:
#     benchmarks/dhcp_bench.sh            full run: each server ramped, PERIOD=15 s, REPS=2 (about 25 minutes)
#     SMOKE=1 benchmarks/dhcp_bench.sh    smoke run on a shared machine: 3 s points, 1 rep, few rates (~2 min)
#
# What runs: run.sh's two namespaces (dhcpb-srv 10.77.0.1 <-veth-> dhcpb-cli 10.77.0.2), perfdhcp as a relay
# (giaddr 10.77.0.2, replies to port 67), scenario "static": NHOSTS (1000) per-MAC reservations, every client
# asking for 121 and 249. Servers, each pinned to CPU $SRV_CPU by run.sh:
#   provnet  benchmarks/dhcp_server.py in run.sh's `custom` mode: the same DhcpService/handle() as `provnet dhcp`,
#            lease journal on disk (WORKDIR, ext4 here) with fsync batched every 100 ms
#   kea      kea-dhcp4 2.2, memfile lease file (append-only, no fsync)
#   dnsmasq  dnsmasq 2.90 --no-ping, lease file rewritten + fsynced per change
# Then an unknown-MAC flood (scenario "pool" against provnet with no reservations: every packet is a stranger) to
# show that ignoring strangers is cheap; its "drop" is 100% by design, read its server CPU.
# Output: run.sh's TSV and perfdhcp logs under $OUT (default /var/tmp/provnet-dhcp-bench), then a table and, per
# server, the highest offered rate whose DORA drop stayed under 1% in every rep.
# Env: RATES_PROVNET, RATES_KEA, RATES_DNSMASQ, RATES_FLOOD (space-separated), PERIOD, REPS, NHOSTS, OUT, WORKDIR.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUN=$REPO/../shared/bench/dhcp/run.sh
[ -x "$RUN" ] || [ -f "$RUN" ] || { echo "dhcp_bench: $RUN not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "dhcp_bench: must run as root (network namespaces)" >&2; exit 1; }
PY=${PY:-$REPO/.venv/bin/python}

if [ "${SMOKE:-}" = 1 ]; then
    export PERIOD=${PERIOD:-3} REPS=${REPS:-1}
    RATES_PROVNET=${RATES_PROVNET:-"1000 3000"}
    RATES_KEA=${RATES_KEA:-"3000"}
    RATES_DNSMASQ=${RATES_DNSMASQ:-"300"}
    RATES_FLOOD=${RATES_FLOOD:-"3000"}
else
    export PERIOD=${PERIOD:-15} REPS=${REPS:-2}
    RATES_PROVNET=${RATES_PROVNET:-"1000 2000 3000 3500 4000 4500 5000"}
    RATES_KEA=${RATES_KEA:-"3000 3500 4000 4500"}
    RATES_DNSMASQ=${RATES_DNSMASQ:-"200 300 350 400"}
    RATES_FLOOD=${RATES_FLOOD:-"3000 5000"}
fi
export NHOSTS=${NHOSTS:-1000}
export OUT=${OUT:-/var/tmp/provnet-dhcp-bench}
export WORKDIR=${WORKDIR:-/var/tmp}
export SERVER_CMD="$PY $REPO/benchmarks/dhcp_server.py --interface dhcpb-s"
mkdir -p "$OUT"
rm -f "$OUT/results.tsv"

bash "$RUN" setup
trap 'bash "$RUN" teardown >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC2086
{
    bash "$RUN" ramp custom static $RATES_PROVNET
    bash "$RUN" ramp kea static $RATES_KEA
    bash "$RUN" ramp dnsmasq static $RATES_DNSMASQ
    OUT=$OUT/flood bash "$RUN" ramp custom pool $RATES_FLOOD
} | grep -E '^server=' || true

"$PY" - "$OUT/results.tsv" "$OUT/flood/results.tsv" <<'EOF'
import csv, sys
from collections import defaultdict

def rows(path):
    try:
        with open(path) as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError:
        return []

name = {"custom": "provnet"}
main, flood = rows(sys.argv[1]), rows(sys.argv[2])
print()
print(f"{'server':8} {'scenario':10} {'offered/s':>9} {'achieved/s':>10} {'DORA drop % (reps)':>20} "
      f"{'DO avg ms':>9} {'RA avg/max ms':>14} {'srv CPU %':>9}")
groups = defaultdict(list)
for r in main + flood:
    groups[(r["server"], r["scenario"], r["clients"], int(r["rate_offered"]))].append(r)
for (server, scen, clients, rate), rs in groups.items():
    label = f"{scen} {clients}" if scen == "static" else "flood"
    drops = ", ".join(r["dora_drop_pct"] for r in rs)
    achieved = sum(float(r["rate_achieved"]) for r in rs) / len(rs)
    do = sum(float(r["do_avg_ms"]) for r in rs) / len(rs)
    ra = sum(float(r["ra_avg_ms"]) for r in rs) / len(rs)
    ramax = max(float(r["ra_max_ms"]) for r in rs)
    cpu = sum(float(r["srv_cpu_pct"]) for r in rs) / len(rs)
    print(f"{name.get(server, server):8} {label:10} {rate:>9} {achieved:>10.0f} {drops:>20} {do:>9.2f} "
          f"{ra:>6.2f} / {ramax:<6.1f} {cpu:>9.0f}")
print()
best = {}
for (server, scen, clients, rate), rs in groups.items():
    if scen == "static" and all(float(r["dora_drop_pct"]) < 1.0 for r in rs):
        best[server] = max(best.get(server, 0), rate)
for server in ("custom", "kea", "dnsmasq"):
    print(f"highest rate with < 1% drops in every rep, {name.get(server, server)}: {best.get(server, 'none')}/s")
EOF
