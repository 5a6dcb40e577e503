# L3 agent scheduling on SQLite and PostgreSQL: chosen at the first interface, least loaded, moved from a dead
# agent by the survivors' heartbeats, manual add/remove with Neutron's errors, every move in the change feed.
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from registry_support import SEED_NETWORK, expect, open_registry, seed_subnet

from provnet.model.resources import L3_AGENT_TYPE, OVS_AGENT_TYPE

DOWN = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def world(db_url: str):
    clock = Clock()
    reg = open_registry(db_url, agent_down_time=DOWN, clock=clock)
    net = reg.create_network(SEED_NETWORK)
    subnet = reg.create_subnet(seed_subnet(net.id))
    yield reg, clock, net, subnet
    reg.close()


def _l3(reg, host: str):
    return reg.report_agent_state(host, L3_AGENT_TYPE, "provnet-l3-agent", {"routers": 0})


def _router_changes(reg, after: int) -> list[str]:
    return [c.id for c in reg.changes_since(after).changes if c.kind == "router"]


def test_first_interface_schedules_to_the_least_loaded_alive_agent(world) -> None:
    reg, clock, net, subnet = world
    a, b = _l3(reg, "host-a"), _l3(reg, "host-b")
    reg.report_agent_state("host-c", OVS_AGENT_TYPE, "provnet-agent", {})  # not an L3 agent: never chosen
    r1 = reg.create_router({"name": "r1"})
    assert reg.list_l3_agents_hosting_router(r1.id) == []  # no interface yet: not scheduled
    before = reg.revision()
    reg.add_router_interface(r1.id, subnet_id=subnet.id)
    [host] = reg.list_l3_agents_hosting_router(r1.id)
    assert host.id == a.id  # equal load: by host name
    assert r1.id in _router_changes(reg, before)
    # a second router on another network goes to the other, emptier agent
    net2 = reg.create_network({"name": "n2"})
    s2 = reg.create_subnet({"network_id": net2.id, "ip_version": 4, "cidr": "10.9.0.0/24"})
    r2 = reg.create_router({"name": "r2"})
    reg.add_router_interface(r2.id, subnet_id=s2.id)
    assert [x.id for x in reg.list_l3_agents_hosting_router(r2.id)] == [b.id]
    assert [r.id for r in reg.list_routers_on_l3_agent(a.id)] == [r1.id]
    assert [r.id for r in reg.list_routers_on_l3_agent(b.id)] == [r2.id]


def test_router_moves_when_its_agent_is_dead_for_agent_down_time(world) -> None:
    reg, clock, net, subnet = world
    a, b = _l3(reg, "host-a"), _l3(reg, "host-b")
    router = reg.create_router({"name": "r1"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    assert reg.list_l3_agents_hosting_router(router.id)[0].id == a.id
    clock.advance(DOWN)  # exactly agent_down_time: still alive (Neutron's rule is "older than")
    _l3(reg, "host-b")
    assert reg.list_l3_agents_hosting_router(router.id)[0].id == a.id
    clock.advance(1)
    before = reg.revision()
    _l3(reg, "host-b")  # the survivor's heartbeat moves it
    assert reg.list_l3_agents_hosting_router(router.id)[0].id == b.id
    assert router.id in _router_changes(reg, before)
    # the dead agent comes back: the router stays where it is now
    _l3(reg, "host-a")
    assert reg.list_l3_agents_hosting_router(router.id)[0].id == b.id


def test_no_alive_agent_leaves_it_unhosted_until_one_reports(world) -> None:
    reg, clock, net, subnet = world
    router = reg.create_router({"name": "r1"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    assert reg.list_l3_agents_hosting_router(router.id) == []
    before = reg.revision()
    a = _l3(reg, "host-a")
    assert reg.list_l3_agents_hosting_router(router.id)[0].id == a.id
    assert router.id in _router_changes(reg, before)


def test_a_bare_heartbeat_changes_nothing(world) -> None:
    reg, clock, net, subnet = world
    _l3(reg, "host-a")
    router = reg.create_router({"name": "r1"})
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    before = reg.revision()
    _l3(reg, "host-a")
    assert reg.revision() == before


def test_manual_add_and_remove_with_neutrons_errors(world) -> None:
    reg, clock, net, subnet = world
    a, b = _l3(reg, "host-a"), _l3(reg, "host-b")
    ovs = reg.report_agent_state("host-a", OVS_AGENT_TYPE, "provnet-agent", {})
    router = reg.create_router({"name": "r1"})
    before = reg.revision()
    reg.add_router_to_l3_agent(b.id, router.id)
    assert [x.id for x in reg.list_l3_agents_hosting_router(router.id)] == [b.id]
    assert router.id in _router_changes(reg, before)
    reg.add_router_to_l3_agent(b.id, router.id)  # again: nothing to do
    expect("RouterHostedByL3Agent", 409,
           f"The router {router.id} has been already hosted by the L3 Agent {b.id}.",
           reg.add_router_to_l3_agent, a.id, router.id)
    expect("InvalidL3Agent", 404, f"Agent {ovs.id} is not a L3 Agent or has been disabled",
           reg.add_router_to_l3_agent, ovs.id, router.id)
    expect("AgentNotFound", 404, "Agent nope could not be found.", reg.add_router_to_l3_agent, "nope", router.id)
    expect("RouterNotFound", 404, "Router nope could not be found.", reg.add_router_to_l3_agent, a.id, "nope")
    expect("RouterNotHostedByL3Agent", 409, f"The router {router.id} is not hosted by L3 agent {a.id}.",
           reg.remove_router_from_l3_agent, a.id, router.id)
    reg.remove_router_from_l3_agent(b.id, router.id)
    assert reg.list_l3_agents_hosting_router(router.id) == []
    reg.update_agent(a.id, {"admin_state_up": False})
    expect("InvalidL3Agent", 404, None, reg.add_router_to_l3_agent, a.id, router.id)
    # the interface schedules it to the only enabled agent
    reg.add_router_interface(router.id, subnet_id=subnet.id)
    assert [x.id for x in reg.list_l3_agents_hosting_router(router.id)] == [b.id]


def test_deleting_router_or_agent_drops_the_binding(world) -> None:
    reg, clock, net, subnet = world
    a = _l3(reg, "host-a")
    router = reg.create_router({"name": "r1"})
    reg.add_router_to_l3_agent(a.id, router.id)
    reg.delete_router(router.id)
    assert reg.list_routers_on_l3_agent(a.id) == []
    router = reg.create_router({"name": "r2"})
    reg.add_router_to_l3_agent(a.id, router.id)
    before = reg.revision()
    reg.delete_agent(a.id)
    assert reg.list_l3_agents_hosting_router(router.id) == []
    assert router.id in _router_changes(reg, before)
