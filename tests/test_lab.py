# The whole lab end to end, with udhcpc and with dhclient: `lab up --hosts 2 --vms 3` (the agents build the
# dataplane), `lab check`, attacks from a VM, a kill -9 under the supervisor, `lab failover`, and `lab down` leaving
# nothing of ours (namespaces, links, iptables rules, processes). Everything here is real.
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
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
            for ns in netns.list_namespaces():
                if s.suffix in ns:
                    netns.delete_namespace(ns)

    request.addfinalizer(cleanup)
    up = provnet(path, "lab", "up", "--hosts", "2", "--vms", "3", "--dhcp-client", client)
    st = lab_state.load(str(path))
    if st is not None:
        snapshot.append(st)
    assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
    assert "[1/" in up.stderr and "phy_subnet_without_dhcp" in up.stderr  # progress shown, the seed's calls
    return {"path": path, "state": st, "client": client}


def services(lab) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((lab["path"] / "lab" / "services.json").read_text())["services"]}


def ctl_cli(lab, *args: str) -> subprocess.CompletedProcess:
    """The provnet CLI run on the controller against its API, as an operator there would."""
    st = lab["state"]
    return in_ns(st.controller, *PROVNET, "--url", st.api_url, *args, timeout=60)


def test_check_passes(lab):
    res = provnet(lab["path"], "lab", "check")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["VM", "IP", "lease", "routes", "port", "metadata", "upstream", "cloud-init",
                                "l3-agent"]
    assert all(line.split()[2:] == ["ok"] * 7 for line in lines[1:4])
    for vm in lab["state"].vms:
        assert f"{vm.ip} from 172.16.1.99 ({lab['client']})" in res.stdout
        assert f"{vm.name}  port        ok    ACTIVE on {vm.host}" in res.stdout
    assert res.stdout.count("host1's L3 agent (qrouter-") == 3  # equal load: the first host by name


def test_vms_spread_over_the_hosts_and_active_in_port_list(lab):
    st = lab["state"]
    assert [vm.host for vm in st.vms] == ["host1", "host2", "host1"]
    listed = ctl_cli(lab, "port-list", "-f", "json", "-c", "id", "-c", "status", "-c", "binding:host_id",
                     "-c", "device_owner")
    assert listed.returncode == 0, listed.stderr
    ports = {p["id"]: p for p in json.loads(listed.stdout)}
    for vm in st.vms:
        assert (ports[vm.port_id]["status"], ports[vm.port_id]["binding:host_id"]) == ("ACTIVE", vm.host)
    assert ports[st.router_port_id]["status"] == "ACTIVE"  # the router's device, wired by host1's L2 agent
    agents = json.loads(ctl_cli(lab, "agent-list", "-f", "json").stdout)
    assert sorted((a["host"], a["agent_type"], a["alive"]) for a in agents) == [
        ("host1", "L3 agent", True), ("host1", "Open vSwitch agent", True),
        ("host2", "L3 agent", True), ("host2", "Open vSwitch agent", True)]


def test_the_agents_built_the_dataplane_not_the_lab(lab):
    st = lab["state"]
    assert not [ns for ns in st.namespaces if ns.startswith("qrouter-")]  # none of the lab's own making
    router_ns = f"qrouter-{st.router_id}{st.host('host1').namespace_suffix}"
    assert netns.namespace_exists(router_ns)
    logs = lab["path"] / "lab" / "logs"
    assert f"router {st.router_id}: namespace {router_ns}" in (logs / "host1-l3-agent.log").read_text()
    for vm in st.vms:
        assert f"device {vm.device} is port {vm.port_id}: ACTIVE" in (logs / f"{vm.host}-agent.log").read_text()
        rules = in_ns(st.host(vm.host).namespace, "iptables-save", "-t", "filter").stdout
        assert f"-s {vm.ip}/32 -m mac --mac-source {vm.mac}" in rules.lower()


def test_status_lists_what_runs(lab):
    res = provnet(lab["path"], "lab", "status")
    assert res.returncode == 0, res.stderr
    assert "GONE" not in res.stdout and "STOPPED" not in res.stdout and "NOT ANSWERING" not in res.stdout
    assert f"qrouter-{lab['state'].router_id}" in res.stdout and "router1 hosted by host1" in res.stdout
    for name in ("controller-serve", "host1-agent", "host2-l3-agent", "dhcp-server", "host1 metadata proxy"):
        assert name in res.stdout


def test_status_svg_draws_every_namespace_with_its_devices(lab, tmp_path):
    out = tmp_path / "lab.svg"
    res = provnet(lab["path"], "lab", "status", "--format", "svg", "-o", str(out))
    assert res.returncode == 0, res.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    drawn = {g.get("data-namespace") for g in root.iter("{http://www.w3.org/2000/svg}g")}
    st = lab["state"]
    ours = [ns for ns in netns.list_namespaces() if st.suffix in ns]
    assert len(ours) >= 11 and any(ns.startswith("qrouter-") for ns in ours)
    for ns in ours:  # every namespace of the lab, the agents' qrouter- one too, drawn and named
        assert ns in drawn, ns
        assert any(ns in t for t in texts), ns
    for vm in st.vms:
        assert any(t.startswith(f"eth0 {vm.mac} {vm.ip}/24") for t in texts), vm.name
        assert any(t.startswith(f"port {vm.port_id[:8]}... ACTIVE (binding:host_id {vm.host})") for t in texts)
        assert any(t.startswith(f"{vm.device} ") and t.endswith(" on br-phy") for t in texts), vm.device
    assert "route 169.254.169.254/32 via 172.16.1.2 dev eth0" in texts
    assert "router1 hosted here by host1's L3 agent" in texts
    assert any(t.startswith("qr-") and "172.16.1.2/24" in t for t in texts)
    assert not [t for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("fill") == "#c62828"]  # all up


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
    vm = lab["state"].vms[1]  # on host2: crosses the provider segment to the router on host1
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
    # the VM adds an address that is no port's: its host's L2 agent's anti-spoofing drops what it sends from it
    assert in_ns(vm.namespace, "ip", "addr", "add", "172.16.1.60/24", "dev", "eth0").returncode == 0
    try:
        rc, _, status = curl(vm.namespace, "http://169.254.169.254/openstack/latest/meta_data.json",
                             "--interface", "172.16.1.60")
        assert rc == 28 and status == 0
    finally:
        in_ns(vm.namespace, "ip", "addr", "del", "172.16.1.60/24", "dev", "eth0")
    # a box on the provider segment without a port (so no port firewall) at an unknown address: the agent's 404
    st = lab["state"]
    intruder, dev = unique("pn"), "pn" + uuid.uuid4().hex[:10]
    switch = f"{st.suffix}-sw"
    try:
        netns.ensure_namespace(intruder)
        netns.ensure_veth(switch, dev, intruder, "eth0")
        netns.attach_to_bridge(switch, dev, "provider")
        netns.ensure_address(intruder, "eth0", "172.16.1.61", 24)
        netns.ensure_route(intruder, "169.254.169.254/32", "172.16.1.2")
        rc, body, status = curl(intruder, "http://169.254.169.254/openstack/latest/meta_data.json")
        assert status == 404
        assert all(v.instance_id not in body for v in st.vms)
    finally:
        netns.delete_link(switch, dev)
        netns.delete_namespace(intruder)


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_status_tells_the_truth_after_a_kill_9(lab):
    before = services(lab)
    victim = before["host2-agent"]
    os.kill(victim["pid"], signal.SIGKILL)
    _wait(lambda: services(lab)["host2-agent"]["pid"] not in (None, victim["pid"]) and
          services(lab)["host2-agent"]["ready"], 60, "the L2 agent restarted by the supervisor")
    now = services(lab)["host2-agent"]
    res = provnet(lab["path"], "lab", "status")
    line = next(x for x in res.stdout.splitlines() if x.strip().startswith("host2-agent "))
    assert f"pid {now['pid']}" in line and "running" in line and "1 restart(s)" in line, line
    assert "STOPPED" not in res.stdout
    assert provnet(lab["path"], "lab", "check").returncode == 0  # nothing flipped while it was away


def test_a_restart_by_hand_is_shown_as_running(lab):
    before = services(lab)["host1-l3-agent"]
    res = provnet(lab["path"], "lab", "restart", "host1-l3-agent")
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout.split("process ")[1])
    assert pid != before["pid"] and os.path.exists(f"/proc/{pid}")
    _wait(lambda: services(lab)["host1-l3-agent"]["pid"] == pid and services(lab)["host1-l3-agent"]["ready"], 60,
          "the restarted L3 agent ready")
    line = next(x for x in provnet(lab["path"], "lab", "status").stdout.splitlines()
                if x.strip().startswith("host1-l3-agent "))
    assert f"pid {pid}" in line and "running" in line, line
    assert provnet(lab["path"], "lab", "check").returncode == 0  # it adopted the router: VMs still served
    bad = provnet(lab["path"], "lab", "restart", "nosuch")
    assert bad.returncode == 1 and "no service named 'nosuch'" in bad.stderr and "Traceback" not in bad.stderr


def test_failover_moves_the_router_and_every_vm_is_served_again(lab):
    res = provnet(lab["path"], "lab", "failover", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "router1 moved from host1 to host2" in res.stdout
    seconds = float(res.stdout.split("every VM served again after ")[1].split(" s")[0])
    print(f"lab failover ({lab['client']}): every VM served again after {seconds:.1f} s "
          "(agent_down_time 10 s, report_interval 3 s)")
    checked = provnet(lab["path"], "lab", "check")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.count("host2's L3 agent (qrouter-") == 3
    st = lab["state"]
    assert not netns.namespace_exists(f"qrouter-{st.router_id}{st.host('host1').namespace_suffix}")
    assert services(lab)["host1-l3-agent"]["state"] == "running"  # started again after the failure


def test_down_removes_everything(lab):
    pids = [s["pid"] for s in services(lab).values() if s.get("pid")]
    res = provnet(lab["path"], "lab", "down")
    assert res.returncode == 0, res.stderr
    assert_nothing_left(lab["state"])
    assert not [ns for ns in netns.list_namespaces() if lab["state"].suffix in ns]  # the agents' too
    assert not [p for p in pids if Path(f"/proc/{p}").exists() and
                Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
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
    res = provnet(tmp_path, "lab", "up", "--hosts", "9")
    assert res.returncode == 2 and "--hosts must be 1..8" in res.stderr
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
