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
    links = (n.external_port, n.dhcp_port, n.dhcp_mgmt, n.controller_mgmt, n.host_uplink(8), n.host_mgmt(8),
             Names.tap(VM.port_id))
    for link in links:
        assert len(link) <= 15
        assert link.startswith("pn") or link == "tap59bbcb56-86"
    assert n.switch == "pn1a2b3c-sw" and n.vm(2) == "pn1a2b3c-vm2" and n.host_ns(1) == "pn1a2b3c-h1"
    assert Names.host(2) == "host2" and n.namespace_suffix(2) == "@pn1a2b3c-h2"


def test_hosts_and_the_spread_of_vms():
    assert [plan.vm_host(i, 2) for i in range(1, 6)] == [1, 2, 1, 2, 1]
    assert [plan.vm_host(i, 1) for i in range(1, 4)] == [1, 1, 1]
    for bad in (0, -1, 9):
        with pytest.raises(ValueError, match="--hosts must be 1..8"):
            plan.parse_hosts(bad)
    assert plan.api_url() == "http://10.0.0.10:9696" and plan.host_mgmt_ip(2) == "10.0.0.12"


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


def test_configs_are_what_deploy_md_writes(tmp_path):
    from provnet.config import load_config
    from provnet.lab.build import write_configs

    confs = write_configs(tmp_path, 2, Names("pnabc"))
    assert sorted(confs) == ["controller", "dhcp", "host1", "host2"]
    loaded = {name: load_config([str(path)]) for name, path in confs.items()}
    secrets = {c.get("metadata_proxy_shared_secret") for c in loaded.values() if c.get("metadata_proxy_shared_secret")}
    assert len(secrets) == 1 and len(secrets.pop()) == 32  # one random secret, the same on every machine
    ctl, h2 = loaded["controller"], loaded["host2"]
    assert (ctl.get("bind_host"), ctl.get("bind_port"), ctl.get("metadata_listen")) == ("10.0.0.10", 9696, "10.0.0.10")
    assert ctl.db_url == f"sqlite:///{tmp_path}/controller/provnet.sqlite"
    assert (h2.get("host"), h2.get("ovs.bridge_mappings"), h2.get("l3_agent.namespace_suffix")) == (
        "host2", {"physnet1": "br-phy"}, "@pnabc-h2")
    assert (h2.get("nova_metadata_host"), h2.state_path) == ("10.0.0.10", str(tmp_path / "hosts" / "host2"))
    assert all(path.stat().st_mode & 0o077 == 0 for path in confs.values())  # they hold the secret
    # without Keystone the controller's API is noauth on the lab's own management network, said so in its file
    assert (ctl.auth_strategy, ctl.noauth_allow_remote) == ("noauth", True)


def test_lab_up_keystone_puts_the_controllers_api_behind_keystone(tmp_path):
    from provnet.config import load_config
    from provnet.identity.keystone_admin import KeystoneAdmin
    from provnet.lab.build import write_configs
    from provnet.lab.keystone import LabKeystone

    ks = LabKeystone(tmp_path / "keystone", 35357, KeystoneAdmin("http://127.0.0.1:35357/v3", "x"), "s3cret",
                     tmp_path / "clouds.yaml")
    confs = write_configs(tmp_path, 1, Names("pnabc"), ks)
    ctl = load_config([str(confs["controller"])])
    assert (ctl.auth_strategy, ctl.noauth_allow_remote) == ("keystone", False)
    assert (ctl.get("keystone_authtoken.auth_url"), ctl.get("keystone_authtoken.username"),
            ctl.get("keystone_authtoken.password")) == ("http://127.0.0.1:35357/v3", "provnet-lab", "s3cret")
    for name in ("host1", "dhcp"):  # the agents' password is in clouds.yaml, never in their configuration
        assert "s3cret" not in confs[name].read_text()


def test_judge_port_and_l3():
    from provnet.model.resources import Agent, Port

    vm = Vm(**{**VM.__dict__, "host": "host1"})
    port = Port(id=vm.port_id, network_id="n", mac_address=vm.mac, binding_host_id="host1", status="ACTIVE")
    assert check.judge_port(vm, port).ok
    assert "DOWN" in check.judge_port(vm, Port(**{**port.__dict__, "status": "DOWN"})).detail
    assert "bound to host2" in check.judge_port(vm, Port(**{**port.__dict__, "binding_host_id": "host2"})).detail
    assert not check.judge_port(vm, None).ok
    a1, a2 = Agent(id="a1", host="host1", agent_type="L3 agent"), Agent(id="a2", host="host2", agent_type="L3 agent")
    where = {"host1": "qrouter-r@pnabc-h1", "host2": "qrouter-r@pnabc-h2"}
    ok = check.judge_l3([a1], where, {"qrouter-r@pnabc-h1"}, {"a1", "a2"})
    assert ok.ok and ok.detail == "host1's L3 agent (qrouter-r@pnabc-h1)"
    assert "dead" in check.judge_l3([a1], where, {"qrouter-r@pnabc-h1"}, {"a2"}).detail
    assert "does not exist" in check.judge_l3([a1], where, set(), {"a1"}).detail
    assert "no L3 agent" in check.judge_l3([], where, set(), set()).detail
    assert "2 L3 agents" in check.judge_l3([a1, a2], where, set(), {"a1", "a2"}).detail


def test_an_older_labs_state_file_still_loads(tmp_path):
    old = {"suffix": "pnabc", "namespaces": ["pnabc-fab"], "processes": [], "vms": [{**VM.__dict__, "host": "h"}],
           "router_id": "r", "router_port_id": "p", "metadata_api_port": 1, "complete": True, "gone_field": 1}
    del old["vms"][0]["host"]
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "state.json").write_text(json.dumps(old))
    loaded = state.load(str(tmp_path))
    assert loaded is not None and loaded.namespaces == ["pnabc-fab"] and loaded.hosts == []


def test_supervisor_services_are_checked_and_die_with_it():
    from provnet.lab.supervisor import ControlError, Service

    s = Service.from_json({"name": "host1-agent", "argv": ["provnet", "agent"], "namespace": "pnabc-h1"})
    assert s.command() == ["setpriv", "--pdeathsig", "TERM", "--", "nsenter", "--net=/var/run/netns/pnabc-h1",
                           "provnet", "agent"]
    assert Service("x", ["true"]).command() == ["setpriv", "--pdeathsig", "TERM", "--", "true"]
    for bad in (None, [], {"name": "x"}, {"name": "", "argv": ["a"]}, {"name": "x", "argv": []},
                {"name": "x", "argv": [1]}, {"name": "../x", "argv": ["a"]}, {"name": "x", "argv": ["a"],
                                                                              "namespace": 3},
                {"name": "x", "argv": ["a"], "notify": "yes"}, {"name": "x", "argv": ["a"], "env": ["A=1"]},
                {"name": "x", "argv": ["a"], "env": {"A": 1}}, {"name": "x", "argv": ["a"], "env": {"A=B": "1"}},
                {"name": "x", "argv": ["a"], "env": {"": "1"}}):
        with pytest.raises(ControlError):
            Service.from_json(bad)
    with_env = Service("x", ("true",), "pnabc-h1", True, {"OS_CLIENT_CONFIG_FILE": "/lab/clouds.yaml"})
    assert Service.from_json(with_env.to_json()) == with_env  # what the supervisor is sent is what it runs
    assert Service.from_json({"name": "x", "argv": ["a"]}).env == {}


def test_the_lab_builds_no_dataplane_of_its_own():
    """The lab never makes a qrouter namespace, a qr- device, a metadata rule, a port firewall rule or a proxy:
    no module of it imports the code that does (the agents run it, as on real hosts)."""
    import ast
    from pathlib import Path

    import provnet.lab

    forbidden = {"provnet.dataplane.l3", "provnet.dataplane.firewall", "provnet.dataplane.iptables",
                 "provnet.agents"}
    for path in Path(provnet.lab.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module \
                else []
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path.name, name)


def test_builder_rejects_bad_arguments(tmp_path):
    from provnet.lab.build import Builder

    with pytest.raises(ValueError, match="--dhcp-client"):
        Builder(str(tmp_path), 1, "pump", print)
    with pytest.raises(ValueError, match="--vms"):
        Builder(str(tmp_path), 99, "udhcpc", print)
    with pytest.raises(ValueError, match="--hosts"):
        Builder(str(tmp_path), 1, "udhcpc", print, hosts=0)


def test_the_drawing_marks_what_is_down_in_red():
    import xml.etree.ElementTree as ET

    from provnet.lab.draw import Box, Line, Topology, render_svg

    boxes = [Box("pnabc-h1", "host1 (pnabc-h1)", "host", True, [Line("eth1 aa:bb on br-phy"),
                                                                  Line("[host1-agent] pid - STOPPED", bad=True)]),
             Box("pnabc-vm1", "pnabc-vm1 on host1", "vm", False, [Line("namespace GONE", bad=True)], via_host="host1"),
             Box("pnabc-ctl", "controller <&> \"x\"", "controller", True, [Line("x" * 200)], column=1, mgmt=True)]
    svg = render_svg(Topology("provnet lab pnabc", "sub", boxes, ["host1", "rest"], "pnabc-sw", False))
    root = ET.fromstring(svg.split("?>", 1)[1])  # well-formed, whatever the text holds
    ns = "{http://www.w3.org/2000/svg}"
    red = [t.text for t in root.iter(f"{ns}text") if t.get("fill") == "#c62828"]
    assert red == ["[host1-agent] pid - STOPPED", "namespace GONE"]
    gone = next(g for g in root.iter(f"{ns}g") if g.get("data-namespace") == "pnabc-vm1")
    assert gone.find(f"{ns}rect").get("stroke") == "#c62828"
    assert any("controller <&> \"x\"" == t.text for t in root.iter(f"{ns}text"))
    assert max(len(t.text or "") for t in root.iter(f"{ns}text") if t.text and t.text.startswith("x")) == 72
    assert any("pnabc-sw: namespace GONE" in (t.text or "") for t in root.iter(f"{ns}text"))


def test_modes_and_bad_values():
    assert plan.MODES == ("router", "network") and plan.parse_mode("network") == "network"
    for bad in ("bogus", "auto", "", "Router"):
        with pytest.raises(ValueError, match="--mode must be router or network"):
            plan.parse_mode(bad)
    # network mode: no router, the external router is the subnet's gateway
    assert plan.NETWORK_MODE_SUBNET_BODY["gateway_ip"] == plan.EXTERNAL_ROUTER_IP
    assert {k: v for k, v in plan.NETWORK_MODE_SUBNET_BODY.items() if k != "gateway_ip"} == \
        {k: v for k, v in plan.SEED_SUBNET_BODY.items() if k != "gateway_ip"}
    from provnet.dataplane.metadata_ns import metadata_namespace

    assert plan.metadata_namespace("n1", "@pnabc-h2") == metadata_namespace("n1", "@pnabc-h2") == \
        "provnet-meta-n1@pnabc-h2"  # the L3 agent's naming
    assert plan.SEED_SUBNET6_BODY["ipv6_address_mode"] == "slaac" and "ipv6_ra_mode" not in plan.SEED_SUBNET6_BODY


def test_network_mode_routes_go_via_the_metadata_port():
    assert plan.expected_routes("172.16.1.103", "172.16.1.102") == [
        ("0.0.0.0/0", "172.16.1.1"), ("169.254.169.254/32", "172.16.1.102"), ("172.16.1.0/24", None)]
    with pytest.raises(ValueError, match="not in"):
        plan.expected_routes("172.16.1.103", "10.0.0.1")
    net = LabState(suffix="pnabc", mode="network", metadata_ip="172.16.1.102")
    assert net.metadata_hop == "172.16.1.102" and LabState(suffix="pnabc").metadata_hop == "172.16.1.2"
    good = [("0.0.0.0/0", "172.16.1.1", "eth0"), ("169.254.169.254/32", "172.16.1.102", "eth0"),
            ("172.16.1.0/24", None, "eth0")]
    assert check.judge_routes(VM, good, "172.16.1.102").ok
    bad = check.judge_routes(VM, good, plan.ROUTER_IP)  # router mode's route where network mode's is wanted
    assert not bad.ok and "missing 169.254.169.254/32 via 172.16.1.2" in bad.detail


def test_eui64_and_addr_gen_modes():
    assert plan.eui64("fe80::/64", "fa:16:3e:aa:bb:cc") == "fe80::f816:3eff:feaa:bbcc"
    assert plan.eui64(plan.CIDR6, "00:00:5e:00:53:01") == "2001:db8:16:0:200:5eff:fe00:5301"
    with pytest.raises(ValueError, match="not a MAC"):
        plan.eui64("fe80::/64", "fa:16:3e")
    assert [plan.addr_gen_mode(i) for i in (1, 2, 3, 4)] == [0, 2, 0, 2]


def test_judge_ipv6_tells_eui64_from_stable_privacy():
    eui = Vm(**{**VM.__dict__, "addr_gen_mode": 0})
    stable = Vm(**{**VM.__dict__, "addr_gen_mode": 2})
    mine = ["2001:db8:16:0:f816:3eff:feaa:bbcc", "fe80::f816:3eff:feaa:bbcc"]
    private = ["2001:db8:16:0:1c2d:9a3b:4e5f:6a7b", "fe80::8d3c:1f2e:3a4b:5c6d"]
    assert check.judge_ipv6(eui, mine).ok and "EUI-64" in check.judge_ipv6(eui, mine).detail
    assert check.judge_ipv6(stable, private).ok and "stable privacy" in check.judge_ipv6(stable, private).detail
    assert "not the EUI-64" in check.judge_ipv6(eui, private).detail
    assert "is EUI-64" in check.judge_ipv6(stable, mine).detail
    assert "want a link-local one" in check.judge_ipv6(eui, mine[:1]).detail  # no link-local
    assert not check.judge_ipv6(eui, mine[1:]).ok  # no address from the advertised prefix
    assert not check.judge_ipv6(eui, []).ok


def test_judge_metadata6_and_meta_ns():
    meta = (200, json.dumps({"uuid": VM.instance_id}))
    reader = subprocess.CompletedProcess([], 0, json.dumps({"uuid": VM.instance_id, "userdata": VM.user_data}), "")
    assert check.judge_metadata6(VM, meta, reader).ok
    assert "HTTP 404" in check.judge_metadata6(VM, (404, ""), reader).detail
    assert "no response" in check.judge_metadata6(VM, (0, ""), reader).detail
    assert "expected" in check.judge_metadata6(VM, (200, json.dumps({"uuid": "other"})), reader).detail
    failed = subprocess.CompletedProcess([], 1, "", "UrlError: [Errno 101]")
    assert "cloud-init at http://[fe80::a9fe:a9fe%eth0]" in check.judge_metadata6(VM, meta, failed).detail
    vm = Vm(**{**VM.__dict__, "host": "host1"})
    ns = "provnet-meta-n@pnabc-h1"
    assert check.judge_meta_ns(vm, ns, {ns}, True).detail == f"host1's L3 agent ({ns})"
    assert "does not exist on host1" in check.judge_meta_ns(vm, ns, set(), False).detail
    assert "no proxy listens" in check.judge_meta_ns(vm, ns, {ns}, False).detail


def test_columns_and_the_mode_line_follow_the_lab():
    router = LabState(suffix="pnabc")
    assert check.columns(router) == check.COLUMNS  # as before: router mode, IPv4
    net6 = LabState(suffix="pnabc", mode="network", ipv6=True, metadata_ip="172.16.1.102")
    assert check.columns(net6) == ("lease", "routes", "port", "metadata", "ipv6", "metadata6", "upstream",
                                   "cloud-init", "meta-ns")
    assert check.describe_mode(router) == ("mode: router (169.254.169.254 via router1's qr- device 172.16.1.2, "
                                           "its L3 agent's proxy); metadata checked over IPv4")
    line = check.describe_mode(net6)
    assert line.startswith("mode: network (no router;") and "172.16.1.102" in line
    assert line.endswith("metadata checked over IPv4 and IPv6 (fe80::a9fe:a9fe)")


def test_every_machine_gets_the_labs_metadata_mode(tmp_path):
    from provnet.config import load_config
    from provnet.lab.build import write_configs

    for mode in plan.MODES:
        confs = write_configs(tmp_path / mode, 2, Names("pnabc"), mode=mode)
        assert {name: load_config([str(path)]).get("metadata.mode") for name, path in confs.items()} == \
            dict.fromkeys(("controller", "dhcp", "host1", "host2"), mode)


def test_ra_only_dnsmasq_and_guest_secret(tmp_path):
    from provnet.lab.build import ra_argv

    argv = ra_argv(tmp_path)
    assert argv[0] == "dnsmasq" and "--keep-in-foreground" in argv and "--port=0" in argv
    assert "--enable-ra" in argv and any(a.startswith("--dhcp-range=::,constructor:eth0,ra-only") for a in argv)
    assert "--conf-file=/dev/null" in argv  # nothing from the machine's /etc/dnsmasq.conf


def test_builder_rejects_a_bad_mode(tmp_path):
    from provnet.lab.build import Builder

    with pytest.raises(ValueError, match="--mode must be router or network, got 'bogus'"):
        Builder(str(tmp_path), 1, "udhcpc", print, mode="bogus")


def test_cli_mode_bogus_is_a_usage_error():
    from click.testing import CliRunner

    from provnet.cli import main

    res = CliRunner().invoke(main, ["lab", "up", "--mode", "bogus"])
    assert res.exit_code == 2 and "Invalid value for '--mode'" in res.output and "'bogus'" in res.output
    assert "Traceback" not in res.output
    helped = CliRunner().invoke(main, ["lab", "up", "--help"])
    assert "--mode [router|network]" in helped.output and "--ipv6" in helped.output


def test_an_older_labs_state_is_router_mode_ipv4(tmp_path):
    old = {"suffix": "pnabc", "vms": [{k: v for k, v in VM.__dict__.items() if k != "addr_gen_mode"}]}
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "state.json").write_text(json.dumps(old))
    loaded = state.load(str(tmp_path))
    assert loaded is not None and (loaded.mode, loaded.ipv6, loaded.vms[0].addr_gen_mode) == ("router", False, 0)
