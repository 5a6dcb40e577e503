# Neutron's L3 agent scheduler API through the real `openstack` CLI and openstacksdk's paths, on both stores.
from __future__ import annotations

from test_openstack_cli import osc  # noqa: F401 - the fixture

from provnet.model.resources import L3_AGENT_TYPE


def test_openstack_network_agent_add_router_l3(osc) -> None:  # noqa: F811
    run, client, registry = osc
    a = registry.report_agent_state("net-a", L3_AGENT_TYPE, "provnet-l3-agent", {"routers": 0})
    b = registry.report_agent_state("net-b", L3_AGENT_TYPE, "provnet-l3-agent", {"routers": 0})
    run("router", "create", "r1")
    run("network", "agent", "add", "router", "--l3", b.id, "r1")
    hosting = run.js("network", "agent", "list", "--router", "r1")
    assert [x["ID"] for x in hosting] == [b.id]
    routers = run.js("router", "list", "--agent", b.id)
    assert [r["Name"] for r in routers] == ["r1"]
    # hosted elsewhere: a 409 (openstacksdk does not check this call's status, as against Neutron), nothing moves
    run("network", "agent", "add", "router", "--l3", a.id, "r1")
    assert [x["ID"] for x in run.js("network", "agent", "list", "--router", "r1")] == [b.id]
    status, body = client.call("POST", f"/v2.0/agents/{a.id}/l3-routers", {"router_id": routers[0]["ID"]})
    assert status == 409 and body["NeutronError"]["type"] == "RouterHostedByL3Agent"
    run("network", "agent", "remove", "router", "--l3", b.id, "r1")
    assert run.js("network", "agent", "list", "--router", "r1") == []


def test_api_paths_and_bad_bodies(osc) -> None:  # noqa: F811
    run, client, registry = osc
    a = registry.report_agent_state("net-a", L3_AGENT_TYPE, "provnet-l3-agent", {})
    router = registry.create_router({"name": "r1"})
    status, body = client.call("POST", f"/v2.0/agents/{a.id}/l3-routers", {"router_id": router.id})
    assert status == 201
    status, body = client.call("GET", f"/v2.0/agents/{a.id}/l3-routers")
    assert status == 200 and [r["id"] for r in body["routers"]] == [router.id]
    status, body = client.call("GET", f"/v2.0/routers/{router.id}/l3-agents")
    assert status == 200 and [x["id"] for x in body["agents"]] == [a.id] and body["agents"][0]["alive"] is True
    for bad in ({}, {"router_id": 5}, {"router_id": router.id, "x": 1}, [router.id]):
        status, body = client.call("POST", f"/v2.0/agents/{a.id}/l3-routers", bad)
        assert status == 400 and body["NeutronError"]["type"] == "HTTPBadRequest", bad
    status, body = client.call("DELETE", f"/v2.0/agents/{a.id}/l3-routers/nope")
    assert status == 404 and body["NeutronError"]["type"] == "RouterNotFound"
    status, _ = client.call("DELETE", f"/v2.0/agents/{a.id}/l3-routers/{router.id}")
    assert status == 204
    status, body = client.call("GET", "/v2.0/agents/nope/l3-routers")
    assert status == 404 and body["NeutronError"]["type"] == "AgentNotFound"
