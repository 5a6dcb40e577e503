# The agent side of binding: the state reporter, what it reports, and agents via the API and `openstack`.
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from api_server import running_api
from cli_run import PROVNET
from conftest import need
from test_binding_api import OPENSTACK

from provnet.agents.report import StateReporter, ovs_configurations
from provnet.cli.agent_cmd import BINARY
from provnet.model.errors import ServiceUnavailable
from provnet.model.resources import OVS_AGENT_TYPE


class FakeRegistry:
    """A stand-in for the registry's report_agent_state only (the reporter's retry and logging are what's tested);
    raises for the calls listed."""

    def __init__(self, fail_on: set[int]) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def report_agent_state(self, host, agent_type, binary, configurations):
        self.calls += 1
        if self.calls in self.fail_on:
            raise ServiceUnavailable()
        return type("A", (), {"id": "a1", "host": host, "configurations": configurations})()


def _reporter(registry, interval: float = 30.0) -> StateReporter:
    return StateReporter(registry, "h", OVS_AGENT_TYPE, BINARY, lambda: ovs_configurations({}), interval)


def test_reports_survive_failures_and_log_once_per_outage(caplog):
    registry = FakeRegistry({2, 3})
    reporter = _reporter(registry)

    async def go() -> list[bool]:
        try:
            return [await reporter.report() for _ in range(5)]
        finally:
            reporter.areg.close()

    with caplog.at_level("INFO", logger="provnet.agent"):
        results = asyncio.run(go())
    assert results == [True, False, False, True, True] and reporter.failures == 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("state report failed" in m for m in messages) == 1  # not once per retry
    assert sum("reported state" in m for m in messages) == 2  # first success and the recovery


def test_the_reporter_reports_at_start_on_demand_and_stops_promptly():
    registry = FakeRegistry(set())
    reporter = _reporter(registry, interval=3600)

    async def go() -> None:
        await reporter.start()
        assert registry.calls == 1  # at start, not an interval later
        reporter.report_soon()
        while registry.calls < 2:  # an event, not the hour-long interval
            await asyncio.sleep(0.01)
        await asyncio.wait_for(reporter.stop(), 5)

    asyncio.run(go())
    assert registry.calls == 2


def test_configurations_shape():
    conf = ovs_configurations({"physnet1": "br-phy"})
    assert conf["bridge_mappings"] == {"physnet1": "br-phy"} and conf["integration_bridge"] == "br-int"
    assert conf["tunnel_types"] == []


def test_agents_through_api_and_openstack_cli(db_url, tmp_path):
    need(OPENSTACK.exists(), "needs python-openstackclient in the venv")
    with running_api(db_url) as (client, registry):
        agent = registry.report_agent_state("compute1", OVS_AGENT_TYPE, BINARY,
                                            ovs_configurations({"physnet1": "br-phy"}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(HOME=str(tmp_path), OS_AUTH_TYPE="none", OS_ENDPOINT=client.url)

        def osc(*args: str) -> str:
            proc = subprocess.run([str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        listed = osc("network", "agent", "list", "--host", "compute1", "--agent-type", "open-vswitch", "-f", "value",
                     "-c", "ID", "-c", "Alive", "-c", "State")
        assert listed.split() == [agent.id, "True", "True"]  # alive, admin state up
        osc("network", "agent", "set", "--disable", agent.id)
        net = client.ok("POST", "/v2.0/networks", {"network": {"name": "n", "provider:network_type": "flat",
                                                               "provider:physical_network": "physnet1"}}, 201)
        port = client.ok("POST", "/v2.0/ports", {"port": {"network_id": net["network"]["id"],
                                                          "binding:host_id": "compute1"}}, 201)["port"]
        assert port["binding:vif_type"] == "binding_failed"
        assert port["binding:failure_reason"] == (f"agent on host compute1 is disabled (admin_state_up False): "
                                                  f"enable it with `openstack network agent set --enable {agent.id}`")
        osc("network", "agent", "set", "--enable", agent.id)
        # enabling is not a report: the port stays failed until the next heartbeat or any update of the port
        assert client.ok("GET", f"/v2.0/ports/{port['id']}")["port"]["binding:vif_type"] == "binding_failed"
        osc("port", "set", "--name", "renamed", port["id"])
        assert client.ok("GET", f"/v2.0/ports/{port['id']}")["port"]["binding:vif_type"] == "ovs"
        osc("network", "agent", "delete", agent.id)
        assert client.ok("GET", "/v2.0/agents")["agents"] == []
        code, body = client.get(f"/v2.0/agents/{agent.id}")
        assert code == 404 and body["NeutronError"]["type"] == "AgentNotFound"


@pytest.mark.parametrize("body,fragment", [
    ({"agent": {"admin_state_up": "maybe"}}, "admin_state_up"),
    ({"agent": {"host": "other"}}, "host"),
])
def test_agent_update_bad_input(db_url, body, fragment):
    with running_api(db_url) as (client, registry):
        agent = registry.report_agent_state("h", OVS_AGENT_TYPE, BINARY, {})
        code, err = client.put(f"/v2.0/agents/{agent.id}", body)
        assert code == 400 and fragment in err["NeutronError"]["message"]
        assert client.ok("GET", f"/v2.0/agents/{agent.id}")["agent"]["admin_state_up"] is True


def test_agent_with_a_store_it_cannot_open_says_so_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "afile" / "s"), "agent", "--once"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot open the database" in proc.stderr and str(tmp_path / "afile" / "s") in proc.stderr
