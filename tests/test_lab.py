# The whole lab end to end, with udhcpc and with dhclient: `lab up --vms 3`, `lab check`, attacks from a VM, and
# `lab down` leaving nothing of ours (namespaces, links, iptables rules, processes). Everything here is real.
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import need_root, need_tool, unique

from provnet.dataplane import netns
from provnet.lab import state as lab_state

PROVNET = [str(Path(sys.executable).with_name("provnet"))]


def provnet(state_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*PROVNET, "--state-path", str(state_path), *args], capture_output=True, text=True,
                          timeout=timeout)


def in_ns(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def curl(ns: str, url: str, *extra: str) -> tuple[int, str, int]:
    """(curl exit code, body, HTTP status) from inside `ns`."""
    proc = in_ns(ns, "curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", *extra, url)
    body, _, code = proc.stdout.rpartition("\n")
    return proc.returncode, body, int(code) if code.isdigit() else 0


def lab_requirements(client: str) -> None:
    need_root()
    need_tool("ip", "iptables-restore", "curl", "busybox", "ss", "/usr/bin/python3")
    if client == "dhclient":
        need_tool("dhclient")


def assert_nothing_left(snapshot: lab_state.LabState) -> None:
    present = set(netns.list_namespaces())
    assert not present & set(snapshot.namespaces), "namespaces left behind"
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert snapshot.suffix not in host_links
    assert not any(vm.device in host_links for vm in snapshot.vms)
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "provnet-l3-" not in host_rules and "provnet-fw-" not in host_rules
    for proc in snapshot.processes:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # a zombie waiting for init to reap it has stopped running
        assert fields[0] == "Z" or int(fields[19]) != proc.start_time, f"{proc.name} (pid {proc.pid}) still runs"


@pytest.fixture(scope="module", params=["udhcpc", "dhclient"])
def lab(request, tmp_path_factory):
    client = request.param
    lab_requirements(client)
    path = tmp_path_factory.mktemp(f"lab-{client}")
    snapshot: list[lab_state.LabState] = []

    def cleanup():
        provnet(path, "lab", "down")
        for s in snapshot:  # belt and braces: never leave a namespace on the machine
            for ns in s.namespaces:
                netns.delete_namespace(ns)

    request.addfinalizer(cleanup)
    up = provnet(path, "lab", "up", "--vms", "3", "--dhcp-client", client)
    st = lab_state.load(str(path))
    if st is not None:
        snapshot.append(st)
    assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
    assert "[1/" in up.stderr and "phy_subnet_without_dhcp" in up.stderr  # progress shown, seed's commands run
    return {"path": path, "state": st, "client": client}


def test_check_passes(lab):
    res = provnet(lab["path"], "lab", "check")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["VM", "IP", "lease", "routes", "metadata", "upstream", "cloud-init"]
    assert all(line.split()[2:] == ["ok"] * 5 for line in lines[1:4])
    for vm in lab["state"].vms:
        assert f"{vm.ip} from 172.16.1.99 ({lab['client']})" in res.stdout


def test_status_lists_what_runs(lab):
    res = provnet(lab["path"], "lab", "status")
    assert res.returncode == 0
    assert "GONE" not in res.stdout and "STOPPED" not in res.stdout
    assert f"qrouter-{lab['state'].router_id}" in res.stdout


def test_each_vm_gets_only_its_own_metadata(lab):
    vms = lab["state"].vms
    uuids = []
    for vm in vms:
        rc, body, status = curl(vm.namespace, "http://169.254.169.254/openstack/latest/meta_data.json")
        assert (rc, status) == (0, 200)
        uuids.append(json.loads(body)["uuid"])
    assert uuids == [vm.instance_id for vm in vms]
    ids = [curl(vm.namespace, "http://169.254.169.254/latest/meta-data/instance-id")[1] for vm in vms]
    assert len(set(ids)) == len(vms)


def test_direct_connection_to_proxy_port_is_dropped(lab):
    vm = lab["state"].vms[0]
    rc, _, _ = curl(vm.namespace, "http://172.16.1.2:9697/openstack/latest/meta_data.json")
    assert rc == 28, "must time out (dropped by filter INPUT), not be answered or refused"


def test_no_header_gets_another_vms_metadata(lab):
    me, other = lab["state"].vms[0], lab["state"].vms[1]
    st = lab["state"]
    attempts = [
        ["-H", f"X-Forwarded-For: {other.ip}"],
        ["-H", f"x-forwarded-for: {other.ip}", "-H", f"X-Forwarded-For: {other.ip}"],
        ["-H", f"X-Instance-ID: {other.instance_id}", "-H", "X-Tenant-ID: fake_project_id",
         "-H", "X-Instance-ID-Signature: " + "0" * 64],
        ["-H", f"X-Neutron-Router-ID: {st.router_id}", "-H", f"X-Forwarded-For: {other.ip}"],
        ["-H", f"X-Neutron-Network-ID: {uuid.uuid4()}", "-H", f"X-NEUTRON-ROUTER-ID: {uuid.uuid4()}"],
        ["-H", f"X-Forwarded-For: {other.ip}, {other.ip}", "-H", f"X-Instance-Id: {other.instance_id}"],
    ]
    for extra in attempts:
        rc, body, status = curl(me.namespace, "http://169.254.169.254/openstack/latest/meta_data.json", *extra)
        assert other.instance_id not in body, extra
        if status == 200:
            assert json.loads(body)["uuid"] == me.instance_id, extra
        rc, body, status = curl(me.namespace, "http://169.254.169.254/openstack/latest/user_data", *extra)
        assert other.user_data not in body, extra


def test_vm_with_an_address_not_its_ports_gets_no_metadata(lab):
    vm = lab["state"].vms[2]
    # the VM adds an address that is no port's: anti-spoofing drops what it sends from it
    assert in_ns(vm.namespace, "ip", "addr", "add", "172.16.1.60/24", "dev", "eth0").returncode == 0
    try:
        rc, _, status = curl(vm.namespace, "http://169.254.169.254/openstack/latest/meta_data.json",
                             "--interface", "172.16.1.60")
        assert rc == 28 and status == 0
    finally:
        in_ns(vm.namespace, "ip", "addr", "del", "172.16.1.60/24", "dev", "eth0")
    # a host on the segment without a port (so no port firewall) at an unknown address: the agent's 404
    st = lab["state"]
    intruder, dev = unique("pn"), "pn" + uuid.uuid4().hex[:10]
    fabric = f"{st.suffix}-fab"
    try:
        netns.ensure_namespace(intruder)
        netns.ensure_veth(fabric, dev, intruder, "eth0")
        netns.attach_to_bridge(fabric, dev, "br-phy")
        netns.ensure_address(intruder, "eth0", "172.16.1.61", 24)
        netns.ensure_route(intruder, "169.254.169.254/32", "172.16.1.2")
        rc, body, status = curl(intruder, "http://169.254.169.254/openstack/latest/meta_data.json")
        assert status == 404
        assert all(v.instance_id not in body for v in st.vms)
    finally:
        netns.delete_link(fabric, dev)
        netns.delete_namespace(intruder)


def test_down_removes_everything(lab):
    res = provnet(lab["path"], "lab", "down")
    assert res.returncode == 0, res.stderr
    assert_nothing_left(lab["state"])
    again = provnet(lab["path"], "lab", "down")
    assert again.returncode == 0 and "no lab" in again.stdout


def test_up_after_a_crash_cleans_up_first(tmp_path):
    lab_requirements("udhcpc")
    env = {**os.environ, "PROVNET_STATE_PATH": str(tmp_path)}
    crashed = subprocess.Popen([*PROVNET, "lab", "up", "--vms", "1"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    first = None
    try:
        # kill `lab up` as soon as it has made a namespace
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and crashed.poll() is None:
            first = lab_state.load(str(tmp_path))
            if first and first.namespaces and netns.namespace_exists(first.namespaces[0]):
                break
            time.sleep(0.05)
        crashed.send_signal(signal.SIGKILL)
        crashed.wait()
        first = lab_state.load(str(tmp_path))
        assert first and first.namespaces, "the state file names what was made before the crash"
        up = provnet(tmp_path, "lab", "up", "--vms", "1")
        assert up.returncode == 0, up.stderr
        assert f"removed namespace {first.namespaces[0]}" in up.stderr
        assert not netns.namespace_exists(first.namespaces[0])
        second = lab_state.load(str(tmp_path))
        assert second is not None and second.suffix != first.suffix
    finally:
        provnet(tmp_path, "lab", "down")
        for s in filter(None, [first, lab_state.load(str(tmp_path))]):
            for ns in s.namespaces:
                netns.delete_namespace(ns)
    assert second is not None
    assert_nothing_left(second)


def test_bad_input_is_refused_clearly(tmp_path):
    res = provnet(tmp_path, "lab", "up", "--vms", "0")
    assert res.returncode == 2 and "--vms must be 1..25" in res.stderr
    res = provnet(tmp_path, "lab", "up", "--dhcp-client", "pump")
    assert res.returncode == 2 and "pump" in res.stderr
    res = provnet(tmp_path, "lab", "check")
    assert res.returncode == 1 and "no lab" in res.stderr
    res = provnet(tmp_path / ("x" * 100), "lab", "up", "--vms", "1")
    assert res.returncode == 1 and "too long for unix sockets" in res.stderr
    assert not (tmp_path / ("x" * 100)).exists()
    lab_state.save(str(tmp_path), lab_state.LabState(suffix="pnzzzz"))  # as left by a crash in `lab up`
    res = provnet(tmp_path, "lab", "check")
    assert res.returncode == 1 and "incomplete" in res.stderr
    (tmp_path / "lab" / "state.json").write_text("[]")
    res = provnet(tmp_path, "lab", "status")
    assert res.returncode == 1 and "not a lab state file" in res.stderr
    res = provnet(tmp_path / "lab" / "state.json", "lab", "status")  # a state path that is a file
    assert res.returncode == 1 and "cannot read" in res.stderr and "Traceback" not in res.stderr
    need_root()  # `lab down` asks for root before it reads the state file
    res = provnet(tmp_path, "lab", "down")
    assert res.returncode == 1 and "not a lab state file" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "lab" / "state.json").read_text() == "[]"  # kept for the operator to look at
