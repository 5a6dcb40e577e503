# The L2 agent's pure core: which tap device is which port, the statuses a host reports, its firewall and its blocks.
from __future__ import annotations

from provnet.agents.l2 import device_name, plan_host
from provnet.dataplane.netns import BridgePort
from provnet.model.resources import FixedIP, Port

NET, OTHER_NET = "net-1", "net-2"


def port(pid: str, ip: str, host: str = "h1", **kw) -> Port:
    return Port(id=pid, network_id=kw.pop("network_id", NET), mac_address=kw.pop("mac", "FA:16:3E:00:00:01"),
                fixed_ips=[FixedIP("sub", ip)], binding_host_id=host, **kw)


def dev(p: Port, up: bool = True, bridge: str = "br-phy") -> tuple[str, BridgePort]:
    name = device_name(p.id)
    return name, BridgePort(name, bridge, p.mac_address.lower(), up)


A = port("aaaaaaaa-1111-4444-8888-000000000001", "172.16.1.110")
B = port("bbbbbbbb-1111-4444-8888-000000000002", "172.16.1.111", security_groups=["web"])
C = port("cccccccc-1111-4444-8888-000000000003", "172.16.1.112")
ROUTER = port("dddddddd-1111-4444-8888-000000000004", "172.16.1.2", host="", device_owner="network:router_interface")
ELSEWHERE = port("eeeeeeee-1111-4444-8888-000000000005", "172.16.1.113", host="h2")
UNBOUND_VM = port("ffffffff-1111-4444-8888-000000000006", "172.16.1.114", host="")
PORTS = {p.id: p for p in (A, B, C, ROUTER, ELSEWHERE, UNBOUND_VM)}


def test_device_names_are_novas() -> None:
    assert device_name("59bbcb56-8612-4f55-a9a4-0c8a7f1c2e11") == "tap59bbcb56-86"


def test_wired_ports_statuses_and_filters() -> None:
    devices = dict([dev(A), dev(B, up=False), dev(ROUTER), ("uplink", BridgePort("uplink", "br-phy", "x", True))])
    plan = plan_host(devices, PORTS, "h1")
    assert plan.status == {A.id: "ACTIVE", B.id: "DOWN", ROUTER.id: "ACTIVE", C.id: "DOWN"}  # C: bound, no device
    assert plan.wired == {device_name(A.id): A.id, device_name(B.id): B.id, device_name(ROUTER.id): ROUTER.id}
    assert plan.blocked == ()
    by_device = {f.device: f for f in plan.filters}
    assert set(by_device) == {device_name(A.id), device_name(B.id)}  # the router port is trusted: no filter
    a = by_device[device_name(A.id)]
    assert (a.mac, a.ips) == ("fa:16:3e:00:00:01", ("172.16.1.110",))
    # remote_ips: the members of the port's security groups on its network (A and C are in the default group)
    assert a.remote_ips == ("172.16.1.110", "172.16.1.112", "172.16.1.113", "172.16.1.114")
    assert by_device[device_name(B.id)].remote_ips == ("172.16.1.111",)
    ruleset = plan.ruleset()
    assert {c.name for c in ruleset.chains} >= {"provnet-fw-iaaaaaaaa-1", "provnet-fw-saaaaaaaa-1"}


def test_foreign_unknown_and_disabled_devices_are_blocked() -> None:
    disabled = port("99999999-1111-4444-8888-000000000009", "172.16.1.119", admin_state_up=False)
    ports = {**PORTS, disabled.id: disabled}
    unknown = ("tap00000000-00", BridgePort("tap00000000-00", "br-phy", "fa:16:3e:00:00:99", True))
    devices = dict([dev(ELSEWHERE), dev(UNBOUND_VM), dev(disabled), unknown])
    plan = plan_host(devices, ports, "h1")
    assert set(plan.blocked) == {device_name(ELSEWHERE.id), device_name(UNBOUND_VM.id), device_name(disabled.id),
                                 "tap00000000-00"}
    assert plan.filters == () and plan.wired == {}
    assert plan.status[disabled.id] == "DOWN" and ELSEWHERE.id not in plan.status and UNBOUND_VM.id not in plan.status
    forward = next(c for c in plan.ruleset().chains if c.name == "provnet-fw-FORWARD").rules
    assert sum("tap00000000-00" in r and r.endswith("-j DROP") for r in forward) == 2


def test_a_device_gone_is_down_once_and_port_security_off_is_accepted() -> None:
    plan = plan_host({}, PORTS, "h1", previously=[ROUTER.id, A.id])
    assert plan.status[ROUTER.id] == "DOWN"  # wired here before: reported gone
    assert plan.status[A.id] == "DOWN"
    assert plan_host({}, PORTS, "h1").status.get(ROUTER.id) is None  # never ours: nothing said
    open_port = port("12121212-1111-4444-8888-000000000012", "172.16.1.120", port_security_enabled=False)
    plan = plan_host(dict([dev(open_port)]), {**PORTS, open_port.id: open_port}, "h1")
    [f] = plan.filters
    assert f.port_security is False
    assert all(open_port.ips()[0] not in x.remote_ips for x in plan.filters)
    assert not any(c.name.endswith("12121212-1") for c in plan.ruleset().chains)


def test_ipv6_addresses_do_not_break_the_ipv4_firewall() -> None:
    dual = Port(id="34343434-1111-4444-8888-000000000034", network_id=NET, mac_address="fa:16:3e:00:00:34",
                fixed_ips=[FixedIP("s4", "172.16.1.121"), FixedIP("s6", "2001:db8::5")], binding_host_id="h1")
    plan = plan_host(dict([dev(dual)]), {dual.id: dual}, "h1")
    assert plan.filters[0].ips == ("172.16.1.121",)


def test_a_port_that_moved_to_another_host_is_reported_down_once_not_forever() -> None:
    """Two hosts' agents must not overwrite each other's report: the host the router's device left says DOWN in
    the round it notices, and nothing after that, while the new host says ACTIVE."""
    first = plan_host(dict([dev(ROUTER)]), PORTS, "h1")
    assert first.status[ROUTER.id] == "ACTIVE"
    gone = plan_host({}, PORTS, "h1", previously=first.wired.values())
    assert gone.status[ROUTER.id] == "DOWN"
    later = plan_host({}, PORTS, "h1", previously=gone.wired.values())
    assert ROUTER.id not in later.status
