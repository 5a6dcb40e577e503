# Network mode's pure parts in the L3 agent: what a network's metadata namespace holds, the proxy's command line,
# which changes of the feed concern this host, the namespace names it owns, and the localport rules.
from __future__ import annotations

import pytest

from provnet.agents.l3 import default_proxy_argv
from provnet.agents.metadata_ns import MetadataNetworks, NetworkState, PlanError, plan_network, proxy_bind
from provnet.dataplane import localport, metadata_ns
from provnet.model.resources import METADATA_PORT_OWNER, FixedIP, Network, Port, Subnet, metadata_device_id
from provnet.registry.changes import Change

NET = "5a0f0c7e-0000-4000-8000-000000000001"
V4 = Subnet(id="s4", network_id=NET, cidr="172.16.1.0/24", ip_version=4)
V6 = Subnet(id="s6", network_id=NET, cidr="2001:db8::/64", ip_version=6)


def port(pid: str, device_id: str, ips=(("s4", "172.16.1.102"),), mac: str = "FA:16:3E:00:00:01") -> Port:
    return Port(id=pid, network_id=NET, mac_address=mac, device_owner=METADATA_PORT_OWNER, device_id=device_id,
                fixed_ips=[FixedIP(s, ip) for s, ip in ips])


def state(ports, subnets=(V4,), vms: int = 1, network_type: str = "flat", physnet: str | None = "physnet1"):
    network = Network(id=NET, network_type=network_type, physical_network=physnet)
    return NetworkState(network, tuple(ports), {s.id: s for s in subnets}, vms)


def test_the_device_holds_the_ports_mac_its_ipv4_addresses_and_the_metadata_address():
    want = plan_network(state([port("p1", metadata_device_id(NET))]), {"physnet1": "br-phy"})
    assert want == metadata_ns.MetadataDevice("p1", "fa:16:3e:00:00:01", ("172.16.1.102/24", "169.254.169.254/32"),
                                              False, "br-phy")
    assert want.device == "ns-p1" and proxy_bind(want) == "169.254.169.254"


def test_an_ipv6_subnet_adds_the_link_local_metadata_address_scoped_to_the_device():
    p = port("0123456789abcdef", metadata_device_id(NET), ips=(("s4", "172.16.1.102"), ("s6", "2001:db8::5")))
    want = plan_network(state([p], (V4, V6)), {"physnet1": "br-phy"})
    assert want.ipv6 and want.addresses == ("172.16.1.102/24", "169.254.169.254/32")  # no global IPv6 on it
    assert proxy_bind(want) == "169.254.169.254,fe80::a9fe:a9fe%ns-0123456789a"
    no_v6 = plan_network(state([p], (V4, V6)), {"physnet1": "br-phy"}, ipv6=False)  # booted with ipv6.disable=1
    assert not no_v6.ipv6 and proxy_bind(no_v6) == "169.254.169.254"


def test_nothing_without_a_vm_here_or_without_a_metadata_port():
    assert plan_network(state([port("p1", metadata_device_id(NET))], vms=0), {"physnet1": "br-phy"}) is None
    assert plan_network(state([]), {"physnet1": "br-phy"}) is None


def test_only_the_port_named_after_the_network_is_its_metadata_port():
    """A port a user gave the owner network:distributed (another device_id) makes no host answer for its address."""
    stray = port("a-stray", "someone-else", mac="fa:16:3e:00:00:aa")
    ports = [stray, port("z-real", metadata_device_id(NET))]
    assert plan_network(state(ports), {"physnet1": "br-phy"}).port_id == "z-real"
    assert plan_network(state([stray]), {"physnet1": "br-phy"}) is None


@pytest.mark.parametrize(("kwargs", "mappings", "message"), [
    ({}, {}, "physical network physnet1 has no bridge on this host"),
    ({"network_type": "vlan"}, {"physnet1": "br-phy"}, "VLAN network"),
    ({"network_type": "vxlan", "physnet": None}, {"physnet1": "br-phy"}, "vxlan a provider network"),
])
def test_what_cannot_be_built_here_says_why(kwargs, mappings, message):
    with pytest.raises(PlanError, match=message):
        plan_network(state([port("p1", metadata_device_id(NET))], **kwargs), mappings)


def test_the_proxy_command_lines_of_a_router_and_of_a_network(tmp_path):
    argv = default_proxy_argv("/var/lib/provnet", "/run/provnet/mp.sock", 9697, str(tmp_path))
    router = argv("r1")
    assert router[router.index("--router-id") + 1] == "r1" and router[router.index("--port") + 1] == "9697"
    assert "--bind" not in router and "--network-id" not in router
    network = argv(NET, network=True, bind="169.254.169.254")
    assert network[network.index("--network-id") + 1] == NET and network[network.index("--port") + 1] == "80"
    assert network[network.index("--bind") + 1] == "169.254.169.254" and "--router-id" not in network


def test_only_changes_that_may_concern_this_host_mark_a_network():
    nets = MetadataNetworks(None, None, None, host="h1", bridge_mappings=dict, suffix="", proxy_argv=lambda n, b: [],
                            kick=lambda: None, report_soon=lambda: None)
    nets.note(Change(1, "port", "p", "create", "other-net", devices=("vm-1",)))  # router mode's network: no read
    assert nets.take() == []
    nets.note(Change(2, "port", "p", "create", NET, devices=(metadata_device_id(NET),)))  # its metadata port
    assert nets.take() == [NET]
    nets.known.add("known")
    nets.note(Change(3, "port", "p", "update", "known", devices=("vm-2",)))  # a VM bound, maybe here
    nets.note(Change(4, "subnet", "s", "create", "known"))
    nets.note(Change(5, "router", "r", "update", "known"))  # routers are not this part's
    nets.note(Change(6, "agent", "a", "update", None))
    assert nets.take() == ["known"]


@pytest.mark.parametrize(("name", "suffix", "network"), [
    (f"provnet-meta-{NET}", "", NET), (f"provnet-meta-{NET}@h1", "@h1", NET),
    (f"provnet-meta-{NET}@h2", "@h1", None),  # another agent's on this machine
    (f"provnet-meta-{NET}@h1", "", None),  # not this agent's (it has no suffix)
    (f"qrouter-{NET}", "", None), ("provnet-meta-", "", None),
])
def test_the_namespaces_an_agent_owns(name, suffix, network):
    assert metadata_ns.network_of(name, suffix) == network


def test_localport_rules_keep_the_device_off_the_uplink_and_its_mac_off_the_segment():
    rules = localport.rules([("tapabc", "FA:16:3E:00:00:01"), ("tapabc", "fa:16:3e:00:00:01")])
    assert rules == ["-i tapabc -o ! tap+ -j DROP", "-d fa:16:3e:00:00:01 -i ! tap+ -j DROP"]
    text = localport.restore_text(rules)
    assert text.splitlines() == ["*filter", ":provnet-meta RETURN", "-A provnet-meta -i tapabc -o ! tap+ -j DROP",
                                 "-A provnet-meta -d fa:16:3e:00:00:01 -i ! tap+ -j DROP", "COMMIT"]
    assert localport.restore_text([]).splitlines() == ["*filter", ":provnet-meta RETURN", "COMMIT"]
