# `provnet l3-agent` with an Open vSwitch bridge: OVS's userspace datapath (ovsdb-server and ovs-vswitchd run by the
# test inside the host namespace, datapath_type netdev, no kernel module), the router's device plugged with Neutron's
# external_ids, a VM on the same OVS bridge served, and the OVS port removed with the router.
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need, need_root, need_tool
from l3_world import make_world, ns_curl, wait_for
from metadata_chain import PROJECT
from registry_support import open_registry

from provnet.dataplane import netns

REPO = Path(__file__).resolve().parent.parent


def ovs_paths() -> tuple[Path, dict[str, Path]] | None:
    """Open vSwitch's programs: installed, or unpacked by scripts/setup.sh into .venv/ovs (not run as a service)."""
    for root in (Path("/"), REPO / ".venv" / "ovs"):
        paths = {"vsctl": root / "usr/bin/ovs-vsctl", "tool": root / "usr/bin/ovsdb-tool",
                 "server": root / "usr/sbin/ovsdb-server", "vswitchd": root / "usr/lib/openvswitch-switch/ovs-vswitchd",
                 "schema": root / "usr/share/openvswitch/vswitch.ovsschema"}
        if all(p.exists() for p in paths.values()):
            return root, paths
    return None


def tx_checksum_off(ns: str, ifname: str) -> None:
    """The userspace datapath reads veths through packet sockets and forwards what they send as is: a TCP segment
    left with a partial checksum (veth's TX offload) arrives broken. The datapath's own advice is to turn TX
    checksum offload off on such ports; the kernel datapath does not need this."""
    code = ("import sys\nfrom pyroute2.ethtool import Ethtool\ne = Ethtool()\nf = e.get_features(sys.argv[1])\n"
            "f.features['tx-checksum-ip-generic'].enable = False\ne.set_features(sys.argv[1], f)\n")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, ifname], check=True, timeout=30)


@pytest.fixture
def ovs_world(db_url, tmp_path, monkeypatch):
    need_root()
    need_tool("ip", "iptables-restore", "curl")
    found = ovs_paths()
    need(found is not None, "needs Open vSwitch (scripts/setup.sh unpacks it into .venv/ovs)")
    root, paths = found
    run = tmp_path / "ovs"
    run.mkdir()
    env = {"OVS_RUNDIR": str(run), "OVS_LOGDIR": str(run), "OVS_DBDIR": str(run), "OVS_SYSCONFDIR": str(run)}
    if root != Path("/"):
        env["PATH"] = f"{paths['vsctl'].parent}:{os.environ['PATH']}"
        env["LD_LIBRARY_PATH"] = str(root / "usr/lib/x86_64-linux-gnu")
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the agent started below inherits them: its ovs-vsctl finds this database
    reg = open_registry(db_url)
    world = make_world(reg, tmp_path, db_url)
    host = f"{world.suffix}-h1"
    netns.ensure_namespace(host)
    world.hosts["h1"] = host
    pids = []
    try:
        subprocess.run([str(paths["tool"]), "create", str(run / "conf.db"), str(paths["schema"])], check=True)
        for argv in ([str(paths["server"]), str(run / "conf.db"), f"--remote=punix:{run}/db.sock",
                      f"--pidfile={run}/ovsdb-server.pid", "--detach", f"--log-file={run}/ovsdb-server.log"],
                     [str(paths["vswitchd"]), f"unix:{run}/db.sock", f"--pidfile={run}/ovs-vswitchd.pid", "--detach",
                      f"--log-file={run}/ovs-vswitchd.log"]):
            subprocess.run(["ip", "netns", "exec", host, *argv], check=True, timeout=30)
            pids.append(run / Path(argv[0]).name)
        world.ovs = lambda *args: subprocess.run([str(paths["vsctl"]), "--timeout=10", *args], capture_output=True,
                                                 text=True, check=True, timeout=20).stdout.strip()
        world.ovs("--may-exist", "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev")
        subprocess.run(["ip", "-n", host, "link", "set", "br-phy", "up"], check=True)
        yield world
    finally:
        for name in pids:  # ours: started above, named by their pid files
            try:
                os.kill(int(Path(f"{name}.pid").read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        world.teardown()
        reg.close()


def plug_vm(world, name: str, ip: str) -> tuple[str, str]:
    """A VM plugged into the OVS bridge as Nova's os-vif plugs one: tap<port> with iface-id, attached-mac, vm-uuid."""
    reg = world.registry
    inst = reg.create_instance({"name": name, "hostname": name, "project_id": PROJECT})
    port = reg.create_port({"network_id": world.network_id, "project_id": PROJECT, "device_id": inst.id,
                            "device_owner": "compute:nova", "fixed_ips": [{"subnet_id": world.subnet_id,
                                                                           "ip_address": ip}]})
    ns = f"{world.suffix}-{name}"
    netns.ensure_namespace(ns)
    world.vms[name] = ns
    tap = f"tap{port.id[:11]}"
    netns.ensure_veth(world.hosts["h1"], tap, ns, "eth0", mac=port.mac_address)
    world.ovs("add-port", "br-phy", tap, "--", "set", "Interface", tap, f"external_ids:iface-id={port.id}",
              "external_ids:iface-status=active", f"external_ids:attached-mac={port.mac_address}",
              f"external_ids:vm-uuid={inst.id}")
    netns.ensure_address(ns, "eth0", ip, 24)
    netns.ensure_route(ns, "169.254.169.254/32", "172.16.1.2")
    tx_checksum_off(ns, "eth0")
    return inst.id, port.id


def has_link(ns: str, name: str) -> bool:
    try:
        return netns.namespace_exists(ns) and name in netns.link_names(ns)
    except netns.DataplaneError:  # the namespace's file exists a moment before it is mounted: not yet
        return False


def test_router_on_an_open_vswitch_bridge_with_neutrons_external_ids(ovs_world) -> None:
    world = ovs_world
    instance_id, _ = plug_vm(world, "vm1", "172.16.1.110")
    world.start_agent("h1")
    wait_for(lambda: world.registry.list_agents({"agent_type": ["L3 agent"]}), 20, "agent report")
    router = world.registry.create_router({"name": "r1"})
    world.router_id = router.id
    body = world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    port_id = body["port_id"]
    tap, qr = f"tap{port_id[:11]}", f"qr-{port_id[:11]}"
    ns = world.router_ns("h1")
    wait_for(lambda: has_link(ns, qr), 10, "the router's qr- device")
    wait_for(lambda: tap in world.ovs("list-ports", "br-phy").split(), 10, "the router's port on br-phy")
    ids = world.ovs("get", "Interface", tap, "external_ids")
    mac = world.registry.get_port(port_id).mac_address
    assert f'iface-id="{port_id}"' in ids or f"iface-id={port_id}" in ids, ids
    assert "iface-status=active" in ids and mac in ids, ids
    assert world.ovs("port-to-br", tap) == "br-phy"
    tx_checksum_off(ns, qr)
    wait_for(lambda: ns_curl(world.vms["vm1"], timeout=1)[0] == 200, 15, "metadata through the OVS bridge")
    code, text = ns_curl(world.vms["vm1"])
    assert code == 200 and instance_id in text
    # the interface goes: its qr- device and its OVS port record go (no port left pointing at nothing)
    world.registry.remove_router_interface(router.id, subnet_id=world.subnet_id)
    wait_for(lambda: tap not in world.ovs("list-ports", "br-phy").split(), 10, "the OVS port removed")
    assert qr not in netns.link_names(ns)
    world.registry.delete_router(router.id)
    wait_for(lambda: not netns.namespace_exists(ns), 10, "namespace removed")


def test_network_mode_device_on_an_open_vswitch_bridge_with_neutrons_external_ids(ovs_world) -> None:
    """Network mode (issue 12): the metadata namespace's device plugged into the OVS bridge as a router's is, the
    VM served through it, and its OVS port removed with the metadata port."""
    world = ovs_world
    instance_id, vm_port = plug_vm(world, "vm1", "172.16.1.110")
    world.registry.update_port(vm_port, {"binding:host_id": "h1"})
    # the network's metadata port, made by the registry with the subnet (auto mode, no router yet)
    [port] = world.registry.list_ports({"device_id": [f"provnet-metadata-{world.network_id}"]})
    netns.ensure_route(world.vms["vm1"], "169.254.169.254/32", port.ips()[0])
    world.start_agent("h1")
    ns = f"provnet-meta-{world.network_id}{world.ns_suffix('h1')}"
    tap, dev = f"tap{port.id[:11]}", f"ns-{port.id[:11]}"
    wait_for(lambda: has_link(ns, dev), 20, "the namespace's device")
    wait_for(lambda: tap in world.ovs("list-ports", "br-phy").split(), 10, "its port on br-phy")
    ids = world.ovs("get", "Interface", tap, "external_ids")
    assert (f'iface-id="{port.id}"' in ids or f"iface-id={port.id}" in ids) and port.mac_address in ids, ids
    tx_checksum_off(ns, dev)
    wait_for(lambda: ns_curl(world.vms["vm1"], timeout=1)[0] == 200, 15, "metadata through the OVS bridge")
    code, text = ns_curl(world.vms["vm1"])
    assert code == 200 and instance_id in text
    router = world.registry.create_router({"name": "r1"})  # router mode: now an operator may delete the port
    world.registry.add_router_interface(router.id, subnet_id=world.subnet_id)
    world.registry.delete_port(port.id)
    wait_for(lambda: tap not in world.ovs("list-ports", "br-phy").split(), 10, "the OVS port removed")
    wait_for(lambda: not netns.namespace_exists(ns), 10, "namespace removed")
