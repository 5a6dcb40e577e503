# Companion mode: provnet's doctor, DHCP exports and DHCP server against a cloud's Neutron found in Keystone's
# catalog. The "cloud" is provnet's own API behind the real Keystone, registered as the `network` service: it stands
# in for Neutron, and these tests check that only Neutron's standard API (/v2.0) is used, never /provnet/v1.
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import need_root, need_tool
from keystone_support import keystone_api, wait_until
from nstools import LoopbackRelay, addresses, in_ns, make_lan, routes, sh, wait_udp_listen
from test_dhcp_clients import MAC1, MAC2, PROVNET, SEED_TABLE

SEED_NET = {"name": "phy_net", "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": "physnet1"}
SEED_SUBNET = {"cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2", "ip_version": 4, "enable_dhcp": False,
               "name": "phy_subnet_without_dhcp",
               "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
               "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}]}


class AccessLog(logging.Handler):
    """Every request line the API logged (its access log), to prove which paths a tool used."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def paths(self) -> list[str]:
        return [line.split('"')[1].split(" ")[1] for line in self.lines if '"' in line]


@pytest.fixture
def cloud(keystone, tmp_path: Path):
    """The seed in the stand-in cloud (made through its API as the admin), a clouds.yaml, and its access log."""
    db = f"sqlite:///{tmp_path}/cloud.sqlite"
    access = AccessLog()
    logger = logging.getLogger("provnet.api.access")
    logger.addHandler(access)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with keystone_api(keystone, db) as api:
            admin, service = api.client("root"), api.client("provnet")
            net = admin.ok("POST", "/v2.0/networks", {"network": SEED_NET}, 201)["network"]
            subnet = admin.ok("POST", "/v2.0/subnets", {"subnet": {**SEED_SUBNET, "network_id": net["id"]}},
                              201)["subnet"]
            router = admin.ok("POST", "/v2.0/routers", {"router": {"name": "router1"}}, 201)["router"]
            admin.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
            for mac, ip in ((MAC1, "172.16.1.103"), (MAC2, "172.16.1.104")):
                admin.ok("POST", "/v2.0/ports", {"port": {
                    "network_id": net["id"], "mac_address": mac, "device_owner": "compute:nova",
                    "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ip}]}}, 201)
            # an agent without the physical network in its mappings, and a port bound there: doctor's findings
            service.ok("POST", "/provnet/v1/agents/report", {"agent": {
                "host": "compute1", "agent_type": "Open vSwitch agent", "binary": "provnet-agent",
                "configurations": {"bridge_mappings": {}}}})
            admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "binding:host_id": "compute1",
                                                      "device_owner": "compute:nova"}}, 201)
            clouds = keystone.clouds_yaml(tmp_path / "clouds.yaml")
            env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
            env.update(OS_CLIENT_CONFIG_FILE=str(clouds), HOME=str(tmp_path))
            access.lines.clear()
            yield api, db, env, access, net
    finally:
        logger.removeHandler(access)
        logger.setLevel(old_level)


def provnet(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([PROVNET, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_neutron_api_only(access: AccessLog) -> None:
    paths = access.paths()
    assert paths, "the tool made no request to the cloud"
    assert all(p.startswith("/v2.0/") for p in paths), [p for p in paths if not p.startswith("/v2.0/")]


def findings(proc: subprocess.CompletedProcess) -> set[tuple[str, str, str]]:
    return {(f["severity"], f["check"], f["problem"]) for f in json.loads(proc.stdout)["findings"]}


def test_doctor_reads_the_cloud_through_neutrons_api_and_finds_what_it_finds_in_provnets_registry(cloud, tmp_path):
    api, db, env, access, _net = cloud
    companion = provnet(env, "--os-cloud", "root", "doctor", "-f", "json", ok=False)
    assert companion.returncode == 1, companion.stderr  # the failed binding is an error
    assert_neutron_api_only(access)
    local = provnet(env, "--db", db, "--state-path", str(tmp_path / "s"), "doctor", "-f", "json", ok=False)
    assert findings(companion) == findings(local)
    checks = {check for _sev, check, _msg in findings(companion)}
    # the port bound to compute1 failed, and the agent's mappings (read from /v2.0/agents) say why
    assert {"binding.port-failed", "binding.physnet-unmapped"} <= checks, checks
    # a user who may not list agents gets one readable finding, not a traceback
    reader = provnet(env, "--os-cloud", "carol", "doctor", "-f", "json", ok=False)
    assert "Traceback" not in reader.stderr


@pytest.mark.parametrize("fmt", ["dnsmasq", "kea", "isc"])
def test_exports_from_the_clouds_ports_are_what_provnets_registry_gives_and_the_servers_accept(cloud, tmp_path,
                                                                                              fmt):
    need_tool("dnsmasq", "kea-dhcp4", "dhcpd")
    api, db, env, access, _net = cloud
    out, ref = tmp_path / "companion", tmp_path / "local"
    provnet(env, "--os-cloud", "provnet", "dhcp-config", "--format", fmt, "--network", "phy_net",
             "--interface", "lo", "--output-dir", str(out))
    assert_neutron_api_only(access)
    provnet(env, "--db", db, "--state-path", str(tmp_path / "s"), "dhcp-config", "--format", fmt, "--network",
            "phy_net", "--interface", "lo", "--output-dir", str(ref))
    for path in ref.iterdir():  # the same files, but for the header's registry revision (a counter here)
        theirs = re.sub(r"revision \d+", "revision N", (out / path.name).read_text())
        ours = re.sub(r"revision \d+", "revision N", path.read_text().replace(str(ref), str(out)))
        assert theirs == ours, path.name
    text = "".join(p.read_text() for p in out.iterdir())
    assert "172.16.1.103" in text and MAC1 in text and "172.16.1.104" in text
    if fmt == "dnsmasq":
        argv = shlex.split((out / "dnsmasq.cmdline").read_text())
        res = sh(argv[0], "--test", *argv[1:], check=False)
        assert res.returncode == 0 and "syntax check OK" in res.stderr + res.stdout, res.stderr
    elif fmt == "kea":
        res = sh("kea-dhcp4", "-t", str(out / "kea-dhcp4.json"), check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    else:
        res = sh("dhcpd", "-4", "-t", "-cf", str(out / "dhcpd.conf"), check=False)
        assert res.returncode == 0, res.stdout + res.stderr


def test_companion_mode_does_not_write_and_says_why(cloud):
    api, db, env, access, net = cloud
    proc = provnet(env, "--os-cloud", "root", "port-create", "phy_net", ok=False)
    assert proc.returncode == 1 and "never writes to it (companion mode)" in proc.stderr
    listed = provnet(env, "--os-cloud", "alice", "net-list", "-f", "json")
    assert [n["name"] for n in json.loads(listed.stdout)] == ["phy_net"]  # external: visible to a member


@pytest.mark.root
@pytest.mark.parametrize("mode", ["companion", "url"])
def test_dhcp_server_serves_the_clouds_reservations_and_follows_changes(cloud, keystone, tmp_path, mode):
    """companion: the cloud's Neutron from the catalog; url: `provnet dhcp --url` on provnet's API with the service
    user (the same server, the same Keystone, /provnet/v1 allowed)."""
    need_root()
    need_tool("busybox", "ip", "ss", "socat")
    api, db, env, access, net = cloud
    admin = api.client("root")
    lan = make_lan(tmp_path / "lan")
    relay = LoopbackRelay(lan.server_ns, tmp_path / "relay")
    try:
        relay.add(keystone.port)  # the namespace reaches Keystone and the cloud's API at their 127.0.0.1 URLs
        relay.add(int(api.url.rsplit(":", 1)[1]))
        state = tmp_path / "state"
        where = ["--url", api.url] if mode == "url" else []
        proc = lan.spawn(lan.server_ns, PROVNET, *where, "--os-cloud", "provnet", "--state-path", str(state), "dhcp",
                         "--interface", lan.bridge, "--network", "phy_net", log=tmp_path / "server.log", env=env)
        wait_udp_listen(lan.server_ns, 67, proc)
        c1 = lan.add_client(MAC1)
        res = lan.udhcpc(c1)
        assert res.returncode == 0, res.stderr + (tmp_path / "server.log").read_text()
        assert addresses(c1) == ["172.16.1.103/24"] and routes(c1) == SEED_TABLE
        assert lan.lease(c1)["hostname"] == "host-172-16-1-103"  # no instance: Neutron's own name form

        mac = "fa:16:3e:00:00:77"
        port = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "mac_address": mac,
                                                         "fixed_ips": [{"ip_address": "172.16.1.120"}]}}, 201)["port"]
        c2 = lan.add_client(mac)

        def leased() -> bool:  # the change reaches the server within its poll (2 s) and one rebuild
            sh("ip", "-n", c2, "-4", "addr", "flush", "dev", "eth0")
            got = sh(*in_ns(c2, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "1", "-T", "1", "-i", "eth0",
                            "-O", "staticroutes", "-s", str(lan.script(c2))), check=False)
            return got.returncode == 0

        wait_until(leased, timeout=30, interval=0.2)
        assert addresses(c2) == ["172.16.1.120/24"]
        admin.ok("DELETE", f"/v2.0/ports/{port['id']}", status=204)
        wait_until(lambda: not leased(), timeout=30, interval=0.2)
        if mode == "companion":
            assert_neutron_api_only(access)
        log = (tmp_path / "server.log").read_text()
        assert keystone.passwords["provnet"] not in log
    finally:
        relay.close()
        lan.teardown()


def test_without_a_catalog_entry_the_error_names_the_cloud(keystone, tmp_path):
    clouds = keystone.clouds_yaml(tmp_path / "clouds.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(clouds), HOME=str(tmp_path))
    proc = provnet(env, "--os-cloud", "nosuchcloud", "net-list", ok=False)
    assert proc.returncode == 2 and "nosuchcloud" in proc.stderr and "Traceback" not in proc.stderr


def test_the_cloud_is_polled_by_revision_number_and_reservations_read_through_v2(cloud, monkeypatch):
    """The stand-in cloud has Neutron's revision_number: companion mode's change check lists only
    `fields=id&fields=revision_number`, so a change no DHCP attribute shows (a port's binding) still moves it;
    reservation_rows, read from /v2.0/ports with `fields=`, are the rows provnet's own store gives."""
    from keystone_support import FakeClock

    from provnet.identity.clouds import CloudAuth
    from provnet.registry.base import Page
    from provnet.registry.neutron import NeutronRegistry

    api, _db, env, access, net = cloud
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", env["OS_CLIENT_CONFIG_FILE"])
    auth = CloudAuth("provnet")
    clock = FakeClock()
    registry = NeutronRegistry(auth.endpoint(), auth, auth.ssl_context, clock=clock)
    try:
        first = registry.revision()
        polls = [p for p in access.paths() if "fields=" in p]
        assert polls and all("fields=id&fields=revision_number" in p for p in polls)
        assert registry._without_revision == set()  # no fallback to digesting attributes
        port = next(p for p in registry.list_ports({"network_id": [net["id"]]}) if p.binding_host_id == "compute1")
        api.client("root").ok("PUT", f"/v2.0/ports/{port.id}", {"port": {"binding:host_id": "compute2"}})
        assert registry.revision() == first  # checked at most every poll_interval
        clock.advance(registry.poll_interval)
        assert registry.revision() == first + 1
        batch = registry.changes_since(first)
        assert batch.gap and batch.revision == first + 1
        clock.advance(registry.poll_interval)
        assert registry.revision() == first + 1  # nothing changed since: the counter stays
        # the DHCP view's lean read, through Neutron's port list only
        access.lines.clear()
        rows = registry.reservation_rows([net["id"]])
        assert rows == api.registry.reservation_rows([net["id"]])
        assert {r.ip_address for r in rows} >= {"172.16.1.103", "172.16.1.104"}
        assert registry.reservation_rows([net["id"]], [rows[0].port_id]) == [rows[0]]
        assert registry.reservation_rows([net["id"]], []) == [] and registry.reservation_rows([]) == []
        assert_neutron_api_only(access)
        # a page, as the API's own lists are cut
        assert len(registry.list_ports(None, Page(limit=1))) == 1
    finally:
        registry.close()


def test_the_l3_schedule_is_read_through_neutrons_scheduler_extension_and_never_changed(cloud, monkeypatch):
    """An L3 agent reports to the stand-in cloud and gets its router: companion mode reads the schedule from
    /v2.0/agents/{id}/l3-routers and /v2.0/routers/{id}/l3-agents (Neutron's l3_agent_scheduler extension) and
    refuses to change it (read-only), with the cloud's schedule untouched."""
    from provnet.identity.clouds import CloudAuth
    from provnet.model import errors
    from provnet.registry.neutron import NeutronRegistry

    api, _db, env, access, _net = cloud
    service = api.client("provnet")
    agent = service.ok("POST", "/provnet/v1/agents/report", {"agent": {
        "host": "network1", "agent_type": "L3 agent", "binary": "provnet-l3-agent",
        "configurations": {"routers": 0}}})["agent"]
    [router] = api.client("root").ok("GET", "/v2.0/routers?name=router1")["routers"]
    access.lines.clear()
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", env["OS_CLIENT_CONFIG_FILE"])
    auth = CloudAuth("provnet")
    registry = NeutronRegistry(auth.endpoint(), auth, auth.ssl_context)
    try:
        assert [r.id for r in registry.list_routers_on_l3_agent(agent["id"])] == [router["id"]]
        assert [a.host for a in registry.list_l3_agents_hosting_router(router["id"])] == ["network1"]
        assert_neutron_api_only(access)
        assert {p.split("?")[0] for p in access.paths()} == {f"/v2.0/agents/{agent['id']}/l3-routers",
                                                             f"/v2.0/routers/{router['id']}/l3-agents"}
        with pytest.raises(errors.ReadOnly):
            registry.remove_router_from_l3_agent(agent["id"], router["id"])
        with pytest.raises(errors.ReadOnly):
            registry.add_router_to_l3_agent(agent["id"], router["id"])
        assert [r.id for r in api.registry.list_routers_on_l3_agent(agent["id"])] == [router["id"]]
        with pytest.raises(errors.AgentNotFound):  # an agent the cloud does not have: Neutron's 404, as its error
            registry.list_routers_on_l3_agent("0" * 8 + "-0000-0000-0000-" + "0" * 12)
    finally:
        registry.close()
