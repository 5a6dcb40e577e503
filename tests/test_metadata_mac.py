# The MAC is part of a VM's identity (issue 12 item 3): the proxy reads the source's MAC from its namespace's
# neighbour table and the agent requires the port with that address to have it. The header and the agent's option
# here; the netlink answers in test_metadata_ipv6.py; the table itself and a guest on a neighbour's address in real
# namespaces in test_metadata_ipv6_netns.py and test_metadata_netns.py.
from __future__ import annotations

import pytest
from metadata_chain import Chain, agent_get, build_seed

from provnet.config import ConfigError, load_config
from provnet.metadata.agent import MetadataAgent
from provnet.metadata.http11 import Message
from provnet.metadata.neighbours import SOURCE_MAC_HEADER
from provnet.metadata.proxy import agent_headers
from provnet.registry import open_registry


def router_headers(seed) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", seed.ips["vm1"]), ("X-Neutron-Router-ID", seed.router_id)]


def test_the_proxy_sends_the_mac_it_read_and_never_the_guests():
    client = Message(headers=[(SOURCE_MAC_HEADER, "fa:16:3e:00:00:01"), (SOURCE_MAC_HEADER.lower(), "x")])
    out = agent_headers(client, "172.16.1.103", "X-Neutron-Router-ID", "r1", "req-1", "02:00:00:00:00:07")
    assert [v for k, v in out if k.lower() == SOURCE_MAC_HEADER.lower()] == ["02:00:00:00:00:07"]
    out = agent_headers(client, "172.16.1.103", "X-Neutron-Router-ID", "r1", "req-1")
    assert not [v for k, v in out if k.lower() == SOURCE_MAC_HEADER.lower()]


@pytest.mark.parametrize("verify", [True, False])
def test_the_agent_checks_the_mac_unless_told_not_to(tmp_path, verify):
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    seed = build_seed(registry)
    chain = Chain(registry, tmp_path)
    chain.agent.verify_mac = verify
    try:
        mac = registry.get_port(seed.ports["vm1"]).mac_address
        path = "/openstack/latest/meta_data.json"
        own = agent_get(chain, path, [*router_headers(seed), (SOURCE_MAC_HEADER, mac.upper())])
        assert own.status == 200 and seed.instances["vm1"] in own.text
        thief = agent_get(chain, path, [*router_headers(seed), (SOURCE_MAC_HEADER, "02:00:00:00:00:66")])
        if verify:
            assert thief.status == 404 and "does not have MAC 02:00:00:00:00:66" in thief.text
            assert seed.instances["vm1"] not in thief.text and mac not in thief.text
        else:  # as Neutron's agent: the address alone
            assert thief.status == 200 and seed.instances["vm1"] in thief.text
    finally:
        chain.close()
        registry.close()


@pytest.mark.parametrize(("text", "expected"), [("", True), ("[metadata]\nverify_mac = false\n", False),
                                                ("[metadata]\nverify_mac = true\n", True)])
def test_verify_mac_comes_from_the_configuration_file(tmp_path, text, expected):
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\nmetadata_proxy_shared_secret = s\n{text}")
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    try:
        agent = MetadataAgent.from_config(load_config(files=[str(conf)], env={}), registry)
        assert agent.verify_mac is expected
    finally:
        registry.close()


def test_a_bad_verify_mac_value_is_a_configuration_error(tmp_path):
    conf = tmp_path / "provnet.conf"
    conf.write_text("[metadata]\nverify_mac = maybe\n")
    with pytest.raises(ConfigError, match="verify_mac"):
        load_config(files=[str(conf)], env={})
