# The proxy's per-connection MAC read, old and new, in a namespace whose neighbour table holds --entries IPv4 and as
# many IPv6 entries: the anchor is the reader provnet had (all of /proc/net/arp parsed per connection, IPv4 only,
# loaded from git history); against it, provnet's netlink reader (RTM_GETROUTE + RTM_GETNEIGH on its own
# non-blocking socket, messages packed with struct) for IPv4, IPv6 global and IPv6 link-local (ifindex known: one
# request), the same reader with pyroute2's message classes (its first version, from git history), and pyroute2's
# own IPRoute.neigh("get") (the library's whole path, which cannot run on the proxy's event loop: it runs a loop of
# its own).
#
# One command (root: it makes a namespace, pnbench-<pid>, removed at the end):
#   .venv/bin/python benchmarks/neighbour_read.py            # --entries 10000 --n 2000 --rounds 5
#
# Each figure is the best of --rounds interleaved rounds of --n lookups (or what fits in a second, for a slow case),
# in microseconds per lookup, and as a ratio to the anchor of the same run.
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "a54624e"  # the last commit with the /proc/net/arp reader (provnet/metadata/neighbours.py)
CLASSES = "327686e"  # the netlink reader with pyroute2's message classes (ndmsg/rtmsg encode and decode)

INSIDE = r'''
import json, socket, sys, time, types
from pyroute2 import IPRoute
from provnet.metadata.neighbours import NeighbourTable
old_src, classes_src, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v4, v6, ll = sys.argv[5:8]
def load(name, source):
    module = types.ModuleType(name)
    exec(compile(source, name + ".py", "exec"), module.__dict__)
    return module
old, classes = load("old_neighbours", old_src), load("classes_neighbours", classes_src)
index = socket.if_nametoindex("pnbench0")
old_table, new_table, classes_table, ipr = old.NeighbourTable(), NeighbourTable(), classes.NeighbourTable(), IPRoute()
def lib(address, ifindex):
    for msg in ipr.neigh("get", dst=address, ifindex=ifindex):
        return msg.get_attr("NDA_LLADDR")
cases = {
    "anchor: /proc/net/arp, IPv4 (the old reader)": lambda: old_table.mac_of(v4),
    "netlink, IPv4 (route + neighbour)": lambda: new_table.mac_of(v4),
    "netlink, IPv6 global (route + neighbour)": lambda: new_table.mac_of(v6),
    "netlink, IPv6 link-local, ifindex known": lambda: new_table.mac_of(ll, index),
    "netlink with pyroute2's message classes, IPv4": lambda: classes_table.mac_of(v4),
    "... and IPv6 link-local, ifindex known": lambda: classes_table.mac_of(ll, index),
    "pyroute2 IPRoute.neigh('get'), IPv4": lambda: lib(v4, index),
}
for name, fn in cases.items():
    assert fn(), name  # every case finds the MAC
best = {name: float("inf") for name in cases}
for _ in range(rounds):
    for name, fn in cases.items():
        start = time.perf_counter()
        done = 0
        while done < n and (done < 3 or time.perf_counter() - start < 1.0):  # a slow case: a second's worth
            fn()
            done += 1
        best[name] = min(best[name], (time.perf_counter() - start) / done * 1e6)
print(json.dumps(best))
'''


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def build(ns: str, entries: int) -> tuple[str, str, str]:
    """The namespace with `entries` IPv4 and `entries` IPv6 permanent neighbours; a last one of each, and a
    link-local one, to look up."""
    sh("ip", "netns", "add", ns)
    ip = ["ip", "-n", ns]
    sh(*ip, "link", "add", "pnbench0", "type", "veth", "peer", "name", "pnbench1")
    sh(*ip, "link", "set", "pnbench0", "up")
    sh(*ip, "link", "set", "pnbench1", "up")
    sh(*ip, "addr", "add", "10.64.0.1/10", "dev", "pnbench0")
    sh(*ip, "addr", "add", "2001:db8::1/64", "dev", "pnbench0", "nodad")
    lines = []
    v4_base, v6_base = int(ipaddress.IPv4Address("10.64.1.0")), int(ipaddress.IPv6Address("2001:db8::1:0"))
    for i in range(entries):
        mac = f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        lines.append(f"neigh add {ipaddress.IPv4Address(v4_base + i)} lladdr {mac} dev pnbench0 nud permanent")
        lines.append(f"neigh add {ipaddress.IPv6Address(v6_base + i)} lladdr {mac} dev pnbench0 nud permanent")
    lines.append("neigh add fe80::f816:3eff:fe00:1 lladdr fa:16:3e:00:00:01 dev pnbench0 nud permanent")
    with tempfile.NamedTemporaryFile("w", suffix=".batch") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        sh("ip", "-n", ns, "-batch", batch.name)
    last = entries - 1
    return (str(ipaddress.IPv4Address(v4_base + last)), str(ipaddress.IPv6Address(v6_base + last)),
            "fe80::f816:3eff:fe00:1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    old_src, classes_src = (subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:provnet/metadata/neighbours.py"],
                                           capture_output=True, text=True, check=True).stdout
                            for commit in (BASELINE, CLASSES))
    ns = f"pnbench-{os.getpid()}"
    try:
        v4, v6, ll = build(ns, args.entries)
        count = subprocess.run(["ip", "netns", "exec", ns, "wc", "-l", "/proc/net/arp"], capture_output=True,
                               text=True, check=True).stdout.split()[0]
        started = time.monotonic()
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", INSIDE, old_src, classes_src,
                               str(args.n), str(args.rounds), v4, v6, ll], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        best = json.loads(proc.stdout)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    anchor = next(v for k, v in best.items() if k.startswith("anchor"))
    print(f"neighbour read per connection: {args.entries} IPv4 + {args.entries} IPv6 entries "
          f"(/proc/net/arp has {int(count) - 1} lines), best of {args.rounds} x {args.n}, "
          f"{time.monotonic() - started:.1f} s")
    for name, us in best.items():
        print(f"  {name:<48} {us:8.1f} us  {us / anchor:6.3f} x anchor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
