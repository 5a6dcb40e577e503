# The metadata API over HTTP on a real registry (SQLite and PostgreSQL): Nova's proxy-mode checks, password,
# direct mode, status endpoints, and answers that follow registry changes at once.
from __future__ import annotations

import inspect
import ipaddress
import json

import pytest
from metadata_chain import SECRET, Chain, api_get, build_seed

from provnet.metadata.http11 import Message
from provnet.metadata.serving import Peer
from provnet.metadata.signing import sign_instance_id
from provnet.registry import open_registry


def signed(instance_id: str, tenant: str, secret: str = SECRET) -> list[tuple[str, str]]:
    return [("X-Instance-ID", instance_id), ("X-Tenant-ID", tenant),
            ("X-Instance-ID-Signature", sign_instance_id(secret, instance_id)), ("X-Forwarded-For", "172.16.1.103")]


def test_signed_request_gets_the_instance(setup):
    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    tenant = registry.get_instance(vm1).project_id
    answer = api_get(chain.api.port, "/openstack/latest/meta_data.json", signed(vm1, tenant))
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body)["uuid"] == vm1
    assert answer.headers["x-openstack-request-id"].startswith("req-")
    assert api_get(chain.api.port, "/", []).text.endswith("2009-04-04\nlatest")  # `/` needs no identity


@pytest.mark.parametrize("drop,status,message", [
    ("X-Instance-ID", 400, "X-Instance-ID header is missing"),
    ("X-Instance-ID-Signature", 400, "X-Instance-ID-Signature header is missing"),
    ("X-Tenant-ID", 400, "X-Tenant-ID header is missing"),
])
def test_missing_headers_are_400(setup, drop, status, message):
    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    headers = [h for h in signed(vm1, registry.get_instance(vm1).project_id) if h[0] != drop]
    answer = api_get(chain.api.port, "/latest/meta-data/instance-id", headers)
    assert answer.status == status and message in answer.text


def test_duplicated_wrong_and_foreign_identity(setup):
    registry, seed, chain = setup
    vm1, vm2 = seed.instances["vm1"], seed.instances["vm2"]
    tenant = registry.get_instance(vm1).project_id
    good = signed(vm1, tenant)
    port = chain.api.port
    path = "/openstack/latest/meta_data.json"
    assert api_get(port, path, good + [("x-instance-id", vm2)]).status == 400
    assert api_get(port, path, good + [("X-TENANT-ID", tenant)]).status == 400
    assert api_get(port, path, good + [("X-Instance-ID-Signature", "0" * 64)]).status == 400
    wrong_sig = [(k, "0" * 64 if k == "X-Instance-ID-Signature" else v) for k, v in good]
    forbidden = api_get(port, path, wrong_sig)
    assert forbidden.status == 403 and "Invalid proxy request signature" in forbidden.text
    other_secret = signed(vm1, tenant, secret="not-the-secret")
    assert api_get(port, path, other_secret).status == 403
    # a signature for vm1 does not open vm2
    swapped = [(k, vm2 if k == "X-Instance-ID" else v) for k, v in good]
    assert api_get(port, path, swapped).status == 403
    # right signature, wrong tenant: 404; signed but unknown instance: 404
    assert api_get(port, path, signed(vm1, "someone-else")).status == 404
    assert api_get(port, path, signed("0c8d3c4e-0000-4000-8000-00000000dead", tenant)).status == 404
    assert api_get(port, path, good + [("X-Metadata-Provider", "lb")]).status == 400


def test_password_set_once_and_read_back(setup):
    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    headers = signed(vm1, registry.get_instance(vm1).project_id)
    port = chain.api.port
    path = "/openstack/2013-04-04/password"
    assert api_get(port, path, headers).body == b""
    assert api_get(port, path, headers, "POST", b"x" * 1021).status == 400
    for bad in (b"a\x00b", b"\xed\xa0\x80", b"\xff"):  # NUL (a traceback per request, found by the fuzz), a
        assert api_get(port, path, headers, "POST", bad).status == 400  # UTF-8-encoded surrogate, not UTF-8
    assert registry.get_instance_password(vm1) in (None, "")  # nothing stored
    assert api_get(port, path, headers, "POST", b"encrypted-password").status == 200
    assert api_get(port, path, headers).body == b"encrypted-password"
    assert registry.get_instance_password(vm1) == "encrypted-password"
    assert api_get(port, path, headers, "POST", b"again").status == 409
    assert api_get(port, path, headers, "PUT", b"again").status == 400
    assert api_get(port, "/openstack/2012-08-10/password", headers).status == 404


def test_status_endpoints_only_without_instance_headers(setup):
    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    port = chain.api.port
    assert api_get(port, "/healthz", []).status == 200
    assert api_get(port, "/readyz", []).status == 200
    api_get(port, "/latest/meta-data/", signed(vm1, registry.get_instance(vm1).project_id))
    metrics = api_get(port, "/metrics", []).text
    assert 'provnet_metadata_api_requests_total{status="200"}' in metrics
    assert "provnet_metadata_api_request_seconds_bucket" in metrics
    assert "provnet_metadata_api_cache_total" in metrics
    answer = api_get(port, "/healthz", signed(vm1, registry.get_instance(vm1).project_id))
    assert answer.status == 404  # what a VM reaches is the metadata tree, never the status pages


def test_answers_follow_registry_changes_as_the_feed_delivers_them(setup):
    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    headers = signed(vm1, registry.get_instance(vm1).project_id)
    port = chain.api.port
    assert api_get(port, "/latest/meta-data/hostname", headers).text == "vm1.novalocal"
    registry.update_instance(vm1, {"hostname": "renamed"})
    chain.settle()  # the change reaches the API's cache through the feed (milliseconds), within cache_expiration
    assert api_get(port, "/latest/meta-data/hostname", headers).text == "renamed.novalocal"
    registry.delete_port(seed.ports["vm1"])
    chain.settle()
    nd = json.loads(api_get(port, "/openstack/latest/network_data.json", headers).body)
    assert nd == {}


def test_direct_mode_is_off_by_default_and_identifies_by_address_when_on(setup):
    registry, seed, chain = setup
    request = Message(headers=[("Host", "169.254.169.254")], method="GET",
                      target="/openstack/latest/meta_data.json")

    def answer(address: str):
        result = chain.api.handle(request, Peer(address))
        return result if not inspect.isawaitable(result) else chain.loop.run(_awaited(result))

    off = answer("172.16.1.103")
    assert off.status == 400  # no proxy headers, and no trusted networks configured
    chain.api.trusted = [ipaddress.ip_network("172.16.1.0/24")]
    on = answer("172.16.1.103")
    assert on.status == 200 and json.loads(on.body)["uuid"] == seed.instances["vm1"]
    assert answer("172.16.1.104").body.count(seed.instances["vm2"].encode()) == 1
    assert answer("172.16.1.199").status == 404  # no port
    assert answer("10.0.0.1").status == 400  # not trusted


async def _awaited(awaitable):
    return await awaitable


def test_pipelined_requests_are_answered_in_order(setup):
    import socket

    registry, seed, chain = setup
    vm1 = seed.instances["vm1"]
    head = "".join(f"{k}: {v}\r\n" for k, v in signed(vm1, registry.get_instance(vm1).project_id))
    one = f"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n{head}\r\n"
    two = f"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}\r\n"
    with socket.create_connection(("127.0.0.1", chain.api.port), 5) as sock:
        sock.sendall((one + two).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and first.endswith(b"vm1.novalocal")
    assert second.startswith(b"200") and f'"uuid": "{vm1}"'.encode() in second


def test_direct_mode_over_a_real_socket(tmp_path):
    """A VM on a trusted network talks to the API itself (no proxy, no agent): its TCP source names it."""
    registry = open_registry(f"sqlite:///{tmp_path}/direct.sqlite")
    seed = build_seed(registry, {"vm1": "127.0.0.1"}, cidr="127.0.0.0/24", gateway="127.0.0.2",
                      external_router="127.0.0.3")
    chain = Chain(registry, tmp_path, trusted_networks=["127.0.0.0/24"])
    try:
        answer = api_get(chain.api.port, "/openstack/latest/meta_data.json", [])
        assert answer.status == 200 and json.loads(answer.body)["uuid"] == seed.instances["vm1"]
        # signed headers still take precedence (and are still checked)
        assert api_get(chain.api.port, "/latest/meta-data/", [("X-Instance-ID", "x")]).status == 400
    finally:
        chain.close()
        registry.close()
    (tmp_path / "off").mkdir()
    closed = Chain(open_registry(f"sqlite:///{tmp_path}/direct.sqlite"), tmp_path / "off")
    try:
        assert api_get(closed.api.port, "/openstack/latest/meta_data.json", []).status == 400  # off by default
    finally:
        closed.close()
        closed.registry.close()
