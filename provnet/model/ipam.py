# IP address and MAC allocation rules (pure): pool candidates, requested-address checks, random fa:16:3e MACs.
"""IPAM without I/O: the registry passes in the addresses already used, these functions pick or check.

Allocation choice: an automatic address is random, never the lowest free one. With "lowest free", two
processes allocating on one subnet at the same moment would always pick the same address and one of them
would retry on every create; random picks make such collisions rare, and the database's unique constraint
plus a retry settles the rest. Neutron draws among the first 1000 free addresses, which needs every
allocation of the subnet loaded per create (O(ports)); provnet first draws PROBES random addresses across
the whole pool and asks the database which of them are taken (one indexed query, O(1)), and only when all
are taken (a nearly full pool) falls back to Neutron's way (`pick_ip`), which also decides exhaustion exactly.
"""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator, Sequence

from provnet.model.errors import InvalidIpForNetwork, InvalidIpForSubnet
from provnet.model.resources import AllocationPool, Subnet

CANDIDATE_WINDOW = 1000
PROBES = 16
BASE_MAC = "fa:16:3e:00:00:00"


def ip_int(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def int_ip(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def pool_ranges(pools: Sequence[AllocationPool]) -> list[tuple[int, int]]:
    return [(ip_int(p.start), ip_int(p.end)) for p in pools]


def _free_ints(subnet: Subnet, used: Iterable[str], limit: int) -> list[int]:
    taken = {ip_int(ip) for ip in used}
    out: list[int] = []
    for start, end in pool_ranges(subnet.allocation_pools):
        value = start
        while value <= end and len(out) < limit:
            if value not in taken:
                out.append(value)
            value += 1
        if len(out) >= limit:
            break
    return out


def free_candidates(subnet: Subnet, used: Iterable[str], limit: int = CANDIDATE_WINDOW) -> list[str]:
    """The first `limit` addresses of the subnet's pools (in pool order) that are not in `used`."""
    return [int_ip(v, subnet.ip_version) for v in _free_ints(subnet, used, limit)]


def pick_ip(subnet: Subnet, used: Iterable[str], rng: random.Random | None = None) -> str | None:
    """A free pool address of `subnet` (random among the first 1000 free), or None when the pools are full."""
    candidates = _free_ints(subnet, used, CANDIDATE_WINDOW)
    if not candidates:
        return None
    return int_ip((rng or random).choice(candidates), subnet.ip_version)


def probe_addresses(subnet: Subnet, rng: random.Random | None = None, count: int = PROBES) -> list[str]:
    """Up to `count` distinct random addresses spread over the subnet's pools (weighted by pool size)."""
    sample, randrange = (rng.sample, rng.randrange) if rng else (random.sample, random.randrange)
    ranges = [(start, end) for start, end in pool_ranges(subnet.allocation_pools) if end >= start]
    sizes = [end - start + 1 for start, end in ranges]
    total = sum(sizes)
    if total <= 0:
        return []
    offsets: set[int] = set()
    if total <= 4 * count and total < 2**62:  # most of the pool: a sample, not randrange until distinct
        offsets = set(sample(range(total), min(count, total)))
    while len(offsets) < min(count, total):  # randrange, not sample: an IPv6 pool is too big for len()
        offsets.add(randrange(total))
    picks: set[int] = set()
    for offset in offsets:
        for (start, _end), size in zip(ranges, sizes, strict=True):
            if offset < size:
                picks.add(start + offset)
                break
            offset -= size
    return [int_ip(v, subnet.ip_version) for v in picks]


def is_valid_host_ip(subnet: Subnet, ip: str) -> bool:
    """Neutron's check for a requested address: inside the CIDR and, for IPv4, not the network or broadcast."""
    addr = ipaddress.ip_address(ip)
    net = subnet.network
    if addr.version != net.version or addr not in net:
        return False
    if net.version == 4 and net.prefixlen < 31:
        return addr not in (net.network_address, net.broadcast_address)
    if net.version == 6 and net.prefixlen < 127:
        return addr != net.network_address
    return True


def check_requested_ip(subnet: Subnet, ip: str) -> str:
    """Normalise a requested address for `subnet`, or raise InvalidIpForSubnet (400)."""
    if not is_valid_host_ip(subnet, ip):
        raise InvalidIpForSubnet(ip_address=ip)
    return str(ipaddress.ip_address(ip))


def subnet_for_ip(subnets: Sequence[Subnet], ip: str) -> Subnet:
    """The network's subnet an address without subnet_id belongs to, or InvalidIpForNetwork (400)."""
    addr = ipaddress.ip_address(ip)
    for subnet in subnets:
        if addr.version == subnet.ip_version and addr in subnet.network:
            return subnet
    raise InvalidIpForNetwork(ip_address=ip)


def random_mac(rng: random.Random | None = None, base: str = BASE_MAC) -> str:
    """Neutron's scheme: keep base_mac's first 3 octets (and the 4th when it is not 00), randomise the rest."""
    randrange = rng.randrange if rng else random.randrange
    octets = base.lower().split(":")
    keep = 4 if octets[3] != "00" else 3
    tail = [f"{randrange(256):02x}" for _ in range(6 - keep)]
    return ":".join(octets[:keep] + tail)


def iter_pool_overlaps(ranges: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Index pairs of overlapping (start, end) ranges."""
    for i, (s1, e1) in enumerate(ranges):
        for j in range(i + 1, len(ranges)):
            s2, e2 = ranges[j]
            if s1 <= e2 and s2 <= e1:
                yield i, j
