# provnet's own API over real HTTP: instances (user data, keys, metadata), passwords, the change feed, 500s.
from __future__ import annotations

import base64
import threading
import uuid

import pytest
from api_server import Client, running_api

from provnet.api.thread import ApiThread
from provnet.registry import open_registry
from provnet.registry.remote import RemoteRegistry


@pytest.fixture
def api(db_url: str):
    with running_api(db_url) as (client, _registry):
        yield client


def _instance_body(**extra) -> dict:
    return {"instance": {"name": "Web Server 1", "user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
                         "key_pairs": [{"name": "k1", "type": "ssh", "data": "ssh-ed25519 AAAA test@host"}],
                         "metadata": {"role": "web"}, "vendor_data": {"x": [1, 2]}, **extra}}


def test_instance_lifecycle(api: Client) -> None:
    instance_id = str(uuid.uuid4())
    made = api.ok("POST", "/provnet/v1/instances", _instance_body(id=instance_id), 201)["instance"]
    assert made["id"] == instance_id
    assert base64.b64decode(made["user_data"]) == b"#!/bin/sh\necho hi\n"
    assert made["key_pairs"] == [{"name": "k1", "type": "ssh", "data": "ssh-ed25519 AAAA test@host"}]
    assert made["metadata"] == {"role": "web"} and made["vendor_data"] == {"x": [1, 2]}
    assert made["hostname"] and made["project_id"] == "fake_project_id" and made["has_password"] is False
    assert api.ok("GET", f"/provnet/v1/instances/{instance_id}")["instance"] == made
    assert [i["id"] for i in api.ok("GET", "/provnet/v1/instances?name=Web+Server+1")["instances"]] == [instance_id]
    updated = api.ok("PUT", f"/provnet/v1/instances/{instance_id}",
                     {"instance": {"metadata": {"role": "db"}}})["instance"]
    assert updated["metadata"] == {"role": "db"}
    assert api.delete(f"/provnet/v1/instances/{instance_id}")[0] == 204
    status, body = api.get(f"/provnet/v1/instances/{instance_id}")
    assert status == 404 and body["NeutronError"]["type"] == "InstanceNotFound"


@pytest.mark.parametrize(("extra", "field"), [
    ({"user_data": "%%%not base64"}, "user_data"),
    ({"user_data": base64.b64encode(b"x" * (64 * 1024 + 1)).decode()}, "user_data"),
    ({"key_pairs": [{"name": "k"}]}, "key_pairs"),
    ({"metadata": {"a": {"nested": 1}}}, "metadata"),
    ({"vendor_data": [1]}, "vendor_data"),
    ({"launch_index": -1}, "launch_index"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_instances_are_400s_and_leave_nothing(api: Client, extra: dict, field: str) -> None:
    before = api.snapshot()
    status, body = api.post("/provnet/v1/instances", _instance_body(**extra))
    assert status == 400, body
    assert field in body["NeutronError"]["message"]
    assert api.snapshot() == before


def test_instance_password_is_set_once(api: Client) -> None:
    instance_id = api.ok("POST", "/provnet/v1/instances", _instance_body(), 201)["instance"]["id"]
    path = f"/provnet/v1/instances/{instance_id}/password"
    assert api.ok("GET", path) == {"password": None}
    assert api.post(path, {"password": "c2VjcmV0"})[0] == 204
    assert api.ok("GET", path) == {"password": "c2VjcmV0"}
    assert api.ok("GET", f"/provnet/v1/instances/{instance_id}")["instance"]["has_password"] is True
    status, body = api.post(path, {"password": "other"})
    assert status == 409
    for bad in ({"pw": "x"}, {"password": 5}, {"password": "x" * 300}):
        assert api.post(path, bad)[0] == 400
    assert api.post("/provnet/v1/instances/nope/password", {"password": "x"})[0] == 404


def _changes(api: Client, query: str) -> dict:
    return api.ok("GET", f"/provnet/v1/changes?{query}")


def test_the_change_feed_answers_what_changed_and_long_polls(api: Client) -> None:
    start = api.ok("GET", "/provnet/v1/revision")["revision"]
    net = api.ok("POST", "/v2.0/networks", {"network": {"name": "a"}}, 201)["network"]
    now = api.ok("GET", "/provnet/v1/revision")["revision"]
    assert now > start
    batch = _changes(api, f"after={start}")
    assert batch["revision"] == now and not batch["gap"]
    assert [(c["kind"], c["id"], c["op"]) for c in batch["changes"]] == [("network", net["id"], "create")]
    # nothing changes: the long-poll answers an empty batch at its timeout
    assert _changes(api, f"after={now}&timeout=0.2") == {"revision": now, "gap": False, "changes": []}
    # a write from another client wakes the waiter (the wait would otherwise end empty at 60 s)
    writer = Client(api.url)
    waiting = threading.Thread(target=lambda: results.append(_changes(api, f"after={now}&timeout=60")))
    results: list[dict] = []
    waiting.start()
    writer.post("/v2.0/networks", {"network": {"name": "b"}})
    waiting.join(90)
    assert [c["op"] for c in results[0]["changes"]] == ["create"]
    for bad in ("", "after=x", "after=-1", "after=²", f"after={now}&timeout=-1", f"after={now}&timeout=999",
                f"after={now}&timeout=soon", f"after={now}&limit=0", f"after={now}&limit=1e3"):
        status, body = api.get(f"/provnet/v1/changes?{bad}")
        assert status == 400 and ("Invalid input" in body["NeutronError"]["message"]
                                  or "not specified" in body["NeutronError"]["message"]), bad


def test_the_change_feed_sees_writes_made_by_another_process_of_the_store(db_url: str) -> None:
    """A change written straight to the database (e.g. by `provnet net-create` on the same store) wakes it too."""
    with running_api(db_url) as (client, _registry):
        now = client.ok("GET", "/provnet/v1/revision")["revision"]
        results: list[dict] = []
        waiting = threading.Thread(target=lambda: results.append(
            client.ok("GET", f"/provnet/v1/changes?after={now}&timeout=60")))
        waiting.start()
        other = open_registry(db_url)
        try:
            other.create_network({"name": "direct"})
        finally:
            other.close()
        waiting.join(90)
        assert [(c["kind"], c["op"]) for c in results[0]["changes"]] == [("network", "create")]


def test_many_remote_waiters_are_woken_by_one_external_write(db_url: str) -> None:
    with running_api(db_url) as (client, _registry):
        now = client.ok("GET", "/provnet/v1/revision")["revision"]
        results: list = []

        def wait() -> None:
            remote = RemoteRegistry(client.url)
            try:
                batch = remote.wait_changes(now, timeout=60)
                while not batch.changes and not batch.gap:  # an early empty answer is allowed
                    batch = remote.wait_changes(now, timeout=60)
                results.append(batch)
            finally:
                remote.close()

        threads = [threading.Thread(target=wait) for _ in range(10)]
        for t in threads:
            t.start()
        other = open_registry(db_url)
        try:
            net = other.create_network({"name": "from-elsewhere"})
        finally:
            other.close()
        for t in threads:
            t.join(timeout=90)
        assert len(results) == 10
        assert all([c.id for c in b.changes] == [net.id] for b in results)


class _BrokenRegistry:
    """The one fake here: a registry with a bug (RuntimeError), to prove an unexpected error is a generic 500."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def list_networks(self, filters=None, page=None):
        raise RuntimeError("secret internal detail /srv/db password=hunter2")


def test_unexpected_errors_are_generic_500s_without_a_traceback(tmp_path, caplog) -> None:
    real = open_registry(f"sqlite:///{tmp_path}/p.sqlite")
    try:
        with ApiThread(_BrokenRegistry(real)) as server:
            client = Client(server.url)
            status, body = client.get("/v2.0/networks")
            assert status == 500
            assert body["NeutronError"]["type"] == "HTTPInternalServerError"
            assert "hunter2" not in client.last.text and "Traceback" not in client.last.text
            assert client.ok("GET", "/healthz") == {"status": "ok"}
    finally:
        real.close()
    assert any("hunter2" in r.getMessage() or (r.exc_info and "hunter2" in str(r.exc_info[1]))
               for r in caplog.records), "the real error is logged for the operator"


def test_hot_path_lookups_and_their_bad_input(api: Client) -> None:
    net = api.ok("POST", "/v2.0/networks", {"network": {"name": "n"}}, 201)["network"]
    subnet = api.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                         "cidr": "10.7.0.0/24"}}, 201)["subnet"]
    port = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)["port"]
    ip, mac = port["fixed_ips"][0]["ip_address"], port["mac_address"]
    found = api.ok("GET", f"/provnet/v1/ports/by-ip?ip_address={ip}&network_id={net['id']}")["ports"]
    assert [p["id"] for p in found] == [port["id"]]
    assert api.ok("GET", f"/provnet/v1/ports/by-ip?ip_address={ip}&network_id=other")["ports"] == []
    assert [p["id"] for p in api.ok("GET", f"/provnet/v1/ports/by-mac?mac_address={mac.upper()}")["ports"]] == [
        port["id"]]
    router = api.ok("POST", "/v2.0/routers", {"router": {"name": "r"}}, 201)["router"]
    assert api.ok("GET", f"/provnet/v1/routers/{router['id']}/network_ids") == {"network_ids": []}
    api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    assert api.ok("GET", f"/provnet/v1/routers/{router['id']}/network_ids") == {"network_ids": [net["id"]]}
    for bad, message in [("by-ip", "Required attribute 'ip_address'"),
                         ("by-ip?ip_address=1.2.3.4&ip_address=1.2.3.5", "Required attribute 'ip_address'"),
                         ("by-ip?ip_address=not-an-ip", "'not-an-ip' is not a valid IP address"),
                         ("by-mac?mac_address=fa:16:3e", "'fa:16:3e' is not a valid MAC address"),
                         ("by-mac", "Required attribute 'mac_address'")]:
        status, body = api.get(f"/provnet/v1/ports/{bad}")
        assert status == 400 and message in body["NeutronError"]["message"], bad


def test_reservations_query_answers_rows_and_refuses_bad_bodies(api: Client) -> None:
    net, subnet = api.seed()
    port = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:00:00:09",
                                                    "fixed_ips": [{"ip_address": "172.16.1.109"}]}}, 201)["port"]
    rows = api.ok("POST", "/provnet/v1/reservations/query", {"network_ids": [net["id"]]})["reservations"]
    assert rows == [[port["id"], net["id"], subnet["id"], "fa:16:3e:00:00:09", "172.16.1.109", "", ""]]
    assert api.ok("POST", "/provnet/v1/reservations/query",
                  {"network_ids": [net["id"]], "port_ids": []})["reservations"] == []
    for bad in ([], {"port_ids": []}, {"network_ids": "x"}, {"network_ids": [1]}, {"network_ids": ["x" * 300]},
                {"network_ids": [], "other": 1}):
        status, body = api.post("/provnet/v1/reservations/query", bad)
        assert status == 400 and "NeutronError" in body, bad
    status, _ = api.post("/provnet/v1/reservations/query", raw=b"{not json")
    assert status == 400
