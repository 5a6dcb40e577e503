# Pure pieces of the metadata path: HTTP/1.1 rendering (parsing: test_metadata_http.py), the proxy's header rule,
# the agent's header parsing, rate limiting, the status pages, and reading Neutron's metadata_agent.ini.
from __future__ import annotations

import asyncio
import time

import pytest

from provnet.config import ConfigError, load_config
from provnet.metadata import http11
from provnet.metadata.agent import BadRequest, parse_forwarded_for, parse_scope
from provnet.metadata.api import MetadataApi
from provnet.metadata.http11 import Message
from provnet.metadata.neutron_conf import read_neutron_ini
from provnet.metadata.proxy import agent_headers
from provnet.metadata.ratelimit import RateLimiter, Window
from provnet.metadata.serving import Peer, Response
from provnet.registry import open_registry


def test_rendered_response_has_length_and_no_body_for_head():
    out = http11.render_response(200, b"abc", [("Content-Type", "text/plain")], keep_alive=False)
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n") and out.endswith(b"\r\n\r\nabc")
    assert b"Connection: close" in out
    assert http11.render_response(200, b"abc", head_only=True).endswith(b"\r\n\r\n")


SPOOF = [("X-Forwarded-For", "10.0.0.99"), ("x-instance-id", "other"), ("X-INSTANCE-ID-SIGNATURE", "f" * 64),
         ("X-Tenant-Id", "t"), ("x-neutron-router-id", "r2"), ("X-Neutron-Network-ID", "n2"),
         ("X-Metadata-Provider", "p"), ("x-metadata-provider-signature", "s"), ("X-OVN-Network-ID", "n3"),
         ("X-Openstack-Request-Id", "req-forged"), ("Content-Type", "text/plain")]


@pytest.mark.parametrize("body", [b"", b"password"])
def test_proxy_sends_only_its_own_identity_headers(body):
    client = Message(headers=SPOOF + SPOOF, body=body)
    out = agent_headers(client, "172.16.1.103", "X-Neutron-Router-ID", "r1", "req-1")
    names = [k.lower() for k, _ in out]
    assert ("X-Forwarded-For", "172.16.1.103") in out and ("X-Neutron-Router-ID", "r1") in out
    assert names.count("x-forwarded-for") == 1 and names.count("x-neutron-router-id") == 1
    assert not any(n.startswith(("x-instance", "x-tenant", "x-metadata", "x-ovn", "x-neutron-network"))
                   for n in names)
    assert ("X-Openstack-Request-Id", "req-1") in out and names.count("x-openstack-request-id") == 1
    assert ("content-type" in names) == bool(body)


def test_agent_header_parsing():
    assert parse_forwarded_for(["172.16.1.103"]) == "172.16.1.103"
    assert parse_forwarded_for(["::ffff:172.16.1.103"]) == "172.16.1.103"
    assert parse_forwarded_for(["fe80::1"]) == "fe80::1"
    for bad in (["1.2.3.4", "5.6.7.8"], ["1.2.3.4, 5.6.7.8"], ["evil"], [], [""]):
        with pytest.raises(BadRequest):
            parse_forwarded_for(bad)

    def scope(*headers):
        return parse_scope(Message(headers=list(headers)))

    assert scope(("X-Neutron-Router-ID", "r1")) == ("router", "r1")
    assert scope(("x-neutron-network-id", "n1")) == ("network", "n1")
    for bad in ([("X-Neutron-Router-ID", "r1"), ("X-Neutron-Network-ID", "n1")],
                [("X-Neutron-Router-ID", "r1"), ("X-Neutron-Router-ID", "r2")],
                [("X-Neutron-Router-ID", "r1, r2")], [("X-Neutron-Router-ID", " ")], []):
        with pytest.raises(BadRequest):
            scope(*bad)


def test_rate_limiter_base_and_burst_windows():
    limiter = RateLimiter([Window(60, 6), Window(10, 2)])
    assert limiter.check("10.0.0.1", 0.0) == 0
    assert limiter.check("10.0.0.1", 1.0) == 0
    assert limiter.check("10.0.0.1", 2.0) == 8  # burst: 2 per 10 s, the first leaves at t=10
    assert limiter.check("2001:db8::1", 2.0) == 0  # IPv6 sources are limited too, separately per address
    assert limiter.check("10.0.0.2", 2.0) == 0
    assert limiter.check("10.0.0.1", 10.5) == 0
    for t in (20.0, 21.0, 30.0):
        assert limiter.check("10.0.0.1", t) == 0
    assert limiter.check("10.0.0.1", 45.0) == 15  # base: 6 per 60 s, the oldest (t=0) leaves at t=60
    assert RateLimiter([Window(10, 0)]).check("10.0.0.1", 0.0) == 10


def test_rate_limiter_forgets_oldest_sources_when_full():
    limiter = RateLimiter([Window(10, 1)], max_sources=2)
    limiter.check("a", 0.0)
    limiter.check("b", 0.0)
    limiter.check("c", 0.0)
    assert limiter.check("a", 0.5) == 0  # forgotten, so allowed again


NEUTRON_INI = """\
[DEFAULT]
debug = True
log_dir = /var/log/neutron
transport_url = rabbit://guest:guest@ctl:5672/
nova_metadata_ip = 10.0.0.5
nova_metadata_port = 8775
metadata_proxy_shared_secret = s3cret
metadata_workers = 2

[cache]
enabled = true
backend = dogpile.cache.memory

[metadata_rate_limiting]
rate_limit_enabled = true
ip_versions = 4
base_query_rate_limit = 6
base_window_duration = 60
"""


def test_neutron_metadata_agent_ini_is_read_with_neutrons_names(tmp_path):
    path = tmp_path / "metadata_agent.ini"
    path.write_text(NEUTRON_INI)
    found, ignored = read_neutron_ini(path)
    config = load_config(files=[], env={}).with_overrides(found, source=str(path))
    assert config.nova_metadata_host == "10.0.0.5" and config.nova_metadata_port == 8775
    assert config.metadata_proxy_shared_secret == "s3cret" and config.metadata_workers == 2
    assert config.get("metadata_rate_limiting.rate_limit_enabled") is True
    assert config.get("metadata_rate_limiting.base_query_rate_limit") == 6
    assert config.source("nova_metadata_host") == str(path)
    assert "[DEFAULT] transport_url" in ignored and "[cache] enabled" in ignored
    assert "[metadata_rate_limiting] ip_versions" in ignored


def test_neutron_ini_with_a_bad_value_names_option_and_file(tmp_path):
    path = tmp_path / "metadata_agent.ini"
    path.write_text("[DEFAULT]\nnova_metadata_port = eighty\n")
    found, _ = read_neutron_ini(path)
    with pytest.raises(ConfigError, match="nova_metadata_port.*metadata_agent.ini"):
        load_config(files=[], env={}).with_overrides(found, source=str(path))
    path.write_text("not an ini\n")
    with pytest.raises(ConfigError, match="metadata_agent.ini"):
        read_neutron_ini(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_neutron_ini(tmp_path / "missing.ini")


def test_neutron_ini_may_repeat_an_option_the_later_wins_but_provnet_ini_may_not(tmp_path):
    text = "[DEFAULT]\nnova_metadata_host = 10.0.0.5\nnova_metadata_host = 10.0.0.6\n"
    path = tmp_path / "metadata_agent.ini"
    path.write_text(text)
    found, _ = read_neutron_ini(path)
    assert found["nova_metadata_host"] == "10.0.0.6"
    own = tmp_path / "provnet.conf"
    own.write_text(text)
    with pytest.raises(ConfigError, match="provnet.conf.*nova_metadata_host"):
        load_config(files=[own], env={})


def test_readyz_follows_the_registry_healthz_does_not(tmp_path):
    up = open_registry(f"sqlite:///{tmp_path / 'r.db'}")
    down = open_registry(api_url="http://127.0.0.1:9")  # the remote registry, nothing listening on port 9

    async def pages(registry) -> dict[str, Response]:
        api = MetadataApi(registry, shared_secret="s", port=0)
        await api.start()
        try:
            deadline = time.monotonic() + 30
            while registry is down and api.feed.healthy:  # the feed's first read fails: an event, not a delay
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            return {path: api.handle(Message([("Host", "x")], method="GET", target=path), Peer("127.0.0.1"))
                    for path in ("/readyz", "/healthz", "/metrics")}
        finally:
            await api.stop()

    try:
        assert asyncio.run(pages(up))["/readyz"].status == 200
        answers = asyncio.run(pages(down))
        assert answers["/readyz"].status == 503 and b"registry unavailable" in answers["/readyz"].body
        assert answers["/healthz"].status == 200
        assert b"provnet_metadata_api_requests" in answers["/metrics"].body
    finally:
        up.close()
        down.close()
