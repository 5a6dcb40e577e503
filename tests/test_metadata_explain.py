# metadata-explain against the agent's actual answer: for each way attribution fails (and for success), the
# explanation's status and reason are what the real agent answers the same request, in its 404 body and log line;
# the CLI verb and the networking API's call say the same.
from __future__ import annotations

import ipaddress
import logging
import uuid

import pytest
from cli_run import Cli
from metadata_chain import PROJECT, SECRET, Chain, add_vm, agent_get, build_seed

from provnet.api.app import ApiService
from provnet.api.metadata_v1 import MetadataSettings
from provnet.metadata.explain import explain, http_probe
from provnet.registry import open_registry


@pytest.fixture
def world(db_url, tmp_path):
    registry = open_registry(db_url)
    seed = build_seed(registry)
    yield registry, seed, tmp_path
    registry.close()


def _case(registry, seed, cause: str) -> tuple[str, str | None]:
    """Break attribution the `cause` way; (the VM's address, the MAC the proxy would pass)."""
    if cause == "ok":
        return "172.16.1.103", None
    if cause == "not_found":
        return "172.16.1.120", None
    if cause == "ambiguous":  # the same MAC on two networks behind the router, asked by its link-local address
        other = registry.create_network({"name": "second"})
        subnet = registry.create_subnet({"network_id": other.id, "cidr": "172.16.2.0/24", "ip_version": 4,
                                         "gateway_ip": "172.16.2.1", "enable_dhcp": False})
        registry.add_router_interface(seed.router_id, subnet_id=subnet.id)
        mac = registry.get_port(seed.ports["vm1"]).mac_address
        registry.create_port({"network_id": other.id, "mac_address": mac, "device_id": str(uuid.uuid4()),
                              "device_owner": "compute:nova", "project_id": "someone-else"})
        raw = bytes(int(b, 16) for b in mac.split(":"))
        eui = bytes((raw[0] ^ 2,)) + raw[1:3] + b"\xff\xfe" + raw[3:]
        return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)), None
    if cause == "unbound":
        registry.create_port({"network_id": seed.network_id, "fixed_ips": [{"subnet_id": seed.subnet_id,
                                                                            "ip_address": "172.16.1.110"}]})
        return "172.16.1.110", None
    if cause == "mac_mismatch":
        return "172.16.1.103", "fa:16:3e:de:ad:00"
    if cause == "instance_gone":
        registry.create_port({"network_id": seed.network_id, "device_id": str(uuid.uuid4()),
                              "device_owner": "compute:nova",
                              "fixed_ips": [{"subnet_id": seed.subnet_id, "ip_address": "172.16.1.111"}]})
        return "172.16.1.111", None
    if cause == "project":
        add_vm(registry, seed, "vm9", "172.16.1.112", project_id=PROJECT)
        port_id = seed.ports["vm9"]
        registry.delete_port(port_id)
        registry.create_port({"network_id": seed.network_id, "project_id": "another-project",
                              "device_id": seed.instances["vm9"], "device_owner": "compute:nova",
                              "fixed_ips": [{"subnet_id": seed.subnet_id, "ip_address": "172.16.1.112"}]})
        return "172.16.1.112", None
    if cause == "no_interface":
        return "172.16.1.103", None
    raise AssertionError(cause)


CAUSES = ["ok", "not_found", "ambiguous", "unbound", "mac_mismatch", "instance_gone", "project", "no_interface",
          "secrets_differ"]


@pytest.mark.parametrize("cause", CAUSES)
def test_explain_says_what_the_agent_answers(world, cause, caplog):
    registry, seed, tmp_path = world
    router = seed.router_id
    if cause == "no_interface":
        router = registry.create_router({"name": "lonely"}).id
    address, mac = _case(registry, seed, "ok" if cause == "secrets_differ" else cause)
    agent_secret = "the-agents-secret" if cause == "secrets_differ" else SECRET
    chain = Chain(registry, tmp_path, agent_secret=agent_secret)
    try:
        chain.settle()
        probe = http_probe("127.0.0.1", chain.api.port, agent_secret)
        result = explain(registry, "router", router, address, mac, probe)
        caplog.set_level(logging.INFO, "provnet.metadata.agent")
        headers = [("X-Forwarded-For", address), ("X-Neutron-Router-ID", router)]
        if mac:
            headers.append(("X-Provnet-Source-MAC", mac))
        answer = agent_get(chain, "/openstack/latest/meta_data.json", headers)
    finally:
        chain.close()
    assert result.ok == (cause == "ok"), result.lines()
    assert answer.status == result.status, (answer.status, answer.text, result.lines())
    if not result.ok:
        if result.status == 404:  # the agent's 404 carries the reason; a 403 keeps Nova's body, its log says why
            assert result.reason in answer.text.replace("\n", " "), (result.reason, answer.text)
        agent_lines = [r.getMessage() for r in caplog.records if " -> " in r.getMessage()]
        assert any(result.reason in line for line in agent_lines), agent_lines
        assert result.fix
        failed = [s for s in result.steps if not s.ok]
        assert failed, result.lines()
    if cause == "ambiguous":  # the guest's body names no other port; the operator's detail does
        assert "port" in result.detail and result.detail.split()[1] not in answer.text


def test_cli_and_api_say_the_same(tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    seed = build_seed(registry)
    chain = Chain(registry, tmp_path)
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {SECRET}\nnova_metadata_port = {chain.api.port}\n")
    api = ApiService(registry, port=0, metadata=MetadataSettings(api_port=chain.api.port, secret=SECRET))
    chain.loop.run(api.start())
    try:
        cli = Cli("--config-file", str(conf), "--db", str(registry.engine.url))
        ok = cli.ok("metadata-explain --router router-phy_net --ip 172.16.1.103")
        assert "the VM gets its metadata" in ok.stdout and "ok   signature" in ok.stdout
        missing = cli.run("metadata-explain --router router-phy_net --ip 172.16.1.99 -f json")
        assert missing.code == 1 and missing.json()["reason"].startswith("no port has address 172.16.1.99")
        import json
        import urllib.request
        url = (f"http://127.0.0.1:{api.port}/provnet/v1/metadata/explain?router_id={seed.router_id}"
               f"&ip=172.16.1.99")
        with urllib.request.urlopen(url, timeout=10) as r:
            assert json.loads(r.read())["explanation"]["reason"] == missing.json()["reason"]
        for bad in ("?ip=172.16.1.99", f"?router_id={seed.router_id}&ip=nope",
                    f"?router_id={seed.router_id}&network_id=x&ip=172.16.1.9",
                    f"?router_id={seed.router_id}&ip=172.16.1.9&mac=zz"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{api.port}/provnet/v1/metadata/explain{bad}", timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 400
            else:
                raise AssertionError(bad)
        assert cli.fails("metadata-explain --ip 172.16.1.9", code=2)
        assert cli.fails("metadata-explain --router router-phy_net --ip x", code=2)
        assert "Unable to find router" in cli.fails("metadata-explain --router nope --ip 172.16.1.9")
    finally:
        chain.loop.run(api.stop())
        chain.close()
        registry.close()
