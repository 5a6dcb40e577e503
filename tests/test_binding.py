# Pure tests of ML2-style binding: each refusal reason, the success details, and the order of the checks.
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from provnet.binding import Binding, bind_port, needs_binding
from provnet.model.resources import OVS_AGENT_TYPE, Agent, Network, Port

NOW = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)
FLAT = Network(id="net-1", name="phy_net", network_type="flat", physical_network="physnet1")


def agent(host: str = "compute1", age: float | None = 5, mappings: dict | None = None, **kw) -> Agent:
    return Agent(id=kw.pop("id", f"agent-{host}"), host=host,
                 configurations={"bridge_mappings": {"physnet1": "br-phy"} if mappings is None else mappings,
                                 **kw.pop("configurations", {})},
                 heartbeat_timestamp=None if age is None else NOW - timedelta(seconds=age), **kw)


def port(host: str = "compute1", **kw) -> Port:
    return Port(id="port-1", network_id="net-1", mac_address="fa:16:3e:00:00:01", binding_host_id=host, **kw)


def bind(p: Port, net: Network, agents: list[Agent], down: float = 75, interval: float = 30) -> Binding:
    return bind_port(p, net, agents, agent_down_time=down, report_interval=interval, now=NOW)


def test_flat_port_binds_to_alive_agent_with_mapping():
    b = bind(port(), FLAT, [agent()])
    assert b.vif_type == "ovs" and b.bound
    assert b.status == "DOWN"  # as ML2: ACTIVE once the host's L2 agent sees the device (update_port_status)
    assert b.failure_reason is None
    assert b.agent_id == "agent-compute1"
    assert b.vif_details == {"connectivity": "l2", "port_filter": True, "ovs_hybrid_plug": False,
                             "datapath_type": "system", "bridge_name": "br-int",
                             "bound_drivers": {"0": "openvswitch"}}


def test_vif_details_follow_agent_configuration():
    a = agent(configurations={"ovs_hybrid_plug": True, "integration_bridge": "br-x", "datapath_type": "netdev"})
    d = bind(port(), FLAT, [a]).vif_details
    assert (d["ovs_hybrid_plug"], d["bridge_name"], d["datapath_type"]) == (True, "br-x", "netdev")


def test_admin_down_port_binds_but_stays_down():
    b = bind(port(admin_state_up=False), FLAT, [agent()])
    assert (b.vif_type, b.status) == ("ovs", "DOWN")


def test_no_agent_on_host():
    b = bind(port("compute9"), FLAT, [agent("compute1")])
    assert (b.vif_type, b.status) == ("binding_failed", "DOWN")
    assert b.failure_reason == "no agent on host compute9"
    assert b.vif_details == {"failure_reason": "no agent on host compute9"}


def test_agent_of_other_type_does_not_count():
    dhcp = agent(agent_type="DHCP agent")
    assert bind(port(), FLAT, [dhcp]).failure_reason == "no agent on host compute1"


def test_dead_agent_reason_has_the_numbers():
    b = bind(port(), FLAT, [agent(age=92)])
    assert b.vif_type == "binding_failed"
    assert b.failure_reason == ("agent on host compute1 is dead: last heartbeat 92 s ago, "
                                "agent_down_time 75 s, report_interval 30 s")


def test_small_agent_down_time_kills_a_live_agent():
    # the seed's trap: agent_down_time below report_interval makes a reporting agent look dead between beats
    b = bind(port(), FLAT, [agent(age=20)], down=10, interval=30)
    assert b.failure_reason == ("agent on host compute1 is dead: last heartbeat 20 s ago, "
                                "agent_down_time 10 s, report_interval 30 s")


def test_heartbeat_exactly_at_down_time_is_alive():
    assert bind(port(), FLAT, [agent(age=75)]).bound


def test_agent_that_never_reported():
    b = bind(port(), FLAT, [agent(age=None)])
    assert b.failure_reason == ("agent on host compute1 is dead: no heartbeat ever, "
                                "agent_down_time 75 s, report_interval 30 s")


def test_missing_bridge_mapping_names_the_fix():
    b = bind(port(), FLAT, [agent(mappings={"public": "br-ex"})])
    assert b.vif_type == "binding_failed"
    assert b.failure_reason == ('physical network physnet1 is not in the agent\'s bridge_mappings '
                                '{"public": "br-ex"}: set [ovs] bridge_mappings = physnet1:<bridge> on host compute1')


def test_empty_bridge_mappings():
    b = bind(port(), FLAT, [agent(mappings={})])
    assert b.failure_reason == ("physical network physnet1 is not in the agent's bridge_mappings {}: "
                                "set [ovs] bridge_mappings = physnet1:<bridge> on host compute1")


def test_vlan_needs_mapping_too():
    vlan = replace(FLAT, network_type="vlan", segmentation_id=100, physical_network="physnet2")
    assert not bind(port(), vlan, [agent()]).bound
    assert bind(port(), vlan, [agent(mappings={"physnet2": "br-v"})]).bound


def test_unsupported_segment_type():
    vxlan = replace(FLAT, network_type="vxlan", physical_network=None, segmentation_id=7)
    b = bind(port(), vxlan, [agent()])
    assert b.failure_reason == ("network type vxlan is not supported by the agent on host compute1: it supports "
                                "local, flat, vlan (add vxlan to [agent] tunnel_types there)")


def test_tunnel_type_reported_by_agent_binds_without_mapping():
    vxlan = replace(FLAT, network_type="vxlan", physical_network=None, segmentation_id=7)
    assert bind(port(), vxlan, [agent(mappings={}, configurations={"tunnel_types": ["vxlan"]})]).bound


@pytest.mark.parametrize("network_type", ["local", None])
def test_local_and_untyped_networks_need_no_mapping(network_type):
    net = replace(FLAT, network_type=network_type, physical_network=None)
    assert bind(port(), net, [agent(mappings={})]).bound


def test_disabled_agent_refuses():
    b = bind(port(), FLAT, [agent(admin_state_up=False)])
    assert b.vif_type == "binding_failed"
    assert b.failure_reason == ("agent on host compute1 is disabled (admin_state_up False): enable it with "
                                "`openstack network agent set --enable agent-compute1`")


def test_non_normal_vnic_type_refused():
    b = bind(port(binding_vnic_type="direct"), FLAT, [agent()])
    assert b.failure_reason.startswith("vnic_type direct is not supported by the openvswitch driver on host compute1")


def test_no_host_means_unbound_not_failed():
    b = bind(port(host=""), FLAT, [agent()])
    assert (b.vif_type, b.failure_reason, b.status) == ("unbound", None, "DOWN")


def test_second_agent_on_host_that_can_bind_wins():
    dead = agent(id="a-dead", age=500)
    alive = agent(id="a-alive")
    assert bind(port(), FLAT, [dead, alive]).agent_id == "a-alive"


def test_agents_on_other_hosts_are_ignored():
    other = agent("compute2")
    assert bind(port("compute1"), FLAT, [other, agent("compute1", mappings={})]).failure_reason.startswith(
        "physical network physnet1 is not in")


def test_dead_is_checked_before_mappings():
    # a dead agent with stale mappings: the operator must first revive it
    assert "is dead" in bind(port(), FLAT, [agent(age=100, mappings={})]).failure_reason


@pytest.mark.parametrize("vif_type,expected", [("unbound", True), ("binding_failed", True), ("ovs", False)])
def test_needs_binding(vif_type, expected):
    assert needs_binding(port(binding_vif_type=vif_type)) is expected
    assert needs_binding(port(host="", binding_vif_type=vif_type)) is False


def test_agent_type_constant_is_neutrons():
    assert OVS_AGENT_TYPE == "Open vSwitch agent"
