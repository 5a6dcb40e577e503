# Provider-network and subnet rules (pure): ML2's and Neutron's checks with their status codes and messages.
from __future__ import annotations

import pytest
from registry_support import expect

from provnet.model.network_rules import Segment, allocate_segment, check_segment, parse_vlan_ranges
from provnet.model.subnet_rules import build_subnet, updated_subnet
from provnet.model.validation import parse_create

NET = "1b4a3f42-7b7d-4a0b-9b4b-3f0f5b0a6c11"
ANY_FLAT = ("*",)


def seg(**attrs: object) -> dict:
    return {f"provider:{k}": v for k, v in attrs.items()}


@pytest.mark.parametrize(("attrs", "message"), [
    (seg(physical_network="physnet1"), "network_type required"),
    (seg(network_type="geneve"), "network_type value 'geneve' not supported"),
    (seg(network_type="flat"), "physical_network required for flat provider network"),
    (seg(network_type="flat", physical_network="physnet1", segmentation_id=5),
     "segmentation_id prohibited for flat provider network"),
    (seg(network_type="vlan", physical_network="physnet1", segmentation_id=0),
     "segmentation_id out of range (1 through 4094)"),
    (seg(network_type="vlan", physical_network="physnet1", segmentation_id=4095),
     "segmentation_id out of range (1 through 4094)"),
    (seg(network_type="vlan", segmentation_id=100),
     "segmentation_id requires physical_network for VLAN provider network"),
    (seg(network_type="vxlan", physical_network="physnet1"), "provider:physical_network specified for vxlan network"),
    (seg(network_type="gre", physical_network="physnet1"), "provider:physical_network specified for gre network"),
    (seg(network_type="local", segmentation_id=3), "segmentation_id prohibited for local provider network"),
])
def test_provider_checks(attrs: dict, message: str) -> None:
    expect("InvalidInput", 400, f"Invalid input for operation: {message}.", check_segment, attrs, ANY_FLAT, {})


def test_flat_networks_and_vlan_ranges_from_config() -> None:
    flat = seg(network_type="flat", physical_network="physnet2")
    expect("InvalidInput", 400, "Invalid input for operation: physical_network 'physnet2' unknown for flat "
                                "provider network.", check_segment, flat, ("physnet1",), {})
    assert check_segment(flat, ("physnet1", "physnet2"), {}) == Segment("flat", "physnet2", None)
    ranges = parse_vlan_ranges(["physnet1:100:199", "physnet3"])
    assert ranges == {"physnet1": [(100, 199)], "physnet3": []}
    vlan = seg(network_type="vlan", physical_network="physnet2", segmentation_id=7)
    expect("InvalidInput", 400, "Invalid input for operation: physical_network 'physnet2' unknown for VLAN "
                                "provider network.", check_segment, vlan, ANY_FLAT, ranges)
    assert check_segment(vlan, ANY_FLAT, {}).key == "vlan:physnet2:7"  # no ranges configured: any physnet
    with pytest.raises(ValueError):
        parse_vlan_ranges(["physnet1:0:10"])


def test_segmentation_id_allocation() -> None:
    ranges = parse_vlan_ranges(["physnet1:100:101"])
    wanted = Segment("vlan", "physnet1", None)
    assert allocate_segment(wanted, ranges, {"vlan:physnet1:100"}).segmentation_id == 101
    expect("NoNetworkAvailable", 503, None, allocate_segment, wanted, ranges,
           {"vlan:physnet1:100", "vlan:physnet1:101"})
    assert allocate_segment(Segment("vxlan", None, None), {}, {"vxlan:1"}).segmentation_id == 2
    assert check_segment({}, ANY_FLAT, {}) is None


def subnet_attrs(**extra: object) -> dict:
    return parse_create("subnet", {"network_id": NET, "ip_version": 4, "cidr": "192.168.199.0/24", **extra})


def test_defaults_gateway_first_host_and_pool_the_rest() -> None:
    subnet = build_subnet("s1", subnet_attrs(), [])
    assert subnet.gateway_ip == "192.168.199.1"
    assert [p.to_api() for p in subnet.allocation_pools] == [{"start": "192.168.199.2", "end": "192.168.199.254"}]
    mid = build_subnet("s2", subnet_attrs(gateway_ip="192.168.199.100"), [])
    assert [(p.start, p.end) for p in mid.allocation_pools] == [("192.168.199.1", "192.168.199.99"),
                                                                ("192.168.199.101", "192.168.199.254")]
    none = build_subnet("s3", subnet_attrs(gateway_ip=None), [])
    assert none.gateway_ip is None and none.allocation_pools[0].start == "192.168.199.1"


def test_seed_subnet_normalised() -> None:
    attrs = parse_create("subnet", {"network_id": NET, "ip_version": 4, "cidr": "172.16.1.101/24",
                                    "gateway_ip": "172.16.1.2", "enable_dhcp": "False",
                                    "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}]})
    subnet = build_subnet("s1", attrs, [])
    assert subnet.cidr == "172.16.1.0/24" and subnet.gateway_ip == "172.16.1.2" and subnet.enable_dhcp is False
    assert [p.to_api() for p in subnet.allocation_pools] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]


def test_gateway_outside_cidr_is_on_link() -> None:
    assert build_subnet("s1", subnet_attrs(gateway_ip="10.9.9.9"), []).gateway_ip == "10.9.9.9"


@pytest.mark.parametrize(("extra", "error", "status", "message"), [
    ({"gateway_ip": "192.168.199.0"}, "InvalidInput", 400,
     "Invalid input for operation: Gateway is not valid on subnet."),
    ({"gateway_ip": "192.168.199.255"}, "InvalidInput", 400,
     "Invalid input for operation: Gateway is not valid on subnet."),
    ({"cidr": "0.0.0.0/0"}, "InvalidInput", 400, "Invalid input for operation: 0 is not allowed as CIDR prefix "
                                                 "length."),
    ({"cidr": "fd00::/64"}, "InvalidInput", 400, "Invalid input for operation: cidr 'fd00::/64' does not match "
                                                 "the ip_version '4'."),
    ({"cidr": "10.0.0.0/31"}, "InvalidInput", 400, "Invalid input for operation: Subnet has a prefix length that "
                                                   "is incompatible with DHCP service enabled."),
    ({"allocation_pools": [{"start": "192.168.199.20", "end": "192.168.199.10"}]}, "InvalidAllocationPool", 400,
     "The allocation pool 192.168.199.20-192.168.199.10 is not valid."),
    ({"allocation_pools": [{"start": "192.168.199.0", "end": "192.168.199.10"}]}, "OutOfBoundsAllocationPool",
     400, "The allocation pool 192.168.199.0-192.168.199.10 spans beyond the subnet cidr 192.168.199.0/24."),
    ({"allocation_pools": [{"start": "192.168.199.250", "end": "192.168.200.3"}]}, "OutOfBoundsAllocationPool",
     400, "The allocation pool 192.168.199.250-192.168.200.3 spans beyond the subnet cidr 192.168.199.0/24."),
    ({"allocation_pools": [{"start": "192.168.199.10", "end": "192.168.199.20"},
                           {"start": "192.168.199.20", "end": "192.168.199.30"}]}, "OverlappingAllocationPools",
     409, "Found overlapping allocation pools: 192.168.199.10-192.168.199.20 192.168.199.20-192.168.199.30 for "
          "subnet 192.168.199.0/24."),
    ({"gateway_ip": "192.168.199.15", "allocation_pools": [{"start": "192.168.199.10", "end": "192.168.199.20"}]},
     "GatewayConflictWithAllocationPools", 409,
     "Gateway ip 192.168.199.15 conflicts with allocation pool 192.168.199.10-192.168.199.20."),
    ({"dns_nameservers": [f"10.0.0.{i}" for i in range(6)]}, "DNSNameServersExhausted", 400,
     "Unable to complete operation for s1. The number of DNS nameservers exceeds the limit 5."),
    ({"host_routes": [{"destination": f"10.{i}.0.0/16", "nexthop": "192.168.199.1"} for i in range(21)]},
     "HostRoutesExhausted", 400, "Unable to complete operation for s1. The number of host routes exceeds the "
                                 "limit 20."),
])
def test_subnet_rules(extra: dict, error: str, status: int, message: str) -> None:
    expect(error, status, message, build_subnet, "s1", subnet_attrs(**extra), [])


def test_limits_are_inclusive() -> None:
    ok = build_subnet("s1", subnet_attrs(dns_nameservers=[f"10.0.0.{i}" for i in range(5)], host_routes=[
        {"destination": f"10.{i}.0.0/16", "nexthop": "192.168.199.1"} for i in range(20)]), [])
    assert len(ok.dns_nameservers) == 5 and len(ok.host_routes) == 20


def test_overlap_with_a_sibling_subnet() -> None:
    first = build_subnet("s1", subnet_attrs(), [])
    expect("InvalidInput", 400, f"Invalid input for operation: Requested subnet with cidr: 192.168.199.128/25 for "
                                f"network: {NET} overlaps with another subnet.",
           build_subnet, "s2", subnet_attrs(cidr="192.168.199.128/25"), [first])
    assert build_subnet("s2", subnet_attrs(cidr="192.168.200.0/24"), [first]).cidr == "192.168.200.0/24"


def test_update_rechecks() -> None:
    subnet = build_subnet("s1", subnet_attrs(), [])
    moved = updated_subnet(subnet, {"gateway_ip": "192.168.199.254",
                                    "allocation_pools": [{"start": "192.168.199.2", "end": "192.168.199.253"}]})
    assert moved.gateway_ip == "192.168.199.254"
    expect("GatewayConflictWithAllocationPools", 409, None, updated_subnet, subnet, {"gateway_ip": "192.168.199.9"})
