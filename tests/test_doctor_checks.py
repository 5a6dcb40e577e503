# Every doctor check, pure: a correct setup yields nothing; one change each triggers exactly the check named.
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from provnet.config import load_config
from provnet.doctor import dnsmasq as dm
from provnet.doctor.findings import Finding, has_error, render_json, render_table
from provnet.doctor.ini import Location, parse_ini
from provnet.doctor.inputs import Inputs, Snapshot
from provnet.doctor.iptables import parse_iptables_save
from provnet.doctor.localconf import parse_local_conf
from provnet.doctor.run import run_checks
from provnet.model.resources import (
    Agent,
    AllocationPool,
    FixedIP,
    HostRoute,
    Network,
    Port,
    Router,
    Subnet,
)

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
MAC = "fa:16:3e:79:1e:2c"

GOOD_FILES = {
    "neutron.conf": "[DEFAULT]\nagent_down_time = 75\ndhcp_agent_notification = False\n[agent]\nreport_interval = 30\n",
    "ml2_conf.ini": "[ml2]\ntype_drivers = local,flat,vlan\ntenant_network_types = vlan\n"
                    "mechanism_drivers = openvswitch\n[ml2_type_flat]\nflat_networks = physnet1\n"
                    "[ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:100:199\n",
    "openvswitch_agent.ini": "[ovs]\nbridge_mappings = physnet1:br-phy\n",
    "dhcp_agent.ini": "[DEFAULT]\nenable_isolated_metadata = False\nenable_metadata_network = False\n",
    "l3_agent.ini": "[DEFAULT]\nenable_metadata_proxy = True\n",
    "metadata_agent.ini": "[DEFAULT]\nmetadata_proxy_shared_secret = s3cret\n",
    "nova.conf": "[neutron]\nservice_metadata_proxy = True\nmetadata_proxy_shared_secret = s3cret\n",
}
GOOD_OPTS = ("tag:tag0,option:classless-static-route,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n"
             "tag:tag0,249,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1\n"
             "tag:tag0,option:router,172.16.1.1\n")
GOOD_CMDLINE = (f"dnsmasq -i br-phy --dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0,2h "
                f"--dhcp-host={MAC},172.16.1.103")
GOOD_RULES = ("*filter\n"
              "-A neutron-openvswi-ivmport-000 -d 172.16.1.103/32 -p udp -m udp --sport 67 --dport 68 -j RETURN\n"
              "-A neutron-openvswi-ivmport-000 -d 255.255.255.255/32 -p udp -m udp --sport 67 --dport 68 -j RETURN\n"
              "-A neutron-openvswi-ivmport-000 -j neutron-openvswi-sg-fallback\n"
              "-A neutron-openvswi-sg-fallback -j DROP\nCOMMIT\n")


def good_snapshot() -> Snapshot:
    net = Network(id="net-1", name="phy_net", router_external=True, network_type="flat",
                  physical_network="physnet1", subnets=["sub-1"])
    sub = Subnet(id="sub-1", network_id="net-1", cidr="172.16.1.0/24", name="phy_subnet", gateway_ip="172.16.1.2",
                 allocation_pools=[AllocationPool("172.16.1.102", "172.16.1.126")], enable_dhcp=False,
                 host_routes=[HostRoute("0.0.0.0/0", "172.16.1.1")])
    rport = Port(id="rport-1", network_id="net-1", mac_address="fa:16:3e:00:00:02",
                 fixed_ips=[FixedIP("sub-1", "172.16.1.2")], device_owner="network:router_interface",
                 device_id="router-1")
    vm = Port(id="vmport-0001", network_id="net-1", mac_address=MAC, fixed_ips=[FixedIP("sub-1", "172.16.1.103")],
              device_owner="compute:nova", device_id="inst-1", binding_host_id="compute1", binding_vif_type="ovs",
              status="ACTIVE")
    agent = Agent(id="agent-1", host="compute1", configurations={"bridge_mappings": {"physnet1": "br-phy"}},
                  heartbeat_timestamp=NOW - timedelta(seconds=10))
    return Snapshot([net], [sub], [rport, vm], [Router(id="router-1", name="r1")], [agent])


@dataclass
class Spec:
    files: dict[str, str] = field(default_factory=lambda: dict(GOOD_FILES))
    local_conf: str | None = None
    opts: str = GOOD_OPTS
    cmdline: str = GOOD_CMDLINE
    rules: str | None = GOOD_RULES
    dhcp_server: str | None = "172.16.1.99"
    provnet: str | None = None  # provnet.conf text
    snapshot: Snapshot | None = field(default_factory=good_snapshot)


def build(spec: Spec, tmp_path=None) -> Inputs:
    cfg = dm.parse_opts_file(spec.opts, "opts")
    cfg.extend(dm.parse_cmdline(spec.cmdline, Location("dnsmasq.cmdline", 1)))
    inputs = Inputs(files={kind: parse_ini(text, kind) for kind, text in spec.files.items()},
                    local_conf=parse_local_conf(spec.local_conf, "local.conf") if spec.local_conf else None,
                    dnsmasq=cfg, iptables=parse_iptables_save(spec.rules, "rules") if spec.rules else None,
                    dhcp_server_ip=spec.dhcp_server, snapshot=spec.snapshot, now=NOW)
    if spec.provnet is not None:
        assert tmp_path is not None
        path = tmp_path / "provnet.conf"
        path.write_text(spec.provnet)
        inputs.provnet = load_config(files=[path], env={})
        inputs.provnet_files = [parse_ini(spec.provnet, str(path))]
    return inputs


def findings_of(spec: Spec, tmp_path=None) -> list[Finding]:
    return run_checks(build(spec, tmp_path))


def test_correct_setup_has_no_findings():
    assert findings_of(Spec()) == []


def test_correct_provnet_config_has_no_findings(tmp_path):
    spec = Spec(provnet="[DEFAULT]\nmetadata_proxy_shared_secret = s3cret\n")
    assert findings_of(spec, tmp_path) == []


# ---- mutations: each must trigger its check id (at the location given) -------------------------------------------

def _file(kind: str, text: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        spec.files[kind] = text
    return mutate


def _sed(kind: str, old: str, new: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        assert old in spec.files[kind]
        spec.files[kind] = spec.files[kind].replace(old, new)
    return mutate


def _snap(fn: Callable[[Snapshot], None]) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        assert spec.snapshot is not None
        fn(spec.snapshot)
    return mutate


def _set(attr: str, value) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        setattr(spec, attr, value)
    return mutate


def _agent_dead(s: Snapshot) -> None:
    s.agents[0].heartbeat_timestamp = NOW - timedelta(seconds=200)


def _agent_unmapped(s: Snapshot) -> None:
    s.agents[0].configurations = {"bridge_mappings": {"public": "br-ex"}}


def _port_failed(s: Snapshot) -> None:
    s.ports[1].binding_vif_type = "binding_failed"
    s.ports[1].binding_failure_reason = "no agent on host compute1"


def _vxlan_network(s: Snapshot) -> None:
    s.networks.append(Network(id="net-2", name="tun", network_type="vxlan", segmentation_id=5))


def _vlan_on(physnet: str) -> Callable[[Snapshot], None]:
    def add(s: Snapshot) -> None:
        s.networks.append(Network(id="net-3", name="v", network_type="vlan", physical_network=physnet,
                                  segmentation_id=120))
        s.agents[0].configurations["bridge_mappings"][physnet] = "br-x"
    return add


def _flat_physnet2(s: Snapshot) -> None:
    s.networks[0].physical_network = "physnet2"
    s.agents[0].configurations["bridge_mappings"]["physnet2"] = "br-2"


def _no_router(s: Snapshot) -> None:
    del s.ports[0]


def _dhcp_on(s: Snapshot) -> None:
    s.subnets[0].enable_dhcp = True


def _subnet_default_via_gateway(s: Snapshot) -> None:
    s.subnets[0].host_routes = []


def _router_elsewhere(s: Snapshot) -> None:
    s.ports[0].fixed_ips = [FixedIP("sub-1", "172.16.1.3")]


def _metadata_port(s: Snapshot) -> None:
    """provnet's network mode: the router gone, the registry's metadata port on the subnet instead."""
    _no_router(s)
    s.ports.append(Port(id="mdport-1", network_id="net-1", mac_address="fa:16:3e:00:00:0a",
                        fixed_ips=[FixedIP("sub-1", "172.16.1.102")], device_owner="network:distributed",
                        device_id="provnet-metadata-net-1"))


def _no_vm_ports(s: Snapshot) -> None:
    del s.ports[1]


def _both(*mutations: Callable[[Spec], None]) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        for m in mutations:
            m(spec)
    return mutate


CASES: list[tuple[str, str, Callable[[Spec], None], str]] = [
    # (check id, severity, mutation, expected location)
    ("config.parse", "error", _file("l3_agent.ini", "[DEFAULT\nenable_metadata_proxy = True\n"), "l3_agent.ini:1"),
    ("config.duplicate-key", "warning", _sed("neutron.conf", "[agent]", "agent_down_time = 90\n[agent]"),
     "neutron.conf:4"),
    ("config.bad-value", "error", _sed("l3_agent.ini", "= True", "= True  # serve metadata"), "l3_agent.ini:2"),
    ("agent.down-time", "error", _sed("neutron.conf", "agent_down_time = 75", "agent_down_time = 20"),
     "neutron.conf:2"),
    ("agent.dead", "error", _snap(_agent_dead), "registry"),
    ("agent.bridge-mappings", "error", _file("openvswitch_agent.ini", "[ovs]\nintegration_bridge = br-int\n"),
     "openvswitch_agent.ini:1"),
    ("binding.physnet-unmapped", "error", _snap(_agent_unmapped), "registry"),
    ("binding.port-failed", "error", _snap(_port_failed), "registry"),
    ("ml2.type-drivers", "error", _snap(_vxlan_network), "ml2_conf.ini:2"),
    ("ml2.tenant-network-types", "error", _sed("ml2_conf.ini", "tenant_network_types = vlan",
                                               "tenant_network_types = flat"), "ml2_conf.ini:3"),
    ("ml2.mechanism-drivers", "error", _sed("ml2_conf.ini", "mechanism_drivers = openvswitch",
                                            "mechanism_drivers ="), "ml2_conf.ini:4"),
    ("ml2.flat-networks", "error", _snap(_flat_physnet2), "ml2_conf.ini:6"),
    ("ml2.vlan-ranges", "error", _snap(_vlan_on("physnet9")), "ml2_conf.ini:8"),
    ("metadata.modes", "error", _sed("dhcp_agent.ini", "enable_metadata_network = False",
                                     "enable_metadata_network = True"), "dhcp_agent.ini:3"),
    ("metadata.isolated-with-router", "warning", _sed("dhcp_agent.ini", "enable_isolated_metadata = False",
                                                      "enable_isolated_metadata = True"), "dhcp_agent.ini:2"),
    ("metadata.no-server", "error", _sed("l3_agent.ini", "= True", "= False"), "l3_agent.ini:2"),
    ("metadata.dhcp-notification", "warning", _sed("neutron.conf", "dhcp_agent_notification = False\n", ""),
     "neutron.conf:1"),
    ("metadata.secret-empty", "error", _sed("metadata_agent.ini", "= s3cret", "="), "metadata_agent.ini:2"),
    ("metadata.secret-mismatch", "error", _sed("nova.conf", "= s3cret", "= other"), "nova.conf:3"),
    ("metadata.port-missing", "error", _both(_set("files", {}), _snap(_no_router)), "registry"),
    ("metadata.network-mode", "info", _both(_set("files", {}), _snap(_metadata_port)), "registry"),
    ("dhcp.121-no-default", "error", _set("opts", GOOD_OPTS.replace(",0.0.0.0/0,172.16.1.1", "")), "opts:1"),
    ("dhcp.249-missing", "warning", _set("opts", "\n".join(GOOD_OPTS.splitlines()[::2])), "opts:1"),
    ("dhcp.249-differs", "error", _set("opts", GOOD_OPTS.replace("249,169.254.169.254/32,172.16.1.2",
                                                                 "249,169.254.169.254/32,172.16.1.9")), "opts:2"),
    ("dhcp.router-differs", "error", _set("opts", GOOD_OPTS.replace("option:router,172.16.1.1",
                                                                    "option:router,172.16.1.2")), "opts:3"),
    ("dhcp.metadata-nexthop", "error", _snap(_router_elsewhere), "opts:1"),
    ("dhcp.routes-vs-subnet", "warning", _snap(_subnet_default_via_gateway), "opts:1"),
    ("dhcp.lease-not-fixed-ip", "error", _set("cmdline", "dnsmasq --dhcp-range=set:tag0,172.16.1.100,"
                                                         "172.16.1.109,2h"), "dnsmasq.cmdline:1"),
    ("dhcp.two-servers", "error", _snap(_dhcp_on), "dnsmasq.cmdline:1"),
    ("dhcp.range-vs-pool", "error", _both(_set("cmdline", "dnsmasq --dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h"),
                                          _snap(_no_vm_ports)), "dnsmasq.cmdline:1"),
    ("firewall.dhcp-reply-dropped", "error", _set("rules", GOOD_RULES.replace("-d 172.16.1.103/32 ", "-s 10.0.0.1/32 ")
                                                  .replace("-d 255.255.255.255/32 ", "-s 10.0.0.1/32 ")), "rules:5"),
]


@pytest.mark.parametrize("check,severity,mutate,where", CASES, ids=[c[0] for c in CASES])
def test_check_triggers(check, severity, mutate, where):
    spec = copy.deepcopy(Spec())
    mutate(spec)
    found = [f for f in findings_of(spec) if f.check == check]
    assert found, f"{check} not reported; got {[f.check for f in findings_of(spec)]}"
    assert found[0].severity == severity
    assert found[0].location == where
    assert found[0].problem and found[0].symptom and found[0].fix


def test_every_check_id_has_a_triggering_case():
    import provnet.doctor.run as run
    names = {c[0] for c in CASES}
    # the ids each check module can emit, read from their source
    import inspect
    import re
    ids = set()
    for check in run.ALL_CHECKS:
        ids |= set(re.findall(r'"(?:error|warning|info)",\s*"([a-z0-9]+\.[a-z0-9-]+)"',
                              inspect.getsource(inspect.getmodule(check))))
    assert len(ids) > 25
    assert ids <= names, f"checks without a triggering test: {ids - names}"


# ---- more specific behaviour ---------------------------------------------------------------------------------------

def test_no_router_without_neutron_files_is_a_warning(tmp_path):
    spec = Spec(files={}, provnet="[DEFAULT]\nmetadata_proxy_shared_secret = s\n[metadata]\nmode = router\n")
    _no_router(spec.snapshot)
    spec.cmdline, spec.opts, spec.rules = "dnsmasq", "", None
    [f] = findings_of(spec, tmp_path)
    assert (f.check, f.severity) == ("metadata.no-server", "warning") and "--network-id" in f.problem


def test_no_router_with_provnet_alone_in_auto_mode_is_its_missing_metadata_port():
    """Under [metadata] mode = auto the network is in network mode: the registry owes it a metadata port."""
    spec = Spec(files={})
    _no_router(spec.snapshot)
    spec.cmdline, spec.opts, spec.rules = "dnsmasq", "", None
    found = findings_of(spec)
    [f] = [f for f in found if f.severity != "info"]
    assert (f.check, f.severity) == ("metadata.port-missing", "error") and "has no metadata port" in f.problem
    assert [f.check for f in found if f.severity == "info"] == ["metadata.network-mode"]


def test_seed_dhcp_recipe_without_dhcp_subnet_means_no_server():
    spec = Spec()
    spec.files["dhcp_agent.ini"] = "[DEFAULT]\nenable_isolated_metadata = True\nenable_metadata_network = True\n"
    spec.files["l3_agent.ini"] = "[DEFAULT]\nenable_metadata_proxy = False\n"
    checks = {f.check: f for f in findings_of(spec)}
    assert "no one serves metadata on network phy_net" in checks["metadata.no-server"].problem
    assert "enable_dhcp = False" in checks["metadata.no-server"].problem


def test_isolated_network_served_by_dhcp_agent_is_fine():
    spec = Spec()
    spec.files["dhcp_agent.ini"] = "[DEFAULT]\nenable_isolated_metadata = True\n"
    spec.files["l3_agent.ini"] = "[DEFAULT]\nenable_metadata_proxy = False\n"
    _no_router(spec.snapshot)
    _dhcp_on(spec.snapshot)
    spec.cmdline, spec.opts, spec.rules = "dnsmasq", "", None  # no external DHCP server
    assert [f.check for f in findings_of(spec)] == []


def test_both_metadata_recipes_on_is_a_warning():
    spec = Spec()
    spec.files["dhcp_agent.ini"] = "[DEFAULT]\nenable_isolated_metadata = True\nenable_metadata_network = True\n"
    found = [f for f in findings_of(spec) if f.check == "metadata.modes"]
    assert found[0].severity == "warning" and "both recipes" in found[0].problem


def test_provnet_down_time_and_secret_and_flat_networks(tmp_path):
    spec = Spec(provnet="[DEFAULT]\nagent_down_time = 40\n[ml2_type_flat]\nflat_networks = physnet7\n")
    found = {f.check: f for f in findings_of(spec, tmp_path)}
    assert found["agent.down-time"].where.line == 2
    assert found["metadata.secret-empty"].where.file.endswith("provnet (default)")
    assert found["ml2.flat-networks"].where.line == 4


def test_provnet_bridge_mappings_for_ports_bound_here(tmp_path):
    text = "[DEFAULT]\nhost = compute1\nmetadata_proxy_shared_secret = s3cret\n[ovs]\nbridge_mappings = other:br-o\n"
    [f] = [f for f in findings_of(Spec(provnet=text), tmp_path) if f.check == "agent.bridge-mappings"]
    assert f.where.line == 5 and "physical network physnet1" in f.problem
    fixed = text.replace("other:br-o", "physnet1:br-phy")
    assert findings_of(Spec(provnet=fixed), tmp_path) == []


def test_provnet_dhcp_server_beside_dnsmasq(tmp_path):
    text = "[DEFAULT]\nmetadata_proxy_shared_secret = s3cret\n[dhcp]\ninterface = br-phy\n"
    [f] = [f for f in findings_of(Spec(provnet=text), tmp_path) if f.check == "dhcp.two-servers"]
    assert f.where.line == 4 and "both serve subnet phy_subnet" in f.problem
    elsewhere = text + "network = some-other-net\n"
    assert findings_of(Spec(provnet=elsewhere), tmp_path) == []
    assert findings_of(Spec(provnet=text, cmdline="dnsmasq", opts=""), tmp_path) == []


def test_provnet_secret_differs_from_nova(tmp_path):
    spec = Spec(provnet="[DEFAULT]\nmetadata_proxy_shared_secret = not-s3cret\n")
    found = [f for f in findings_of(spec, tmp_path) if f.check == "metadata.secret-mismatch"]
    assert found and "s3cret" not in found[0].problem  # never print the secret


def test_bridge_mapping_only_in_ml2_conf_points_there():
    spec = Spec()
    spec.files["openvswitch_agent.ini"] = "[ovs]\nintegration_bridge = br-int\n"
    spec.files["ml2_conf.ini"] += "[ovs]\nbridge_mappings = physnet1:br-phy\n"
    [f] = [f for f in findings_of(spec) if f.check == "agent.bridge-mappings"]
    assert f.location == "ml2_conf.ini:10" and "does not read" in f.problem


def test_local_conf_wins_over_files_and_points_to_its_line():
    spec = Spec(local_conf="[[local|localrc]]\nQ_ML2_TENANT_NETWORK_TYPE=flat\n"
                           "[[post-config|$NEUTRON_CONF]]\n[DEFAULT]\nagent_down_time = 10\n")
    found = {f.check: f.location for f in findings_of(spec)}
    assert found["ml2.tenant-network-types"] == "local.conf:2"
    assert found["agent.down-time"] == "local.conf:5"


def test_local_conf_can_fix_a_file():
    spec = Spec(local_conf="[[post-config|$NEUTRON_CONF]]\n[DEFAULT]\nagent_down_time = 75\n")
    spec.files["neutron.conf"] = spec.files["neutron.conf"].replace("= 75", "= 20")
    assert findings_of(spec) == []


def test_wrong_reservation_points_at_the_host_line():
    spec = Spec(cmdline=f"dnsmasq --dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0 "
                        f"--dhcp-host={MAC},172.16.1.140")
    [f] = [f for f in findings_of(spec) if f.check == "dhcp.lease-not-fixed-ip"]
    assert "gives the address 172.16.1.140" in f.problem and f.fix == f"write `dhcp-host={MAC},172.16.1.103`"


def test_no_reservation_at_all_with_static_range():
    spec = Spec(cmdline="dnsmasq --dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0")
    [f] = [f for f in findings_of(spec) if f.check == "dhcp.lease-not-fixed-ip"]
    assert "get no DHCP lease" in f.symptom


def test_no_121_and_router_not_a_router_interface():
    spec = Spec(opts="tag:tag0,option:router,172.16.1.1\n")
    [f] = [f for f in findings_of(spec) if f.check == "dhcp.metadata-nexthop"]
    assert f.location == "opts:1" and "no option 121" in f.problem


def test_firewall_without_server_address_is_info_only():
    spec = Spec(dhcp_server=None)
    found = findings_of(spec)
    assert [(f.check, f.severity) for f in found] == [("firewall.dhcp-reply-dropped", "info")]
    assert not has_error(found)


def test_seed_rule_allows_server_in_subnet_and_drops_outside():
    seed_rules = ("*filter\n-A neutron-openvswi-ivmport-000 -s 172.16.1.0/24 -p udp -m udp --sport 67 --dport 68 "
                  "-j RETURN\n-A neutron-openvswi-ivmport-000 -j DROP\nCOMMIT\n")
    assert findings_of(Spec(rules=seed_rules)) == []
    assert [f.check for f in findings_of(Spec(rules=seed_rules, dhcp_server="10.1.1.1"))] == [
        "firewall.dhcp-reply-dropped"]


def test_reply_to_a_range_address_is_dropped_by_per_port_rules():
    # Neutron's rules accept replies to the port's own IP and broadcast; a dnsmasq range offers another address
    spec = Spec(cmdline="dnsmasq --dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h")
    [f] = [f for f in findings_of(spec) if f.check == "firewall.dhcp-reply-dropped"]
    assert "to 172.16.1.100:68" in f.problem and f.location == "rules:5"


def test_without_registry_only_file_checks_run():
    spec = Spec(snapshot=None)
    spec.files["neutron.conf"] = "[DEFAULT]\nagent_down_time = 10\n"
    assert [f.check for f in findings_of(spec)] == ["agent.down-time"]


def test_renderings():
    spec = Spec()
    _agent_dead(spec.snapshot)
    found = findings_of(spec)
    table = render_table(found)
    assert "ERROR   agent.dead" in table and table.rstrip().endswith("2 errors, 0 warnings, 0 infos")
    data = __import__("json").loads(render_json(found))["findings"]
    assert [d["check"] for d in data] == ["agent.dead", "binding.physnet-unmapped"]
    assert data[0]["file"] is None and data[0]["severity"] == "error"
    assert {"problem", "symptom", "fix", "line", "location"} <= set(data[0])
    assert render_table([]) == "no problems found"


def test_finding_location_of_file_without_line():
    f = Finding("info", "x.y", Location("a.ini"), "p", "s", "f")
    assert f.location == "a.ini" and f.to_dict()["line"] is None
    assert replace(f, where=None).location == "registry"
