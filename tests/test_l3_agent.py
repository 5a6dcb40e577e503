# `provnet l3-agent` in namespaces against the registry on SQLite and PostgreSQL: routers built within a second of
# the write, removed, adopted across a restart, repaired after drift and a killed proxy, moved on agent failure.
from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import need_root, need_tool
from l3_world import make_world, ns_curl, poll_in_vm, poll_result, wait_for
from registry_support import open_registry

from provnet.dataplane import iptables, l3, netns


@pytest.fixture
def world(db_url, tmp_path):
    need_root()
    need_tool("ip", "iptables-restore", "curl")
    reg = open_registry(db_url, agent_down_time=3.0)
    w = make_world(reg, tmp_path, db_url, down_time=3.0)
    try:
        yield w
    finally:
        w.teardown()
        reg.close()


def _serves(world, vm: str) -> bool:
    code, _ = ns_curl(world.vms[vm], timeout=1)
    return code == 200


def _rules_present(ns: str) -> bool:
    saved = iptables.save(ns, ("nat",))
    return any(c.startswith(l3.PREFIX) for t in saved.values() for c in t.chains)


def test_router_built_within_a_second_then_removed(world) -> None:
    host = world.add_host("h1")
    world.add_vm("h1", "vm1", "172.16.1.110")
    agent = world.start_agent("h1")
    wait_for(lambda: world.registry.list_agents({"host": ["h1"], "agent_type": ["L3 agent"]}), 20, "agent report")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    body = world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    took = wait_for(lambda: _serves(world, "vm1"), 10, "metadata through the new router")
    print(f"router + interface -> VM served in {took:.2f} s")
    ns = world.router_ns("h1")
    assert netns.namespace_exists(ns) and _rules_present(ns)
    port = world.registry.get_port(body["port_id"])
    assert f"qr-{port.id[:11]}" in netns.link_names(ns)
    assert netns.ipv4_addresses(ns, f"qr-{port.id[:11]}") == ["172.16.1.2/24"]
    assert f"tap{port.id[:11]}" in netns.link_names(host)
    code, body_text = ns_curl(world.vms["vm1"])
    assert code == 200 and '"name": "vm1"' in body_text
    hosted = world.registry.list_agents({"host": ["h1"], "agent_type": ["L3 agent"]})[0]
    wait_for(lambda: world.registry.get_agent(hosted.id).configurations.get("router_ids") == [router.id], 10,
             "the agent reporting the router it hosts")
    # the interface goes: the qr- device goes (namespace stays while the router is hosted here)
    world.registry.remove_router_interface(router.id, subnet_id=world.subnet_id)
    wait_for(lambda: f"qr-{port.id[:11]}" not in netns.link_names(ns), 5, "qr- device removed")
    assert not _serves(world, "vm1")
    # the router goes: the namespace and its proxy go
    pid = world.proxy_pid("h1")
    world.registry.delete_router(router.id)
    wait_for(lambda: not netns.namespace_exists(ns), 5, "namespace removed")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 5, "proxy stopped")
    assert agent.proc.poll() is None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_restart_adopts_namespace_and_proxy_without_a_failed_request(world) -> None:
    world.add_host("h1")
    world.add_vm("h1", "vm1", "172.16.1.110")
    agent = world.start_agent("h1")
    wait_for(lambda: world.registry.list_agents({"agent_type": ["L3 agent"]}), 20, "agent report")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    wait_for(lambda: _serves(world, "vm1"), 10, "metadata")
    ns = world.router_ns("h1")
    inode, pid = netns.namespace_inode(ns), world.proxy_pid("h1")
    poller = poll_in_vm(world.vms["vm1"], 6)
    world.stop_agent(agent, signal.SIGKILL)  # the worst stop: no cleanup at all
    again = world.start_agent("h1")
    wait_for(lambda: "adopted the metadata proxy" in world.agent_log(again), 20, "adoption")
    result = poll_result(poller)
    assert result["failures"] == [] and result["ok"] > 20, result
    assert netns.namespace_inode(ns) == inode and world.proxy_pid("h1") == pid
    assert os.path.exists(f"/proc/{pid}")


def test_killed_proxy_serves_again_within_a_second_and_drift_is_repaired(world) -> None:
    world.add_host("h1")
    world.add_vm("h1", "vm1", "172.16.1.110")
    world.start_agent("h1", resync_interval="1")
    wait_for(lambda: world.registry.list_agents({"agent_type": ["L3 agent"]}), 20, "agent report")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    wait_for(lambda: _serves(world, "vm1"), 10, "metadata")
    pid = world.proxy_pid("h1")
    os.kill(pid, signal.SIGKILL)
    took = wait_for(lambda: world.proxy_pid("h1") not in (None, pid) and _serves(world, "vm1"), 10,
                    "a new proxy serving")
    print(f"proxy killed -> serving again in {took:.2f} s")
    # a rule removed by hand comes back at the next resync
    ns = world.router_ns("h1")
    iptables.remove(ns, l3.PREFIX)
    assert not _serves(world, "vm1")
    wait_for(lambda: _rules_present(ns) and _serves(world, "vm1"), 10, "rules restored by the resync")
    # so does a qr- device deleted by hand
    [dev] = [n for n in netns.link_names(ns) if n.startswith("qr-")]
    netns.delete_link(ns, dev)
    wait_for(lambda: _serves(world, "vm1"), 10, "qr- device restored by the resync")


def test_missing_bridge_is_reported_and_retried(world) -> None:
    host = world.add_host("h1")
    world.add_vm("h1", "vm1", "172.16.1.110")
    subprocess.run(["ip", "-n", host, "link", "set", "br-phy", "name", "br-gone"], check=True)
    world.start_agent("h1")
    wait_for(lambda: world.registry.list_agents({"agent_type": ["L3 agent"]}), 20, "agent report")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    agent = world.registry.list_agents({"agent_type": ["L3 agent"]})[0]
    wait_for(lambda: "br-phy does not exist" in str(world.registry.get_agent(agent.id).configurations["errors"]),
             10, "the error in the agent's configurations")
    subprocess.run(["ip", "-n", host, "link", "set", "br-gone", "name", "br-phy"], check=True)
    wait_for(lambda: _serves(world, "vm1"), 20, "built after the bridge came")
    log = world.agent_log(world.agents[0])
    assert log.count("cannot be built on this host") == 1, log


def test_two_agents_one_stopped_router_moves_and_vms_are_served_again(world) -> None:
    world.add_host("h1")
    world.add_host("h2")
    world.join_hosts()
    world.add_vm("h1", "vm1", "172.16.1.110")
    world.add_vm("h2", "vm2", "172.16.1.111")
    a1 = world.start_agent("h1")
    wait_for(lambda: world.registry.list_agents({"agent_type": ["L3 agent"]}), 20, "agent report")
    world.start_agent("h2")
    wait_for(lambda: len(world.registry.list_agents({"agent_type": ["L3 agent"]})) == 2, 20, "two agents")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    [first] = world.registry.list_l3_agents_hosting_router(router.id)
    assert first.host == "h1"  # equal load: by host name
    wait_for(lambda: _serves(world, "vm1") and _serves(world, "vm2"), 10, "both VMs served from h1")
    world.stop_agent(a1, signal.SIGKILL)
    # the dead host's dataplane would keep answering (its proxy outlives the agent): take the host's router down as
    # a failed machine's would be (its proxy killed, its namespace gone)
    for pid in netns.pids_in_namespace(world.router_ns("h1")):
        os.kill(pid, signal.SIGKILL)
    netns.delete_namespace(world.router_ns("h1"))
    assert not _serves(world, "vm1")
    took = wait_for(lambda: _serves(world, "vm1") and _serves(world, "vm2"), 30, "VMs served from h2", step=0.1)
    print(f"L3 agent killed -> VMs served again after {took:.1f} s (agent_down_time 3 s, report_interval 1 s)")
    [now] = world.registry.list_l3_agents_hosting_router(router.id)
    assert now.host == "h2"
    assert netns.namespace_exists(world.router_ns("h2"))
