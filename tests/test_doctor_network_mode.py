# doctor and [metadata] mode: each network's mode, a missing metadata port, an external server's metadata route.
from __future__ import annotations

from test_doctor_checks import GOOD_FILES, GOOD_OPTS, Spec, findings_of, good_snapshot

from provnet.doctor.findings import has_error
from provnet.doctor.inputs import Snapshot
from provnet.model.resources import METADATA_PORT_OWNER, FixedIP, Port, metadata_device_id

# provnet serves metadata here: no Neutron DHCP or L3 agent configured (their recipes are judged otherwise)
PROVNET_FILES = {k: v for k, v in GOOD_FILES.items() if k not in ("dhcp_agent.ini", "l3_agent.ini")}
NETWORK_OPTS = GOOD_OPTS.replace("169.254.169.254/32,172.16.1.2", "169.254.169.254/32,172.16.1.102")


def network_mode_snapshot(with_port: bool = True) -> Snapshot:
    """The good setup without its router (auto mode: network mode), with the registry's metadata port."""
    snap = good_snapshot()
    snap.ports = [p for p in snap.ports if not p.is_router_interface]
    snap.routers = []
    if with_port:
        snap.ports.append(Port(id="mdport-1", network_id="net-1", mac_address="fa:16:3e:00:00:0a",
                               fixed_ips=[FixedIP("sub-1", "172.16.1.102")], device_owner=METADATA_PORT_OWNER,
                               device_id=metadata_device_id("net-1"), port_security_enabled=False))
    return snap


def test_network_mode_with_the_right_route_has_no_error_and_names_the_mode():
    found = findings_of(Spec(files=dict(PROVNET_FILES), opts=NETWORK_OPTS, snapshot=network_mode_snapshot()))
    assert not has_error(found), found
    [info] = [f for f in found if f.check == "metadata.network-mode"]
    assert info.severity == "info"
    assert "[metadata] mode = auto" in info.problem
    assert "phy_subnet (172.16.1.0/24): network mode, 169.254.169.254/32 via the metadata port 172.16.1.102" \
        in info.problem
    assert "metadata.no-server" not in {f.check for f in found}  # the metadata port's namespace serves it


def test_the_routers_old_route_in_network_mode_is_an_error_with_the_fix():
    # dnsmasq still says 169.254.169.254 via .2
    found = findings_of(Spec(files=dict(PROVNET_FILES), snapshot=network_mode_snapshot()))
    [f] = [f for f in found if f.check == "dhcp.metadata-nexthop"]
    assert f.severity == "error" and f.location == "opts:1"
    assert "is in network mode" in f.problem and "goes via 172.16.1.2" in f.problem
    assert "172.16.1.102" in f.problem and "route 169.254.169.254/32 via 172.16.1.102" in f.fix
    # and the subnet's own routes disagree with dnsmasq's (network_data.json says .102)
    assert "dhcp.routes-vs-subnet" in {x.check for x in found}


def test_no_option_121_in_network_mode_names_the_metadata_port():
    found = findings_of(Spec(files=dict(PROVNET_FILES), opts="tag:tag0,option:router,172.16.1.1\n",
                             snapshot=network_mode_snapshot()))
    [f] = [f for f in found if f.check == "dhcp.metadata-nexthop"]
    assert "no option 121" in f.problem and "169.254.169.254/32,172.16.1.102,0.0.0.0/0,172.16.1.1" in f.fix


def test_a_network_in_network_mode_without_its_metadata_port_is_an_error():
    found = findings_of(Spec(files=dict(PROVNET_FILES), opts=NETWORK_OPTS,
                             snapshot=network_mode_snapshot(with_port=False)))
    [f] = [f for f in found if f.check == "metadata.port-missing"]
    assert f.severity == "error" and "has no metadata port" in f.problem
    assert "provnet subnet-update phy_subnet" in f.fix


def test_router_mode_configured_expects_the_router_route(tmp_path):
    spec = Spec(files=dict(PROVNET_FILES), snapshot=network_mode_snapshot(), provnet="[metadata]\nmode = router\n")
    found = findings_of(spec, tmp_path)
    checks = {f.check for f in found}
    assert "metadata.port-missing" not in checks and "metadata.network-mode" not in checks
    # no router interface holds 172.16.1.2: the route the dnsmasq gives leads nowhere in router mode
    [f] = [f for f in found if f.check == "dhcp.metadata-nexthop"]
    assert "no router interface" in f.problem


def test_network_mode_configured_routes_via_the_port_even_with_a_router(tmp_path):
    snap = good_snapshot()  # the router holds the gateway
    snap.ports.append(network_mode_snapshot().ports[-1])
    found = findings_of(Spec(files=dict(PROVNET_FILES), opts=NETWORK_OPTS, snapshot=snap,
                             provnet="[DEFAULT]\nmetadata_proxy_shared_secret = s3cret\n[metadata]\nmode = network\n"),
                        tmp_path)
    assert not has_error(found), found
    [info] = [f for f in found if f.check == "metadata.network-mode"]
    assert info.location.endswith("provnet.conf:4")  # the option that decided it


def test_a_clouds_neutron_in_companion_mode_is_not_judged_by_provnets_mode():
    snap = network_mode_snapshot(with_port=False)
    snap.provnet = False
    checks = {f.check for f in findings_of(Spec(files=dict(PROVNET_FILES), snapshot=snap))}
    assert "metadata.port-missing" not in checks and "metadata.network-mode" not in checks


def test_the_seeds_router_setup_says_nothing_about_modes():
    assert findings_of(Spec(files=dict(PROVNET_FILES), )) == []
