# IP address and MAC allocation rules (pure): pool candidates, requested-address checks, random fa:16:3e MACs.
"""IPAM without I/O: the registry passes in the addresses already used, these functions pick or check.

Allocation choice: an automatic address is drawn at random among the first (up to) 1000 free addresses
of the subnet's pools, as Neutron does. The lowest free address would be more predictable, but two
processes allocating on one subnet at the same moment would then always pick the same address and one
of them would have to retry on every create; drawing at random makes such collisions rare, and the
database's unique constraint plus a retry settles the rest.
"""
from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator, Sequence

from provnet.model.errors import BadRequest
from provnet.model.resources import AllocationPool, Subnet

CANDIDATE_WINDOW = 1000
BASE_MAC = "fa:16:3e:00:00:00"


class InvalidIpForSubnet(BadRequest):
    message_format = "IP address %(ip_address)s is not a valid IP for the specified subnet."


class InvalidIpForNetwork(BadRequest):
    message_format = "IP address %(ip_address)s is not a valid IP for any of the subnets on the specified network."


def ip_int(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def int_ip(value: int, version: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def pool_ranges(pools: Sequence[AllocationPool]) -> list[tuple[int, int]]:
    return [(ip_int(p.start), ip_int(p.end)) for p in pools]


def free_candidates(subnet: Subnet, used: Iterable[str], limit: int = CANDIDATE_WINDOW) -> list[str]:
    """The first `limit` addresses of the subnet's pools (in pool order) that are not in `used`."""
    taken = {ip_int(ip) for ip in used}
    out: list[str] = []
    for start, end in pool_ranges(subnet.allocation_pools):
        value = start
        while value <= end and len(out) < limit:
            if value not in taken:
                out.append(int_ip(value, subnet.ip_version))
            value += 1
        if len(out) >= limit:
            break
    return out


def pick_ip(subnet: Subnet, used: Iterable[str], rng: random.Random | None = None) -> str | None:
    """A free pool address of `subnet` (random among the first 1000 free), or None when the pools are full."""
    candidates = free_candidates(subnet, used)
    if not candidates:
        return None
    return (rng or random).choice(candidates)


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
    rng = rng or random
    octets = base.lower().split(":")
    keep = 4 if octets[3] != "00" else 3
    tail = [f"{rng.randrange(256):02x}" for _ in range(6 - keep)]
    return ":".join(octets[:keep] + tail)


def iter_pool_overlaps(ranges: Sequence[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Index pairs of overlapping (start, end) ranges."""
    for i, (s1, e1) in enumerate(ranges):
        for j in range(i + 1, len(ranges)):
            s2, e2 = ranges[j]
            if s1 <= e2 and s2 <= e1:
                yield i, j
