# The lab in network mode and with IPv6, end to end with real parts: `lab up --mode network --vms 2` (no router: the
# registry's metadata port, each host's provnet-meta- namespace) passes `lab check` and `lab down` leaves nothing;
# `lab up --ipv6 --vms 2` (router mode, RAs from dnsmasq on the external router) passes `lab check` over IPv4 and
# over http://[fe80::a9fe:a9fe%eth0] for an EUI-64 guest and a stable-privacy guest.
from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import need_root, need_tool
from test_lab import PROVNET, assert_nothing_left, curl, in_ns, provnet

from provnet.dataplane import netns
from provnet.lab import plan
from provnet.lab import state as lab_state


def _lab(request, tmp_path_factory, name: str, *args: str) -> dict:
    need_root()
    need_tool("ip", "iptables-restore", "curl", "busybox", "ss", "/usr/bin/python3",
              *(("dnsmasq",) if "--ipv6" in args else ()))
    path = tmp_path_factory.mktemp(name)
    snapshot: list[lab_state.LabState] = []

    def cleanup():
        provnet(path, "lab", "down")
        for s in snapshot:  # never leave a namespace on the machine, whatever happened
            for ns in netns.list_namespaces():
                if s.suffix in ns:
                    netns.delete_namespace(ns)

    request.addfinalizer(cleanup)
    up = provnet(path, "lab", "up", "--hosts", "2", "--vms", "2", *args)
    st = lab_state.load(str(path))
    if st is not None:
        snapshot.append(st)
    assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
    return {"path": path, "state": st, "up": up}


@pytest.fixture(scope="module")
def network_lab(request, tmp_path_factory):
    return _lab(request, tmp_path_factory, "lab-network", "--mode", "network")


@pytest.fixture(scope="module")
def ipv6_lab(request, tmp_path_factory):
    return _lab(request, tmp_path_factory, "lab-ipv6", "--ipv6")


def ctl_ports(lab) -> list[dict]:
    st = lab["state"]
    listed = in_ns(st.controller, *PROVNET, "--url", st.api_url, "port-list", "-f", "json", "-c", "id", "-c",
                   "device_owner", "-c", "device_id", "-c", "fixed_ips", timeout=60)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_network_mode_has_no_router_and_the_registrys_metadata_port(network_lab):
    st = network_lab["state"]
    assert (st.mode, st.router_id, st.ipv6) == ("network", "", False)
    assert "no router (network mode" in network_lab["up"].stderr
    assert not [ns for ns in netns.list_namespaces() if ns.startswith("qrouter-") and st.suffix in ns]
    ports = {p["id"]: p for p in ctl_ports(network_lab)}
    meta = ports[st.metadata_port_id]
    assert (meta["device_owner"], meta["device_id"]) == ("network:distributed", f"provnet-metadata-{st.network_id}")
    assert st.metadata_ip in json.dumps(meta["fixed_ips"])
    assert not [p for p in ports.values() if p["device_owner"].startswith("network:router")]
    # each host with a VM serves metadata in its own provnet-meta- namespace
    for host in st.hosts:
        ns = plan.metadata_namespace(st.network_id, host.namespace_suffix)
        assert netns.namespace_exists(ns), ns


def test_network_mode_check_passes_and_names_the_mode(network_lab):
    res = provnet(network_lab["path"], "lab", "check")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["VM", "IP", "lease", "routes", "port", "metadata", "upstream", "cloud-init",
                                "meta-ns"]
    assert all(line.split()[2:] == ["ok"] * 7 for line in lines[1:3])
    hop = network_lab["state"].metadata_ip
    assert res.stdout.count(f"169.254.169.254 via .{hop.rsplit('.', 1)[1]}, /24 link") == 2
    assert f"mode: network (no router; 169.254.169.254 via phy_net's metadata port {hop}" in res.stdout
    for vm in network_lab["state"].vms:  # its routes really go to the metadata port, from the DHCP server
        route = in_ns(vm.namespace, "ip", "route", "get", "169.254.169.254").stdout
        assert f"via {hop} dev eth0" in route
        rc, body, status = curl(vm.namespace, "http://169.254.169.254/openstack/latest/meta_data.json")
        assert status == 200 and json.loads(body)["uuid"] == vm.instance_id
    status = provnet(network_lab["path"], "lab", "status")
    assert status.returncode == 0 and "mode: network (no router" in status.stdout
    assert "GONE" not in status.stdout and "STOPPED" not in status.stdout
    assert status.stdout.count("metadata proxy") == 2  # one per host with a VM
    svg = provnet(network_lab["path"], "lab", "status", "--format", "svg")
    assert svg.returncode == 0, svg.stderr
    drawn = {g.get("data-namespace") for g in ET.fromstring(svg.stdout.split("?>", 1)[1]).iter(
        "{http://www.w3.org/2000/svg}g")}
    st = network_lab["state"]
    assert {plan.metadata_namespace(st.network_id, h.namespace_suffix) for h in st.hosts} <= drawn
    failover = provnet(network_lab["path"], "lab", "failover")
    assert failover.returncode == 1 and "no router to fail over" in failover.stderr


def test_network_mode_down_leaves_nothing(network_lab):
    res = provnet(network_lab["path"], "lab", "down")
    assert res.returncode == 0, res.stderr
    st = network_lab["state"]
    assert_nothing_left(st)
    assert not [ns for ns in netns.list_namespaces() if st.suffix in ns]  # provnet-meta- ones too


def test_ipv6_lab_check_passes_over_ipv4_and_ipv6(ipv6_lab):
    st = ipv6_lab["state"]
    assert (st.mode, st.ipv6) == ("router", True)
    assert [vm.addr_gen_mode for vm in st.vms] == [plan.ADDR_GEN_EUI64, plan.ADDR_GEN_STABLE_PRIVACY]
    res = provnet(ipv6_lab["path"], "lab", "check")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["VM", "IP", "lease", "routes", "port", "metadata", "ipv6", "metadata6", "upstream",
                                "cloud-init", "l3-agent"]
    assert all(line.split()[2:] == ["ok"] * 9 for line in lines[1:3])
    vm1, vm2 = st.vms
    assert f"{vm1.name}  ipv6        ok    EUI-64 {plan.eui64(plan.CIDR6, vm1.mac)}" in res.stdout
    assert f"{vm2.name}  ipv6        ok    stable privacy 2001:db8:16:" in res.stdout
    assert "metadata checked over IPv4 and IPv6 (fe80::a9fe:a9fe)" in res.stdout
    assert "mode: router (169.254.169.254 via router1's qr- device 172.16.1.2" in res.stdout
    status = provnet(ipv6_lab["path"], "lab", "status")
    assert "mode: router" in status.stdout and "IPv6 2001:db8:16::/64 (SLAAC)" in status.stdout
    assert "external-ra" in status.stdout and "STOPPED" not in status.stdout


def test_ipv6_each_vm_gets_its_own_metadata_and_the_stable_privacy_one_too(ipv6_lab):
    for vm in ipv6_lab["state"].vms:
        rc, body, status = curl(vm.namespace, "http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json", "-g")
        assert (rc, status) == (0, 200) and json.loads(body)["uuid"] == vm.instance_id
        addrs = in_ns(vm.namespace, "ip", "-6", "addr", "show", "dev", "eth0").stdout
        eui = plan.eui64("fe80::/64", vm.mac)
        if vm.addr_gen_mode == plan.ADDR_GEN_STABLE_PRIVACY:
            assert eui not in addrs  # nothing in its addresses tells its MAC: the proxy's neighbour read does
        else:
            assert eui in addrs


def test_ipv6_lab_down_leaves_nothing(ipv6_lab):
    res = provnet(ipv6_lab["path"], "lab", "down")
    assert res.returncode == 0, res.stderr
    st = ipv6_lab["state"]
    assert_nothing_left(st)
    assert not [ns for ns in netns.list_namespaces() if st.suffix in ns]
    assert "provnet-l3-" not in subprocess.run(["ip6tables-save"], capture_output=True, text=True).stdout


def test_bad_mode_is_a_usage_error(tmp_path):
    res = provnet(tmp_path, "lab", "up", "--mode", "bogus")
    assert res.returncode == 2 and "Invalid value for '--mode'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "lab").exists()  # nothing built, nothing written
