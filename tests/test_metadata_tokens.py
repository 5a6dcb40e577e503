# Session tokens (IMDSv2's wire) through the real agent and API on a real registry (SQLite and PostgreSQL):
# issue, use on both trees, refusals with reasons, per-instance `required`, relays, rotation of the secret.
from __future__ import annotations

import logging

import pytest
from metadata_chain import Chain, agent_get, build_seed

from provnet.config import load_config
from provnet.metadata.tokens import Binding, TokenKeys, TokenRefused, parse_ttl
from provnet.registry import open_registry

TTL = [("X-aws-ec2-metadata-token-ttl-seconds", "21600")]


class Wall:
    """The wall clock tokens expire by, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tokens(db_url, tmp_path):
    registry = open_registry(db_url)
    seed = build_seed(registry)
    wall = Wall()
    chain = Chain(registry, tmp_path, wall_clock=wall)
    yield registry, seed, chain, wall
    chain.close()
    registry.close()


def via(seed, ip="172.16.1.103", extra=()):
    return [("X-Forwarded-For", ip), ("X-Neutron-Router-ID", seed.router_id), *extra]


def put_token(chain, seed, ip="172.16.1.103", ttl=TTL, extra=()):
    return agent_get(chain, "/latest/api/token", via(seed, ip, [*ttl, *extra]), "PUT", b"")


def test_token_opens_both_trees_and_is_bound_to_its_vm(tokens):
    registry, seed, chain, wall = tokens
    answer = put_token(chain, seed)
    assert answer.status == 200 and answer.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert "x-provnet-hop-limit" in answer.headers  # for the proxy, which sets the IP TTL and drops it
    token = answer.text
    for path in ("/latest/meta-data/instance-id", "/openstack/latest/meta_data.json"):
        got = agent_get(chain, path, via(seed, extra=[("X-aws-ec2-metadata-token", token)]))
        assert got.status == 200, got.text
    # Firecracker MMDS's header name works too
    assert agent_get(chain, "/latest/meta-data/", via(seed, extra=[("X-metadata-token", token)])).status == 200
    # vm1's token from vm2: refused, and vm2 learns nothing of vm1
    stolen = agent_get(chain, "/openstack/latest/meta_data.json",
                       via(seed, "172.16.1.104", [("X-aws-ec2-metadata-token", token)]))
    assert stolen.status == 401 and seed.instances["vm1"] not in stolen.text
    wall.now += 21600
    expired = agent_get(chain, "/latest/meta-data/", via(seed, extra=[("X-aws-ec2-metadata-token", token)]))
    assert expired.status == 401


@pytest.mark.parametrize("headers,status", [
    ([], 400),  # no TTL
    ([("X-aws-ec2-metadata-token-ttl-seconds", "0")], 400),
    ([("X-aws-ec2-metadata-token-ttl-seconds", "21601")], 400),
    ([("X-aws-ec2-metadata-token-ttl-seconds", "abc")], 400),
    ([("X-aws-ec2-metadata-token-ttl-seconds", "-5")], 400),
    ([("X-aws-ec2-metadata-token-ttl-seconds", "10"), ("X-aws-ec2-metadata-token-ttl-seconds", "10")], 400),
    ([("X-metadata-token-ttl-seconds", "60")], 200),  # MMDS's name
    ([("X-aws-ec2-metadata-token-ttl-seconds", "1")], 200),
])
def test_token_ttl_header(tokens, headers, status):
    _, seed, chain, _ = tokens
    assert put_token(chain, seed, ttl=headers).status == status


def test_bad_tokens_are_401_and_logged_once_per_source_with_the_reason(tokens, caplog):
    registry, seed, chain, _ = tokens
    good = put_token(chain, seed).text
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    caplog.set_level(logging.WARNING, "provnet.metadata.api")
    for bad in (forged, "garbage", "1.deadbeef.99999999999.x.y", "x" * 5000, "1..." + "é"):
        got = agent_get(chain, "/latest/meta-data/", via(seed, extra=[("X-aws-ec2-metadata-token", bad)]))
        assert got.status in (400, 401), (bad, got.status)
    lines = [r.getMessage() for r in caplog.records if " 401 for instance " in r.getMessage()]
    assert len(lines) == 1 and "172.16.1.103" in lines[0]  # once per source and minute
    two = agent_get(chain, "/latest/meta-data/", via(seed, extra=[("X-aws-ec2-metadata-token", good),
                                                                   ("X-aws-ec2-metadata-token", good)]))
    assert two.status == 400


def test_required_per_instance_and_optional_by_default(tokens):
    registry, seed, chain, _ = tokens
    vm1 = seed.instances["vm1"]
    assert agent_get(chain, "/latest/meta-data/", via(seed)).status == 200  # optional: the deployment default
    registry.update_instance(vm1, {"metadata": {"vm": "vm1", "provnet:http_tokens": "required"}})
    chain.settle()
    for path in ("/latest/meta-data/", "/openstack/latest/meta_data.json", "/openstack/latest/user_data",
                 "/latest/user-data", "/openstack/latest/password"):
        assert agent_get(chain, path, via(seed)).status == 401, path
    token = put_token(chain, seed).text
    got = agent_get(chain, "/openstack/latest/meta_data.json",
                    via(seed, extra=[("X-aws-ec2-metadata-token", token)]))
    assert got.status == 200 and "provnet:http_tokens" not in got.text  # settings are not the guest's `meta`
    assert agent_get(chain, "/latest/meta-data/", via(seed, "172.16.1.104")).status == 200  # vm2: optional


def test_bad_per_instance_settings_are_refused_at_write(tokens):
    registry, seed, _, _ = tokens
    from provnet.model.errors import NeutronError

    for key, value in (("provnet:http_tokens", "always"), ("provnet:http_put_response_hop_limit", "65"),
                       ("provnet:http_put_response_hop_limit", "0"), ("provnet:instance_metadata_tags", "yes"),
                       ("provnet:unknown", "x")):
        with pytest.raises(NeutronError) as info:
            registry.update_instance(seed.instances["vm1"], {"metadata": {key: value}})
        assert key in info.value.message and info.value.status == 400


def test_a_relayed_token_request_is_refused(tokens):
    _, seed, chain, _ = tokens
    relayed = put_token(chain, seed, extra=[("X-Provnet-Relayed", "x-forwarded-for")])
    assert relayed.status == 400 and "X-Forwarded-For" in relayed.text
    assert agent_get(chain, "/latest/api/token", via(seed, extra=TTL)).status == 405  # GET: PUT only


def test_rotation_accepts_current_and_previous(tokens, tmp_path):
    registry, seed, chain, _ = tokens
    old_token = put_token(chain, seed).text
    config = load_config(files=[], env={}, overrides={
        "metadata_proxy_shared_secret": "the-new-secret",
        "metadata_proxy_shared_secret_previous": chain.api.secrets.current,
        "metadata.identity_signing_key": ""})
    path = "/openstack/latest/meta_data.json"
    chain.loop.loop.call_soon_threadsafe(chain.api.reload, config)  # step 2 on the API: new current, old previous
    chain.loop.run(_nothing())
    # the agent still signs with the old secret (not reloaded yet): accepted as previous; its old token too
    assert agent_get(chain, path, via(seed, extra=[("X-aws-ec2-metadata-token", old_token)])).status == 200
    chain.loop.loop.call_soon_threadsafe(chain.agent.reload, config)
    chain.loop.run(_nothing())
    assert agent_get(chain, path, via(seed, extra=[("X-aws-ec2-metadata-token", old_token)])).status == 200
    new_token = put_token(chain, seed).text
    assert new_token.split(".")[1] != old_token.split(".")[1]  # issued with the new key
    retired = load_config(files=[], env={}, overrides={"metadata_proxy_shared_secret": "the-new-secret",
                                                       "metadata.identity_signing_key": ""})
    chain.loop.loop.call_soon_threadsafe(chain.api.reload, retired)
    chain.loop.run(_nothing())
    assert agent_get(chain, path, via(seed, extra=[("X-aws-ec2-metadata-token", old_token)])).status == 401
    assert agent_get(chain, path, via(seed, extra=[("X-aws-ec2-metadata-token", new_token)])).status == 200


async def _nothing() -> None:
    return None


# ---- the pure core ------------------------------------------------------------------------------------------

def test_token_core_reasons():
    keys = TokenKeys.from_secrets("a")
    mine = Binding("i-1", "p-1", "fa:16:3e:00:00:01", "10.0.0.5")
    token = keys.issue(mine, 60, 1000.0)
    keys.check(token, mine, 1059.0)
    cases = [
        (Binding("i-1", "p-1", "fa:16:3e:00:00:01", "10.0.0.6"), 1000.0, "another address"),
        (Binding("i-2", "p-1", "fa:16:3e:00:00:01", "10.0.0.5"), 1000.0, "another instance"),
        (Binding("i-1", "p-2", "fa:16:3e:00:00:01", "10.0.0.5"), 1000.0, "another instance, port"),
        (Binding("i-1", "p-1", "fa:16:3e:00:00:02", "10.0.0.5"), 1000.0, "MAC"),
        (mine, 1060.0, "expired"),
    ]
    for binding, now, words in cases:
        with pytest.raises(TokenRefused) as info:
            keys.check(token, binding, now)
        assert words in str(info.value)
    with pytest.raises(TokenRefused, match="does not hold"):
        TokenKeys.from_secrets("b").check(token, mine, 1000.0)
    assert TokenKeys.from_secrets("b", ["a"]).check(token, mine, 1000.0) is None
    with pytest.raises(ValueError):
        parse_ttl(["1e3"])
