# The real `openstack` CLI and openstacksdk with password auth through Keystone's catalog, against provnet's API.
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import openstack
import pytest
from conftest import need
from keystone_support import keystone_api

OPENSTACK = Path(sys.executable).parent / "openstack"


@pytest.fixture(scope="module")
def cloud(keystone, tmp_path_factory):
    """provnet's API behind Keystone, in the catalog as the `network` service, and a clouds.yaml for every user."""
    need(OPENSTACK.exists(), "needs python-openstackclient in the venv (pip install -e '.[test]')")
    tmp = tmp_path_factory.mktemp("osc")
    clouds = keystone.clouds_yaml(tmp / "clouds.yaml")
    with keystone_api(keystone, f"sqlite:///{tmp}/provnet.sqlite") as api:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(HOME=str(tmp), OS_CLIENT_CONFIG_FILE=str(clouds))

        def run(user: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run([str(OPENSTACK), "--os-cloud", user, *args], env=env, capture_output=True,
                                  text=True, timeout=120)
            if ok:
                assert proc.returncode == 0, f"openstack {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
            return proc

        def js(user: str, *args: str):
            return json.loads(run(user, *args, "-f", "json").stdout)

        run.js = js  # type: ignore[attr-defined]
        yield run, api, clouds


def test_the_openstack_cli_through_the_catalog(cloud) -> None:
    run, api, _ = cloud
    admin = api.client("root")
    admin.ok("POST", "/v2.0/networks", {"network": {"name": "phy_net", "router:external": True,
                                                    "provider:network_type": "flat",
                                                    "provider:physical_network": "physnet1"}}, 201)
    made = run.js("alice", "network", "create", "alice-net")
    assert made["name"] == "alice-net" and made["project_id"] == api.keystone.projects["demo"]
    run.js("bob", "network", "create", "bob-net")
    assert {n["Name"] for n in run.js("alice", "network", "list")} == {"alice-net", "phy_net"}
    assert {n["Name"] for n in run.js("root", "network", "list")} == {"alice-net", "bob-net", "phy_net"}
    # a reader cannot create: Neutron's 403 as the CLI shows it
    proc = run("carol", "network", "create", "carol-net", ok=False)
    assert proc.returncode != 0 and "rule:create_network is disallowed by policy" in proc.stderr
    # a member cannot set provider attributes
    proc = run("alice", "network", "create", "--provider-network-type", "flat", "--provider-physical-network",
               "physnet1", "p", ok=False)
    assert proc.returncode != 0 and "rule:create_network:provider:network_type" in proc.stderr
    # nor bind a port to a host
    run("alice", "subnet", "create", "--network", "alice-net", "--subnet-range", "10.5.0.0/24", "alice-subnet")
    proc = run("alice", "port", "create", "--network", "alice-net", "--host", "compute1", "p1", ok=False)
    assert proc.returncode != 0 and "rule:create_port:binding:host_id" in proc.stderr
    port = run.js("alice", "port", "create", "--network", "alice-net", "p1")
    assert {p["ID"] for p in run.js("alice", "port", "list")} == {port["id"]}
    assert run.js("bob", "port", "list") == []
    shown = run.js("root", "port", "show", port["id"])
    assert shown["binding_host_id"] in ("", None) and shown["binding_vif_type"] == "unbound"


def test_openstacksdk_with_password_auth(cloud) -> None:
    _run, api, clouds = cloud
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    try:
        root = openstack.connect(cloud="root")
        alice = openstack.connect(cloud="alice")
        bob = openstack.connect(cloud="bob")
        net = alice.network.create_network(name="sdk-net")
        alice.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.6.0.0/24")
        assert net.project_id == api.keystone.projects["demo"]
        assert "sdk-net" in {n.name for n in root.network.networks()}
        assert "sdk-net" not in {n.name for n in bob.network.networks()}
        with pytest.raises(openstack.exceptions.ForbiddenException) as info:
            alice.network.create_port(network_id=net.id, binding_host_id="compute1")
        assert "disallowed by policy" in str(info.value)
        with pytest.raises(openstack.exceptions.NotFoundException):
            bob.network.get_network(net.id)
        port = root.network.create_port(network_id=net.id, binding_host_id="compute1")
        assert port.binding_host_id == "compute1"
        assert alice.network.get_port(port.id).binding_host_id in ("", None)  # admin-only attribute: not shown
    finally:
        os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
