# `provnet agent` as the host's L2 agent, run in a host namespace against the registry on SQLite and PostgreSQL:
# tap devices plugged and unplugged as Nova does, port status, the port firewall with real traffic and real DHCP.
from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import need_root, need_tool
from l3_world import make_world, seed, wait_for
from metadata_chain import PROJECT
from registry_support import open_registry

from provnet.dataplane import iptables, netns
from provnet.model.resources import OVS_AGENT_TYPE

PEER_IP = "172.16.1.99"  # the external DHCP server's box on the provider segment (a veth, not a port)


@pytest.fixture
def world(db_url, tmp_path):
    need_root()
    need_tool("ip", "iptables-restore", "busybox", "ping")
    reg = open_registry(db_url)
    w = make_world(reg, tmp_path, db_url)
    try:
        yield w
    finally:
        w.teardown()
        reg.close()


def in_ns(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def add_peer(world, host: str) -> str:
    """A box on the host's bridge that is not a port (the DHCP server's host): a veth named pn..., 172.16.1.99."""
    ns = f"{world.suffix}-peer"
    netns.ensure_namespace(ns)
    netns.ensure_veth(world.hosts[host], f"{world.suffix}p", ns, "eth0")
    netns.attach_to_bridge(world.hosts[host], f"{world.suffix}p", "br-phy")
    netns.ensure_address(ns, "eth0", PEER_IP, 24)
    return ns


def new_port(world, name: str, ip: str, host: str = "h1", **attrs):
    inst = world.registry.create_instance({"name": name, "project_id": PROJECT})
    return world.registry.create_port({"network_id": world.network_id, "project_id": PROJECT, "device_id": inst.id,
                                       "device_owner": "compute:nova", "name": f"{name}-port",
                                       "binding:host_id": host,
                                       "fixed_ips": [{"subnet_id": world.subnet_id, "ip_address": ip}], **attrs})


def plug(world, host: str, port, name: str) -> str:
    """What Nova does: the VM's device (here a veth whose far end is the guest's eth0, with the port's MAC) as
    tap<11 characters of the port id> on the host's bridge. The guest configures its port's address."""
    ns = f"{world.suffix}-{name}"
    netns.ensure_namespace(ns)
    world.vms[name] = ns
    tap = f"tap{port.id[:11]}"
    netns.ensure_veth(world.hosts[host], tap, ns, "eth0", mac=port.mac_address)
    netns.attach_to_bridge(world.hosts[host], tap, "br-phy")
    if port.fixed_ips:
        netns.ensure_address(ns, "eth0", port.fixed_ips[0].ip_address, 24)
    return ns


def unplug(world, host: str, port) -> None:
    netns.delete_link(world.hosts[host], f"tap{port.id[:11]}")


def port_chains(world, host: str, port) -> set[str]:
    """The port's own chains in the host's iptables (Neutron's i/o/s chains, named after the device)."""
    sfx = f"tap{port.id[:11]}"[3:13]
    chains = iptables.save(world.hosts[host], ("filter",))["filter"].chains
    return {c for c in chains if c.startswith("provnet-fw-") and c.endswith(sfx)}


def spoof_rules(world, host: str, port) -> list[str]:
    sfx = f"tap{port.id[:11]}"[3:13]
    rules = iptables.save(world.hosts[host], ("filter",))["filter"].rules
    return [spec for chain, spec in rules if chain == f"provnet-fw-s{sfx}"]


def blocked(world, host: str, port) -> bool:
    rules = iptables.save(world.hosts[host], ("filter",))["filter"].rules
    tap = f"tap{port.id[:11]}"
    return any(chain == "provnet-fw-FORWARD" and f"--physdev-in {tap} " in spec and spec.endswith("-j DROP")
               for chain, spec in rules)


def status(world, port) -> str:
    return world.registry.get_port(port.id).status


def pings(ns: str, target: str = PEER_IP, source: str | None = None) -> bool:
    extra = ["-I", source] if source else []
    return in_ns(ns, "ping", "-c", "1", "-W", "1", *extra, target).returncode == 0


def start_l2(world, host: str = "h1", **extra: str):
    agent = world.start_agent(host, "agent", **extra)
    wait_for(lambda: world.registry.list_agents({"host": [host], "agent_type": [OVS_AGENT_TYPE]}), 20,
             "the L2 agent's first report")
    return agent


def test_plugged_port_is_active_with_its_firewall_and_down_without_it_when_unplugged(world) -> None:
    world.add_host("h1")
    peer = add_peer(world, "h1")
    agent = start_l2(world)
    port = new_port(world, "vm1", "172.16.1.110")
    assert port.binding_vif_type == "ovs" and port.status == "DOWN"  # bound; no device yet
    vm = plug(world, "h1", port, "vm1")
    took = wait_for(lambda: status(world, port) == "ACTIVE" and len(port_chains(world, "h1", port)) == 3, 10,
                    "ACTIVE with its chains")
    print(f"tap plugged -> port ACTIVE with its firewall in {took:.2f} s")
    assert f"-s 172.16.1.110/32 -m mac --mac-source {port.mac_address} -j RETURN".lower() in \
        [r.lower() for r in spoof_rules(world, "h1", port)]
    assert pings(vm)  # egress, and its replies back in (ESTABLISHED)
    assert not pings(peer, "172.16.1.110")  # the peer is in no security group: it may not open connections
    unplug(world, "h1", port)
    took = wait_for(lambda: status(world, port) == "DOWN" and not port_chains(world, "h1", port), 10,
                    "DOWN and its chains removed")
    print(f"tap unplugged -> port DOWN, rules removed in {took:.2f} s")
    saved = iptables.save(world.hosts["h1"], ("filter",))["filter"]
    assert not [s for _, s in saved.rules if f"tap{port.id[:11]}" in s]
    agent_row = world.registry.list_agents({"host": ["h1"], "agent_type": [OVS_AGENT_TYPE]})[0]
    assert agent_row.configurations["bridge_mappings"] == {"physnet1": "br-phy"}
    assert agent.proc.poll() is None


def test_device_before_its_binding_is_blocked_then_wired_when_bound(world) -> None:
    """A port's id is chosen by the registry, so a device can only name a port that exists; what Nova's order can
    produce is the device before the port is bound to this host. Until then it is dropped, as Neutron's agent parks
    it; once bound, it converges from the change feed."""
    world.add_host("h1")
    add_peer(world, "h1")
    start_l2(world)
    port = new_port(world, "vm1", "172.16.1.110", host="")
    vm = plug(world, "h1", port, "vm1")
    wait_for(lambda: blocked(world, "h1", port), 10, "the unknown device blocked")
    assert not pings(vm) and status(world, port) == "DOWN"
    other = new_port(world, "vm2", "172.16.1.111", host="h2")  # bound to another host: blocked here too
    plug(world, "h1", other, "vm2")
    wait_for(lambda: blocked(world, "h1", other), 10, "a device of a port bound elsewhere blocked")
    started = time.monotonic()
    world.registry.update_port(port.id, {"binding:host_id": "h1"})
    wait_for(lambda: status(world, port) == "ACTIVE" and port_chains(world, "h1", port), 10, "wired after binding")
    print(f"port bound to the host with its device there -> ACTIVE with rules in {time.monotonic() - started:.2f} s")
    assert pings(vm) and not blocked(world, "h1", port)
    assert status(world, other) == "DOWN" and blocked(world, "h1", other)


def test_foreign_mac_or_ip_dropped_dhcp_from_the_server_allowed_from_the_guest_dropped(world, tmp_path) -> None:
    world.add_host("h1")
    peer = add_peer(world, "h1")
    start_l2(world)
    port = new_port(world, "vm1", "172.16.1.110")
    vm = plug(world, "h1", port, "vm1")
    wait_for(lambda: status(world, port) == "ACTIVE" and port_chains(world, "h1", port), 10, "wired")
    assert pings(vm)
    # a guest using an address that is not its port's
    assert in_ns(vm, "ip", "addr", "add", "172.16.1.60/24", "dev", "eth0").returncode == 0
    assert not pings(vm, source="172.16.1.60") and pings(vm, source="172.16.1.110")
    in_ns(vm, "ip", "addr", "del", "172.16.1.60/24", "dev", "eth0")
    # a guest using another MAC
    for argv in (["ip", "link", "set", "eth0", "down"], ["ip", "link", "set", "eth0", "address", "fa:16:3e:00:00:66"],
                 ["ip", "link", "set", "eth0", "up"]):
        assert in_ns(vm, *argv).returncode == 0
    in_ns(vm, "ip", "neigh", "flush", "all")
    assert not pings(vm)
    for argv in (["ip", "link", "set", "eth0", "down"], ["ip", "link", "set", "eth0", "address", port.mac_address],
                 ["ip", "link", "set", "eth0", "up"]):
        in_ns(vm, *argv)
    wait_for(lambda: pings(vm), 10, "the port's own MAC passing again")
    # the external DHCP server's replies reach the guest: a real udhcpd on the peer, a real udhcpc in the guest
    conf = tmp_path / "udhcpd.conf"
    conf.write_text(f"interface eth0\nstart 172.16.1.100\nend 172.16.1.120\nstatic_lease {port.mac_address} "
                    f"172.16.1.110\nlease_file {tmp_path}/udhcpd.leases\noption subnet 255.255.255.0\n")
    (tmp_path / "udhcpd.leases").touch()
    server = subprocess.Popen(["ip", "netns", "exec", peer, "busybox", "udhcpd", "-f", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        lease = in_ns(vm, "busybox", "udhcpc", "-n", "-q", "-f", "-i", "eth0", "-s", "/bin/true", "-t", "4", "-T", "1")
        assert lease.returncode == 0 and "172.16.1.110" in lease.stdout + lease.stderr, lease.stderr
    finally:
        server.terminate()
        server.wait(5)
    # a DHCP server in the guest: its offers never leave the port
    conf.write_text(f"interface eth0\nstart 172.16.1.100\nend 172.16.1.120\nlease_file {tmp_path}/rogue.leases\n"
                    "option subnet 255.255.255.0\n")
    (tmp_path / "rogue.leases").touch()
    rogue = subprocess.Popen(["ip", "netns", "exec", vm, "busybox", "udhcpd", "-f", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        victim = in_ns(peer, "busybox", "udhcpc", "-n", "-q", "-f", "-i", "eth0", "-s", "/bin/true", "-t", "3",
                       "-T", "1")
        assert victim.returncode != 0, victim.stderr  # no lease from the guest's server
    finally:
        rogue.terminate()
        rogue.wait(5)


def test_ip_change_and_port_delete_follow_the_registry(world) -> None:
    world.add_host("h1")
    add_peer(world, "h1")
    start_l2(world)
    port = new_port(world, "vm1", "172.16.1.110")
    vm = plug(world, "h1", port, "vm1")
    wait_for(lambda: status(world, port) == "ACTIVE" and port_chains(world, "h1", port), 10, "wired")
    started = time.monotonic()
    world.registry.update_port(port.id, {"fixed_ips": [{"subnet_id": world.subnet_id, "ip_address": "172.16.1.120"}]})
    wait_for(lambda: any("-s 172.16.1.120/32" in r for r in spoof_rules(world, "h1", port)), 10, "the new IP's rule")
    print(f"fixed IP changed -> anti-spoofing follows in {time.monotonic() - started:.2f} s")
    in_ns(vm, "ip", "addr", "flush", "dev", "eth0")
    in_ns(vm, "ip", "addr", "add", "172.16.1.120/24", "dev", "eth0")
    assert pings(vm)
    in_ns(vm, "ip", "addr", "add", "172.16.1.110/24", "dev", "eth0")
    assert not pings(vm, source="172.16.1.110")  # the old address is foreign now
    world.registry.delete_port(port.id)
    wait_for(lambda: not port_chains(world, "h1", port) and blocked(world, "h1", port), 10,
             "the port's rules gone, its device blocked")
    assert not pings(vm, source="172.16.1.120")


def test_network_owned_port_is_wired_unfiltered_and_drift_is_repaired_across_a_restart(world) -> None:
    world.add_host("h1")
    add_peer(world, "h1")
    agent = start_l2(world)
    port = new_port(world, "vm1", "172.16.1.110")
    router_like = world.registry.create_port({"network_id": world.network_id, "device_owner": "network:dhcp",
                                              "fixed_ips": [{"subnet_id": world.subnet_id,
                                                             "ip_address": "172.16.1.3"}]})
    plug(world, "h1", port, "vm1")
    service = plug(world, "h1", router_like, "svc")
    wait_for(lambda: status(world, port) == status(world, router_like) == "ACTIVE", 10, "both ACTIVE")
    assert not port_chains(world, "h1", router_like) and not blocked(world, "h1", router_like)
    assert pings(service)
    # kill -9 and start again: nothing is rewired, nothing flips
    world.stop_agent(agent, signal.SIGKILL)
    rev = world.registry.revision()
    seen = len(world.agent_log(agent))  # the same log file: look only at what the new agent writes
    again = world.start_agent("h1", "agent")
    wait_for(lambda: "L2 agent on host h1" in world.agent_log(again)[seen:], 20, "the new agent")
    wait_for(lambda: "device tap" in world.agent_log(again)[seen:], 20, "the new agent's first round")
    assert status(world, port) == "ACTIVE" and len(port_chains(world, "h1", port)) == 3
    assert not [c for c in world.registry.changes_since(rev).changes if c.kind == "port"]  # no status written
    # rules removed by hand stay gone until the next resync (the timer's is 300 s), which SIGHUP runs now
    iptables.remove(world.hosts["h1"], "provnet-fw-")
    assert not port_chains(world, "h1", port)
    again.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(port_chains(world, "h1", port)) == 3, 10, "rules restored by the resync")
    assert again.proc.poll() is None and "SIGHUP: resyncing every port now" in world.agent_log(again)[seen:]


def test_missing_bridge_is_reported_then_used_when_it_appears(world) -> None:
    host = world.add_host("h1")
    subprocess.run(["ip", "-n", host, "link", "set", "br-phy", "name", "br-gone"], check=True)
    agent = start_l2(world)
    wait_for(lambda: world.registry.list_agents({"host": ["h1"], "agent_type": [OVS_AGENT_TYPE]})[0]
             .configurations.get("missing_bridges") == ["br-phy"], 10, "the missing bridge reported")
    port = new_port(world, "vm1", "172.16.1.110")
    subprocess.run(["ip", "-n", host, "link", "set", "br-gone", "name", "br-phy"], check=True)
    plug(world, "h1", port, "vm1")
    wait_for(lambda: status(world, port) == "ACTIVE", 10, "wired once the bridge exists")
    wait_for(lambda: "missing_bridges" not in world.registry.list_agents(
        {"host": ["h1"], "agent_type": [OVS_AGENT_TYPE]})[0].configurations, 10, "the report cleared")
    assert world.agent_log(agent).count("do not exist on this host") == 1


def test_port_on_a_network_created_after_the_agent_started(world) -> None:
    """The network's change and its ports' arrive together (one batch, or while the network is being read): the
    ports must not be lost (they were, until ports on networks not known yet were read too)."""
    world.add_host("h1")
    add_peer(world, "h1")
    start_l2(world)
    world.registry.delete_network(world.network_id)
    seed(world)  # the seed's network and subnet again, new ids, right away
    port = new_port(world, "vm1", "172.16.1.110")
    plug(world, "h1", port, "vm1")
    wait_for(lambda: status(world, port) == "ACTIVE" and port_chains(world, "h1", port), 10, "wired")
