# SqlRegistry agents (heartbeats, binding and re-binding of failed ports) and instances (Nova's side, passwords).
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from registry_support import SEED_NETWORK, expect, seed_subnet

from provnet.model.resources import OVS_AGENT_TYPE
from provnet.registry import schema
from provnet.registry.sql import SqlRegistry

MAPPED = {"bridge_mappings": {"physnet1": "br-phy"}}


def test_report_agent_state_upserts(reg: SqlRegistry) -> None:
    first = reg.report_agent_state("compute1", OVS_AGENT_TYPE, "neutron-openvswitch-agent", MAPPED)
    assert first.is_alive(75) and first.configurations == MAPPED and first.started_at is not None
    second = reg.report_agent_state("compute1", OVS_AGENT_TYPE, "neutron-openvswitch-agent",
                                    {"bridge_mappings": {"physnet1": "br-ex"}})
    assert second.id == first.id and second.heartbeat_timestamp >= first.heartbeat_timestamp
    assert reg.get_agent(first.id).configurations == {"bridge_mappings": {"physnet1": "br-ex"}}
    other = reg.report_agent_state("compute1", "Metadata agent", "provnet-metadata-agent", {})
    assert other.id != first.id and len(reg.list_agents()) == 2
    assert [a.id for a in reg.list_agents({"agent_type": [OVS_AGENT_TYPE], "host": ["compute1"]})] == [first.id]
    expect("InvalidInput", 400, "Invalid input for operation: host must be a non-empty string of at most 255 "
                                "characters.", reg.report_agent_state, "", OVS_AGENT_TYPE, "b", {})
    disabled = reg.update_agent(first.id, {"admin_state_up": "False"})
    assert disabled.admin_state_up is False
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute host", reg.update_agent, first.id, {"host": "x"})
    expect("HTTPBadRequest", 400, "Invalid input for admin_state_up. Reason: 'sometimes' cannot be converted to "
                                  "boolean.", reg.update_agent, first.id, {"admin_state_up": "sometimes"})
    expect("AgentNotFound", 404, "Agent nope could not be found.", reg.update_agent, "nope", {"admin_state_up": True})
    reg.delete_agent(other.id)
    expect("AgentNotFound", 404, f"Agent {other.id} could not be found.", reg.get_agent, other.id)


def _age_heartbeat(reg: SqlRegistry, agent_id: str, seconds: float) -> None:
    """Make an agent's last heartbeat `seconds` old (the test's only way to let time pass)."""
    with reg.engine.begin() as conn:
        conn.execute(sa.update(schema.agents).where(schema.agents.c.id == agent_id).values(
            heartbeat_timestamp=datetime.now(UTC) - timedelta(seconds=seconds)))


def test_alive_filter(reg: SqlRegistry) -> None:
    up = reg.report_agent_state("h1", OVS_AGENT_TYPE, "b", MAPPED)
    down = reg.report_agent_state("h2", OVS_AGENT_TYPE, "b", MAPPED)
    _age_heartbeat(reg, down.id, 300)
    assert [a.id for a in reg.list_agents({"alive": ["True"]})] == [up.id]
    assert [a.id for a in reg.list_agents({"alive": "false"})] == [down.id]
    expect("HTTPBadRequest", 400, "Invalid input for alive. Reason: 'x' cannot be converted to boolean.",
           reg.list_agents, {"alive": ["x"]})


def test_port_binding_fails_then_rebinds_when_the_agent_reports(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    reg.create_subnet(seed_subnet(net.id))
    port = reg.create_port({"network_id": net.id, "binding:host_id": "compute1"})
    assert port.binding_vif_type == "binding_failed" and port.status == "DOWN"
    assert "no agent on host compute1" in port.binding_failure_reason
    assert port.to_api()["binding:failure_reason"] == port.binding_failure_reason
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "neutron-openvswitch-agent", {"bridge_mappings": {}})
    still = reg.get_port(port.id)
    assert still.binding_vif_type == "binding_failed" and "bridge_mappings" in still.binding_failure_reason
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "neutron-openvswitch-agent", MAPPED)
    bound = reg.get_port(port.id)
    assert (bound.binding_vif_type, bound.status, bound.binding_failure_reason) == ("ovs", "ACTIVE", None)
    assert bound.binding_vif_details["bridge_name"] == "br-int"


def test_binding_on_create_and_host_change(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "neutron-openvswitch-agent", MAPPED)
    port = reg.create_port({"network_id": net.id, "binding:host_id": "compute1"})
    assert (port.binding_vif_type, port.status) == ("ovs", "ACTIVE")
    assert reg.update_port(port.id, {"admin_state_up": False}).status == "DOWN"
    assert reg.update_port(port.id, {"admin_state_up": True}).status == "ACTIVE"
    moved = reg.update_port(port.id, {"binding:host_id": "compute2"})
    assert moved.binding_vif_type == "binding_failed" and "compute2" in moved.binding_failure_reason
    cleared = reg.update_port(port.id, {"binding:host_id": ""})
    assert (cleared.binding_vif_type, cleared.binding_failure_reason, cleared.status) == ("unbound", None, "DOWN")
    dead = reg.report_agent_state("compute3", OVS_AGENT_TYPE, "neutron-openvswitch-agent", MAPPED)
    _age_heartbeat(reg, dead.id, 200)
    refused = reg.update_port(port.id, {"binding:host_id": "compute3"})
    assert refused.binding_vif_type == "binding_failed" and "dead" in refused.binding_failure_reason


def test_instances(reg: SqlRegistry) -> None:
    user_data = b"#cloud-config\nhostname: web\n"
    inst = reg.create_instance({"name": "Web Server 1", "project_id": "p1",
                                "user_data": base64.b64encode(user_data).decode(),
                                "key_pairs": [{"name": "k1", "data": "ssh-ed25519 AAAA k1"}],
                                "metadata": {"role": "web"}, "vendor_data": {"v": [1, 2]}})
    got = reg.get_instance(inst.id)
    assert got == inst
    assert (got.hostname, got.user_data, got.metadata, got.vendor_data) == \
        ("web-server-1", user_data, {"role": "web"}, {"v": [1, 2]})
    assert got.key_pairs[0].data == "ssh-ed25519 AAAA k1" and got.key_pairs[0].type == "ssh"
    given = reg.create_instance({"id": "3f0e4d5c-1111-4a0b-9b4b-3f0f5b0a6c11", "hostname": "h"})
    assert given.id == "3f0e4d5c-1111-4a0b-9b4b-3f0f5b0a6c11" and given.hostname == "h"
    expect("InstanceExists", 409, f"Instance {given.id} already exists.", reg.create_instance, {"id": given.id})
    updated = reg.update_instance(inst.id, {"metadata": {"role": "db"}, "user_data": None})
    assert updated.metadata == {"role": "db"} and updated.user_data is None
    assert reg.update_instance(inst.id, {"name": "DB 2", "hostname": ""}).hostname == "db-2"
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute launch_index", reg.update_instance, inst.id,
           {"launch_index": 2})
    assert [i.id for i in reg.list_instances({"project_id": ["p1"]})] == [inst.id]
    reg.delete_instance(given.id)
    expect("InstanceNotFound", 404, f"Instance {given.id} could not be found.", reg.get_instance, given.id)
    before = reg.revision()
    expect("HTTPBadRequest", 400, None, reg.create_instance,
           {"user_data": base64.b64encode(b"x" * 70000).decode()})
    assert reg.revision() == before and len(reg.list_instances()) == 1


def test_instance_password_is_set_once(reg: SqlRegistry) -> None:
    inst = reg.create_instance({"name": "vm"})
    assert reg.get_instance_password(inst.id) is None
    reg.set_instance_password(inst.id, "c2VjcmV0")
    assert reg.get_instance_password(inst.id) == "c2VjcmV0"
    expect("Conflict", 409, f"The password of instance {inst.id} is already set.", reg.set_instance_password,
           inst.id, "other")
    assert reg.get_instance_password(inst.id) == "c2VjcmV0"
    expect("InstanceNotFound", 404, None, reg.set_instance_password, "nope", "x")
    assert reg.get_instance(inst.id).to_api()["has_password"] is True


def test_bare_heartbeat_keeps_the_revision_but_real_changes_bump_it(reg: SqlRegistry) -> None:
    first = reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", MAPPED)  # a new agent: bumps
    rev = reg.revision()
    again = reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", dict(MAPPED))  # same everything: heartbeat
    assert reg.revision() == rev and again.heartbeat_timestamp >= first.heartbeat_timestamp
    assert reg.get_agent(first.id).heartbeat_timestamp == again.heartbeat_timestamp  # the heartbeat is stored
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", {"bridge_mappings": {"physnet1": "br-ex"}})
    assert reg.revision() == rev + 1  # changed mappings
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b2", {"bridge_mappings": {"physnet1": "br-ex"}})
    assert reg.revision() == rev + 2  # changed binary
    reg.report_agent_state("compute2", OVS_AGENT_TYPE, "b", MAPPED)
    assert reg.revision() == rev + 3  # another new agent
    _age_heartbeat(reg, first.id, 300)
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b2", {"bridge_mappings": {"physnet1": "br-ex"}})
    assert reg.revision() == rev + 4  # a dead agent coming back is a change (it may bind ports again)


def test_heartbeat_that_rebinds_a_port_bumps_the_revision(reg: SqlRegistry) -> None:
    net = reg.create_network(SEED_NETWORK)
    reg.create_subnet(seed_subnet(net.id))
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", {"bridge_mappings": {}})
    port = reg.create_port({"network_id": net.id, "binding:host_id": "compute1"})
    assert port.binding_vif_type == "binding_failed"
    rev = reg.revision()
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", {"bridge_mappings": {}})  # still fails: nothing new
    assert reg.revision() == rev and reg.get_port(port.id).binding_vif_type == "binding_failed"
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", MAPPED)  # mappings changed and the port re-bound
    assert reg.revision() == rev + 1 and reg.get_port(port.id).binding_vif_type == "ovs"
    reg.update_agent(reg.list_agents()[0].id, {"admin_state_up": False})
    other = reg.create_port({"network_id": net.id, "binding:host_id": "compute1"})
    assert other.binding_vif_type == "binding_failed"
    reg.update_agent(reg.list_agents()[0].id, {"admin_state_up": True})
    rev = reg.revision()
    reg.report_agent_state("compute1", OVS_AGENT_TYPE, "b", MAPPED)  # same report, but it re-binds `other`
    assert reg.revision() == rev + 1 and reg.get_port(other.id).binding_vif_type == "ovs"
