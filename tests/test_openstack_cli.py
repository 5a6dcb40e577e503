# The seed's commands through the real `openstack` CLI (python-openstackclient, --os-auth-type none) against our API.
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from api_server import running_api
from conftest import need

OPENSTACK = Path(sys.executable).parent / "openstack"


@pytest.fixture
def osc(db_url: str, tmp_path: Path):
    need(OPENSTACK.exists(), "needs python-openstackclient in the venv (pip install -e '.[test]')")
    with running_api(db_url) as (client, registry):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(HOME=str(tmp_path), OS_AUTH_TYPE="none", OS_ENDPOINT=client.url)

        def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run([str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=120)
            if ok:
                assert proc.returncode == 0, f"openstack {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
            return proc

        def js(*args: str):
            return json.loads(run(*args, "-f", "json").stdout)

        run.js = js  # type: ignore[attr-defined]
        yield run, client, registry


def test_seed_commands_through_the_openstack_cli(osc) -> None:
    run, client, registry = osc
    net = run.js("network", "create", "--external", "--provider-network-type", "flat",
                 "--provider-physical-network", "physnet1", "phy_net")
    assert net["name"] == "phy_net" and net["router:external"] is True
    assert (net["provider:network_type"], net["provider:physical_network"], net["mtu"]) == ("flat", "physnet1", 1500)
    subnet = run.js("subnet", "create", "--network", "phy_net", "--subnet-range", "172.16.1.101/24",
                    "--gateway", "172.16.1.2", "--allocation-pool", "start=172.16.1.102,end=172.16.1.126",
                    "--no-dhcp", "phy_subnet_without_dhcp")
    assert subnet["cidr"] == "172.16.1.0/24"  # host bits normalised, as Neutron does
    assert subnet["gateway_ip"] == "172.16.1.2" and subnet["enable_dhcp"] is False
    assert subnet["allocation_pools"] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    assert subnet["network_id"] == net["id"]
    port = run.js("port", "create", "--network", "phy_net", "--device", "vm-1",
                  "--fixed-ip", "subnet=phy_subnet_without_dhcp,ip-address=172.16.1.103", "vm-1-port")
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.103"}]
    assert port["mac_address"].startswith("fa:16:3e:") and port["status"] == "DOWN"
    auto = run.js("port", "create", "--network", "phy_net", "auto-port")
    assert auto["fixed_ips"][0]["ip_address"] != "172.16.1.103"
    listed = run.js("port", "list", "--fixed-ip", "ip-address=172.16.1.103")
    assert [p["ID"] for p in listed] == [port["id"]]
    assert [p["ID"] for p in run.js("port", "list", "--network", "phy_net", "--device-id", "vm-1")] == [port["id"]]
    router = run.js("router", "create", "r1")
    run("router", "add", "subnet", "r1", "phy_subnet_without_dhcp")
    (iface,) = registry.list_ports({"device_id": [router["id"]]})
    assert iface.device_owner == "network:router_interface" and iface.ips() == ["172.16.1.2"]
    assert registry.router_network_ids(router["id"]) == [net["id"]]
    registry.report_agent_state("compute1", "Open vSwitch agent", "provnet-agent",
                                {"bridge_mappings": {"physnet1": "br-phy"}})
    agents = run.js("network", "agent", "list", "--host", "compute1", "--agent-type", "open-vswitch")
    assert [(a["Host"], a["Agent Type"], a["Alive"]) for a in agents] == [("compute1", "Open vSwitch agent", True)]
    shown = run.js("network", "show", "phy_net")
    assert shown["subnets"] == [subnet["id"]]
    run("router", "remove", "subnet", "r1", "phy_subnet_without_dhcp")
    run("port", "delete", "vm-1-port")
    assert registry.list_ports({"name": ["vm-1-port"]}) == []


def test_openstack_cli_shows_neutron_errors(osc) -> None:
    run, client, registry = osc
    run("network", "create", "--provider-network-type", "flat", "--provider-physical-network", "physnet1", "a")
    proc = run("network", "create", "--provider-network-type", "flat", "--provider-physical-network", "physnet1",
               "b", ok=False)
    assert proc.returncode != 0
    assert "Physical network physnet1 is in use" in proc.stderr
    proc = run("port", "show", "no-such-port", ok=False)
    assert proc.returncode != 0 and "no-such-port" in proc.stderr
    assert [n.name for n in registry.list_networks()] == ["a"]


def test_description_through_the_openstack_cli(osc) -> None:
    run, client, registry = osc
    net = run.js("network", "create", "--description", "seed net", "--provider-network-type", "flat",
                 "--provider-physical-network", "physnet1", "phy_net")
    assert net["description"] == "seed net"
    assert run.js("network", "show", "phy_net")["description"] == "seed net"
    subnet = run.js("subnet", "create", "--network", "phy_net", "--subnet-range", "172.16.1.0/24", "--no-dhcp",
                    "--description", "no dhcp", "s")
    port = run.js("port", "create", "--network", "phy_net", "--description", "vm one", "p")
    router = run.js("router", "create", "--description", "edge", "r")
    assert (subnet["description"], port["description"], router["description"]) == ("no dhcp", "vm one", "edge")
    run("network", "set", "--description", "renamed", "phy_net")
    run("port", "set", "--description", "", "p")
    assert registry.get_network(net["id"]).description == "renamed"
    assert run.js("port", "show", "p")["description"] == ""
    proc = run("network", "create", "--description", "x" * 256, "too-long", ok=False)
    assert proc.returncode != 0 and "exceeds maximum length of 255" in proc.stderr
    assert [n.name for n in registry.list_networks()] == ["phy_net"]
