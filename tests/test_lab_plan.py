# The lab's pure parts: names, the seed's commands and routes, the check's judgements, state round trip, bad input.
from __future__ import annotations

import json
import subprocess

import pytest

from provnet.lab import check, plan, state
from provnet.lab.plan import Names
from provnet.lab.state import LabState, Vm

VM = Vm("vm1", "pnabc-vm1", "3f1c7e0e-1111-4a4a-9b9b-000000000001", "59bbcb56-8612-4f55-a9a4-0c8a7f1c2e11",
        "fa:16:3e:aa:bb:cc", "172.16.1.103", "pnt59bbcb56-86", "#!/bin/sh\necho hi\n")


def test_names_fit_linux_limits_and_carry_our_prefix():
    n = Names("pn1a2b3c")
    for link in (n.external_port, n.dhcp_port, Names.vm_port(VM.port_id), Names.router_port(VM.port_id)):
        assert link.startswith("pn") and len(link) <= 15
    assert n.fabric == "pn1a2b3c-fab" and n.vm(2) == "pn1a2b3c-vm2"


@pytest.mark.parametrize("bad", ["", "xx1234", "pn1234567", "pn-abc", "pn12 4"])
def test_names_reject_bad_suffix(bad):
    with pytest.raises(ValueError, match="suffix"):
        Names(bad)


@pytest.mark.parametrize("bad", [0, -1, 26, 1000])
def test_vms_out_of_range(bad):
    with pytest.raises(ValueError, match="--vms"):
        plan.parse_vms(bad)


def test_seed_commands_are_the_seeds():
    assert " ".join(plan.SEED_NET) == ("net-create phy_net -- --router:external=True --provider:network_type flat "
                                       "--provider:physical_network physnet1")
    assert " ".join(plan.SEED_SUBNET) == (
        "subnet-create --allocation-pool start=172.16.1.102,end=172.16.1.126 --gateway 172.16.1.2 phy_net "
        "172.16.1.101/24 --enable_dhcp=False --name=phy_subnet_without_dhcp")


def test_expected_routes_and_bad_ip():
    assert plan.expected_routes("172.16.1.103") == [
        ("0.0.0.0/0", "172.16.1.1"), ("169.254.169.254/32", "172.16.1.2"), ("172.16.1.0/24", None)]
    with pytest.raises(ValueError, match="not in"):
        plan.expected_routes("10.0.0.5")


def test_judge_lease():
    assert check.judge_lease(VM, {"ip": "172.16.1.103", "server": "172.16.1.99", "client": "udhcpc"},
                             ["172.16.1.103/24"]).ok
    assert "leased 172.16.1.100" in check.judge_lease(VM, {"ip": "172.16.1.100"}, ["172.16.1.100/24"]).detail
    assert not check.judge_lease(VM, {}, []).ok
    assert not check.judge_lease(VM, {"ip": "172.16.1.103"}, []).ok


def test_judge_routes_names_what_is_wrong():
    good = [("0.0.0.0/0", "172.16.1.1", "eth0"), ("169.254.169.254/32", "172.16.1.2", "eth0"),
            ("172.16.1.0/24", None, "eth0")]
    assert check.judge_routes(VM, good).ok
    bad = check.judge_routes(VM, [("0.0.0.0/0", "172.16.1.2", "eth0"), ("172.16.1.0/24", None, "eth0")])
    assert not bad.ok and "missing 0.0.0.0/0 via 172.16.1.1" in bad.detail and "extra 0.0.0.0/0 via 172.16.1.2" \
        in bad.detail


def test_judge_metadata_demands_own_instance():
    meta = (200, json.dumps({"uuid": VM.instance_id}))
    assert check.judge_metadata(VM, meta, (200, VM.user_data), (200, "i-00000001")).ok
    other = (200, json.dumps({"uuid": "someone-else"}))
    assert "expected" in check.judge_metadata(VM, other, (200, VM.user_data), (200, "i-1")).detail
    assert not check.judge_metadata(VM, (404, ""), (200, VM.user_data), (200, "i-1")).ok
    assert not check.judge_metadata(VM, meta, (200, "other user data"), (200, "i-1")).ok
    assert not check.judge_metadata(VM, (200, "not json"), (200, VM.user_data), (200, "i-1")).ok


def test_judge_upstream_and_cloud_init():
    assert check.judge_upstream((200, "upstream ok"), "198.51.100.1 via 172.16.1.1 dev eth0 src 172.16.1.103").ok
    assert not check.judge_upstream((200, "upstream ok"), "198.51.100.1 via 172.16.1.2 dev eth0").ok
    assert not check.judge_upstream((0, ""), "198.51.100.1 via 172.16.1.1 dev eth0").ok
    done = subprocess.CompletedProcess([], 0, json.dumps({"uuid": VM.instance_id, "userdata": VM.user_data}), "")
    assert check.judge_cloud_init(VM, done).ok
    assert not check.judge_cloud_init(VM, subprocess.CompletedProcess([], 1, "", "Traceback\nNonReadable: x")).ok
    assert not check.judge_cloud_init(VM, subprocess.CompletedProcess([], 0, "", "")).ok


def test_render_marks_failures():
    ok = check.Result(True, "fine")
    text = check.render([(VM, {c: ok for c in check.COLUMNS} | {"routes": check.Result(False, "missing x")})])
    assert "FAIL" in text.splitlines()[1] and "missing x" in text


def test_state_round_trip_and_corrupt_file(tmp_path):
    s = LabState(suffix="pnabc", vms=[VM], namespaces=["pnabc-fab"])
    state.save(str(tmp_path), s)
    assert state.load(str(tmp_path)) == s
    (tmp_path / "lab" / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a lab state file"):
        state.load(str(tmp_path))
    state.forget(str(tmp_path))
    assert state.load(str(tmp_path)) is None


def test_a_failing_provnet_verb_stops_the_lab_with_its_message(tmp_path):
    """The lab runs the real verbs on its own SQLite store; a refused one surfaces with the verb's own words."""
    from provnet.lab.build import Builder, LabError, write_config

    b = Builder(str(tmp_path), 1, "udhcpc", lambda line: None)
    b.dir.mkdir(parents=True)
    write_config(str(tmp_path), 8775)
    assert b.provnet_json("net-create", "n1")["name"] == "n1"
    with pytest.raises(LabError, match="missing argument NAME"):
        b.provnet("net-create")
    with pytest.raises(LabError, match="Unable to find network"):
        b.provnet("port-create", "nonexistent")
    with pytest.raises(LabError, match="not a valid IP subnet"):
        b.provnet("subnet-create", "n1", "300.1.1.0/24")
    assert (tmp_path / "lab" / "provnet.sqlite").exists()  # the lab's own store, never a real one


def test_builder_rejects_bad_arguments(tmp_path):
    from provnet.lab.build import Builder

    with pytest.raises(ValueError, match="--dhcp-client"):
        Builder(str(tmp_path), 1, "pump", print)
    with pytest.raises(ValueError, match="--vms"):
        Builder(str(tmp_path), 99, "udhcpc", print)
