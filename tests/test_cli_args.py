# The neutron CLI argument forms as pure functions: pass-through extras, key=value specs, bad input.
from __future__ import annotations

import pytest

from provnet.cli.neutron_args import (
    ArgError,
    merge_body,
    parse_allocation_pool,
    parse_fixed_ip,
    parse_host_route,
    parse_interface,
    parse_property,
    split_args,
    take_positionals,
)


def test_seed_net_create_extras_after_double_dash():
    # click drops the `--` itself; what reaches split_args is the rest, in order
    pos, extras = split_args(["phy_net", "--router:external=True", "--provider:network_type", "flat",
                              "--provider:physical_network", "physnet1"])
    assert pos == ["phy_net"]
    assert extras == {"router:external": "True", "provider:network_type": "flat",
                      "provider:physical_network": "physnet1"}


def test_seed_subnet_create_extras_interleaved_with_positionals():
    pos, extras = split_args(["phy_net", "172.16.1.101/24", "--enable_dhcp=False"])
    assert pos == ["phy_net", "172.16.1.101/24"]
    assert extras == {"enable_dhcp": "False"}


def test_literal_double_dash_is_skipped():
    assert split_args(["--", "--shared"]) == ([], {"shared": True})


def test_bare_flag_is_true_and_boolean_keys_do_not_swallow_positionals():
    assert split_args(["--router:external", "phy_net"]) == (["phy_net"], {"router:external": True})
    assert split_args(["--router:external", "False", "phy_net"]) == (["phy_net"], {"router:external": "False"})
    assert split_args(["--foo"]) == ([], {"foo": True})


def test_value_option_takes_exactly_one_value():
    assert split_args(["--provider:network_type", "vlan", "net1"]) == (
        ["net1"], {"provider:network_type": "vlan"})


def test_dashes_become_underscores_like_argparse_dest():
    assert split_args(["--dns-nameservers", "8.8.8.8"])[1] == {"dns_nameservers": "8.8.8.8"}


def test_type_conversions_and_lists():
    _, extras = split_args(["--provider:segmentation_id", "type=int", "100",
                            "--shared", "type=bool", "true",
                            "--dns_nameservers", "list=true", "8.8.8.8", "1.1.1.1",
                            "--host_routes", "type=dict", "list=true", "destination=10.0.0.0/8,nexthop=1.1.1.1",
                            "--binding:profile", "type=dict", '{"a": 1}',
                            "--allowed_address_pairs", "action=clear"])
    assert extras == {
        "provider:segmentation_id": 100,
        "shared": True,
        "dns_nameservers": ["8.8.8.8", "1.1.1.1"],
        "host_routes": [{"destination": "10.0.0.0/8", "nexthop": "1.1.1.1"}],
        "binding:profile": {"a": 1},
        "allowed_address_pairs": None,
    }


def test_negative_numbers_are_values():
    assert split_args(["--x", "-5"]) == ([], {"x": "-5"})


@pytest.mark.parametrize("tokens, message", [
    (["--a", "1", "--a", "2"], "given twice"),
    (["--a=1", "--a", "2"], "given twice"),
    (["--seg", "type=int", "ten"], "expected an integer"),
    (["--seg", "type=float", "1"], "unknown 'type=float'"),
    (["--seg", "type=int"], "missing value"),
    (["--x", "type=bool", "maybe"], "expected True or False"),
    (["--x", "action=append"], "only action=clear"),
    (["-x"], "no such option: -x"),
    (["--=1"], "bad option name"),
    (["--p", "type=dict", "{not json"], "bad JSON object"),
    (["--p", "type=dict", "[1]"], "expected a JSON object"),
    (["--p", "type=dict", "novalue"], "expected key=value"),
])
def test_bad_extras(tokens, message):
    with pytest.raises(ArgError, match=message):
        split_args(tokens)


def test_take_positionals():
    assert take_positionals(["a", "b"], ["NETWORK", "CIDR"]) == ["a", "b"]
    with pytest.raises(ArgError, match="missing argument CIDR"):
        take_positionals(["a"], ["NETWORK", "CIDR"])
    with pytest.raises(ArgError, match="missing argument NETWORK CIDR"):
        take_positionals([], ["NETWORK", "CIDR"])
    with pytest.raises(ArgError, match="unexpected extra argument"):
        take_positionals(["a", "b", "c"], ["NETWORK", "CIDR"])


def test_merge_body_refuses_the_same_attribute_twice():
    assert merge_body({"name": "a"}, {"shared": "True"}) == {"name": "a", "shared": "True"}
    with pytest.raises(ArgError, match="given twice: name"):
        merge_body({"name": "a"}, {"name": "b"})


def test_allocation_pool_and_host_route():
    assert parse_allocation_pool("start=172.16.1.102,end=172.16.1.126") == {
        "start": "172.16.1.102", "end": "172.16.1.126"}
    assert parse_host_route("destination=169.254.169.254/32,nexthop=172.16.1.2") == {
        "destination": "169.254.169.254/32", "nexthop": "172.16.1.2"}
    with pytest.raises(ArgError, match="missing end"):
        parse_allocation_pool("start=1.2.3.4")
    with pytest.raises(ArgError, match="unknown key 'stop'"):
        parse_allocation_pool("start=1.2.3.4,stop=1.2.3.5")
    with pytest.raises(ArgError, match="expected key=value"):
        parse_host_route("10.0.0.0/8 via 1.1.1.1")
    with pytest.raises(ArgError, match="given twice"):
        parse_host_route("destination=a,destination=b,nexthop=c")


@pytest.mark.parametrize("text, expected", [
    ("ip_address=172.16.1.103", {"ip_address": "172.16.1.103"}),
    ("subnet_id=s1,ip_address=172.16.1.103", {"subnet_id": "s1", "ip_address": "172.16.1.103"}),
    ("subnet=s1", {"subnet_id": "s1"}),
    ("ip-address=10.0.0.5", {"ip_address": "10.0.0.5"}),
])
def test_fixed_ip(text, expected):
    assert parse_fixed_ip(text) == expected


@pytest.mark.parametrize("text, message", [
    ("172.16.1.103", "expected key=value"),
    ("ip=172.16.1.103", "unknown key 'ip'"),
    ("ip_address=", "needs ip_address"),
    ("subnet=a,subnet_id=b", "not both"),
])
def test_bad_fixed_ip(text, message):
    with pytest.raises(ArgError, match=message):
        parse_fixed_ip(text)


def test_property_and_interface():
    assert parse_property("role=web=1,2") == ("role", "web=1,2")
    with pytest.raises(ArgError, match="KEY=VALUE"):
        parse_property("role")
    assert parse_interface("phy_subnet") == ("subnet", "phy_subnet")
    assert parse_interface("subnet=s") == ("subnet", "s")
    assert parse_interface("port=p") == ("port", "p")
    with pytest.raises(ArgError, match="port=PORT"):
        parse_interface("network=n")
