# IPAM (pure): candidates from pools, random choice among the first 1000 free, requested-address checks, MACs.
from __future__ import annotations

import random
import re

from registry_support import expect

from provnet.model.ipam import (
    check_requested_ip,
    free_candidates,
    pick_ip,
    random_mac,
    subnet_for_ip,
)
from provnet.model.resources import AllocationPool, Subnet


def subnet(cidr: str = "10.0.0.0/24", pools: tuple = (("10.0.0.10", "10.0.0.12"), ("10.0.0.20", "10.0.0.20")),
           sid: str = "s1") -> Subnet:
    return Subnet(id=sid, network_id="n", cidr=cidr, gateway_ip="10.0.0.1",
                  allocation_pools=[AllocationPool(a, b) for a, b in pools])


def test_candidates_follow_pools_and_skip_used() -> None:
    assert free_candidates(subnet(), ["10.0.0.11"]) == ["10.0.0.10", "10.0.0.12", "10.0.0.20"]
    assert free_candidates(subnet(), ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.20"]) == []


def test_pick_is_random_within_the_first_1000_free() -> None:
    big = subnet("10.0.0.0/16", (("10.0.0.2", "10.0.255.254"),))
    rng = random.Random(7)
    picks = {pick_ip(big, [], rng) for _ in range(200)}
    assert len(picks) > 150  # spread, so concurrent writers rarely collide
    window = set(free_candidates(big, []))
    assert len(window) == 1000 and picks <= window
    assert pick_ip(subnet(), ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.20"]) is None


def test_requested_address_in_cidr_not_network_or_broadcast() -> None:
    s = subnet()
    assert check_requested_ip(s, "10.0.0.200") == "10.0.0.200"  # outside the pools is fine
    for bad in ("10.0.0.0", "10.0.0.255", "10.0.1.5"):
        expect("InvalidIpForSubnet", 400, f"IP address {bad} is not a valid IP for the specified subnet.",
               check_requested_ip, s, bad)


def test_subnet_for_ip() -> None:
    a, b = subnet(sid="a"), subnet("10.0.1.0/24", (), sid="b")
    assert subnet_for_ip([a, b], "10.0.1.7").id == "b"
    expect("InvalidIpForNetwork", 400, "IP address 192.0.2.1 is not a valid IP for any of the subnets on the "
                                       "specified network.", subnet_for_ip, [a, b], "192.0.2.1")


def test_macs_keep_the_openstack_prefix() -> None:
    rng = random.Random(1)
    macs = {random_mac(rng) for _ in range(500)}
    assert len(macs) == 500
    assert all(re.fullmatch(r"fa:16:3e(:[0-9a-f]{2}){3}", m) for m in macs)
    assert random_mac(rng, "fa:16:3e:4f:00:00").startswith("fa:16:3e:4f:")


def test_probes_spread_over_all_pools() -> None:
    from provnet.model.ipam import probe_addresses

    s = subnet("10.0.0.0/16", (("10.0.0.10", "10.0.0.19"), ("10.0.200.0", "10.0.200.9")))
    rng = random.Random(3)
    seen = set()
    for _ in range(50):
        probes = probe_addresses(s, rng)
        assert len(probes) == len(set(probes)) == 16
        assert all(any(ip in p for p in s.allocation_pools) for ip in probes)
        seen.update(probes)
    assert len(seen) == 20  # every address of both pools gets drawn
    assert sorted(probe_addresses(subnet(), rng)) == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.20"]
    assert probe_addresses(subnet(pools=()), rng) == []


def test_ipv6_pools_are_probed_without_overflow() -> None:
    from provnet.model.ipam import probe_addresses

    v6 = Subnet(id="s6", network_id="n", cidr="fd00::/64", ip_version=6, gateway_ip="fd00::1",
                allocation_pools=[AllocationPool("fd00::2", "fd00::ffff:ffff:ffff:ffff")])
    probes = probe_addresses(v6, random.Random(5))
    assert len(probes) == 16 and all(p.startswith("fd00::") for p in probes)
    assert pick_ip(v6, ["fd00::2"]) is not None


def test_an_allocation_pool_holds_addresses_of_its_own_version_only():
    # mypy found the old comparison mixing versions (an IPv6 address against an IPv4 pool raised TypeError);
    # '::a' has the same integer as 0.0.0.10, inside this pool by number but not by version
    pool = AllocationPool("0.0.0.1", "0.0.0.255")
    assert "0.0.0.10" in pool
    assert "::a" not in pool
    assert "0.0.1.0" not in pool
    assert "2001:db8::5" not in AllocationPool("2001:db8::1", "2001:db8::4")
    assert "2001:db8::3" in AllocationPool("2001:db8::1", "2001:db8::4")
