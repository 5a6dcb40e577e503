# provnet's networking API behind a real Keystone: tokens (401/503, cache, revocation) and Neutron's policy (403/404).
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from keystone_support import FakeClock, keystone_api, wait_until

from provnet.identity.neutron_policy import DEFAULT_RULES
from provnet.identity.policy import Policy

NET = {"name": "n1"}
PROVIDER = {"provider:network_type": "flat", "provider:physical_network": "physnet1"}


@pytest.fixture
def api(keystone, tmp_path: Path):
    with keystone_api(keystone, f"sqlite:///{tmp_path}/provnet.sqlite", register=False) as running:
        yield running


def neutron_error(body: dict) -> tuple[str, str]:
    return body["NeutronError"]["type"], body["NeutronError"]["message"]


def test_no_token_or_a_bad_one_is_401_with_keystones_uri(api, keystone) -> None:
    anonymous = api.client()
    for path in ("/v2.0/networks", "/v2.0/", "/provnet/v1/instances", "/v2.0/no-such-thing"):
        status, body = anonymous.get(path)
        assert status == 401, path
        assert body == {"error": {"code": 401, "title": "Unauthorized",
                                  "message": "The request you have made requires authentication."}}
        assert anonymous.last.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
    for bad in ("gAAAAAB-not-a-token", "x" * 8000, "tab\there"):
        status, _ = api.client(token=bad).get("/v2.0/networks")
        assert status == 401
    # the version document and the operational endpoints need no token (as Neutron's `/`)
    assert anonymous.get("/")[0] == 200 and anonymous.get("/healthz")[0] == 200


def test_a_member_sees_its_project_and_shared_or_external_networks_admin_sees_all(api, keystone) -> None:
    admin, alice, bob = api.client("root"), api.client("alice"), api.client("bob")
    mine = alice.ok("POST", "/v2.0/networks", {"network": {"name": "alice-net"}}, 201)["network"]
    assert mine["project_id"] == keystone.projects["demo"]  # the project comes from the token's scope
    theirs = bob.ok("POST", "/v2.0/networks", {"network": {"name": "bob-net"}}, 201)["network"]
    shared = admin.ok("POST", "/v2.0/networks", {"network": {"name": "shared", "shared": True}}, 201)["network"]
    external = admin.ok("POST", "/v2.0/networks", {"network": {"name": "ext", "router:external": True, **PROVIDER}},
                        201)["network"]
    hidden = admin.ok("POST", "/v2.0/networks", {"network": {"name": "admin-only"}}, 201)["network"]

    def names(client) -> set[str]:
        return {n["name"] for n in client.ok("GET", "/v2.0/networks")["networks"]}

    assert names(alice) == {"alice-net", "shared", "ext"}
    assert names(bob) == {"bob-net", "shared", "ext"}
    assert names(admin) == {"alice-net", "bob-net", "shared", "ext", "admin-only"}
    # provider attributes are admin-only to read: stripped for members, shown to admin
    ext_for_alice = alice.ok("GET", f"/v2.0/networks/{external['id']}")["network"]
    assert "provider:network_type" not in ext_for_alice and ext_for_alice["router:external"] is True
    assert admin.ok("GET", f"/v2.0/networks/{external['id']}")["network"]["provider:network_type"] == "flat"
    # someone else's network is not there at all: Neutron's NotFound, not a 403
    status, body = alice.get(f"/v2.0/networks/{theirs['id']}")
    assert status == 404 and neutron_error(body) == ("NetworkNotFound", f"Network {theirs['id']} could not be found.")
    for method in ("PUT", "DELETE"):
        status, body = alice.call(method, f"/v2.0/networks/{hidden['id']}", {"network": {"name": "x"}}
                                  if method == "PUT" else None)
        assert status == 404 and neutron_error(body)[0] == "NetworkNotFound"
    assert shared["id"] in {n["id"] for n in alice.ok("GET", "/v2.0/networks?shared=True")["networks"]}
    assert mine["id"] != theirs["id"]


def test_a_reader_cannot_create_or_change_a_member_can(api) -> None:
    alice, carol = api.client("alice"), api.client("carol")
    status, body = carol.post("/v2.0/networks", {"network": NET})
    assert status == 403 and neutron_error(body) == ("PolicyNotAuthorized",
                                                     "rule:create_network is disallowed by policy")
    net = alice.ok("POST", "/v2.0/networks", {"network": NET}, 201)["network"]
    assert carol.ok("GET", f"/v2.0/networks/{net['id']}")["network"]["name"] == "n1"  # readers read
    status, body = carol.put(f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed"}})
    assert status == 403 and neutron_error(body) == ("PolicyNotAuthorized",
                                                     "rule:update_network is disallowed by policy")
    status, body = carol.delete(f"/v2.0/networks/{net['id']}")
    assert status == 403
    assert alice.ok("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed"}})["network"]["name"] == \
        "renamed"


def test_a_member_cannot_set_provider_attributes_or_binding_host(api) -> None:
    admin, alice = api.client("root"), api.client("alice")
    status, body = alice.post("/v2.0/networks", {"network": {"name": "p", **PROVIDER}})
    assert status == 403 and neutron_error(body) == (
        "PolicyNotAuthorized", "((rule:create_network and rule:create_network:provider:network_type) and "
                               "rule:create_network:provider:physical_network) is disallowed by policy")
    status, body = alice.post("/v2.0/networks", {"network": {"name": "s", "shared": True}})
    assert status == 403 and "rule:create_network:shared" in neutron_error(body)[1]
    status, body = alice.post("/v2.0/networks", {"network": {"name": "s", "shared": False}})
    assert status == 201  # set to its default: not explicitly set, as Neutron decides
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "own"}}, 201)["network"]
    alice.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                  "cidr": "10.0.0.0/24"}}, 201)
    status, body = alice.post("/v2.0/ports", {"port": {"network_id": net["id"], "binding:host_id": "compute1"}})
    assert status == 403 and neutron_error(body) == (
        "PolicyNotAuthorized", "(rule:create_port and rule:create_port:binding:host_id) is disallowed by policy")
    port = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "device_id": "vm"}}, 201)["port"]
    assert not any(k in port for k in ("binding:host_id", "binding:vif_type", "binding:vif_details"))
    status, body = alice.put(f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": "compute1"}})
    assert status == 403 and neutron_error(body)[1] == ("(rule:update_port and rule:update_port:binding:host_id) is "
                                                        "disallowed by policy")
    bound = admin.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": "compute1"}})["port"]
    assert bound["binding:host_id"] == "compute1" and bound["binding:vif_type"] == "binding_failed"
    status, body = alice.post("/v2.0/networks", {"network": {"name": "x", "project_id": "someone-else"}})
    assert status == 400 and neutron_error(body) == (
        "HTTPBadRequest", "Specifying 'project_id' other than the authenticated project in request is not allowed "
                          "for the current user.")


def test_ports_of_other_projects_are_invisible_and_foreign_networks_refuse_ports(api) -> None:
    admin, alice, bob = api.client("root"), api.client("alice"), api.client("bob")
    net = bob.ok("POST", "/v2.0/networks", {"network": {"name": "bobs"}}, 201)["network"]
    bob.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/24"}},
           201)
    port = bob.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)["port"]
    assert alice.ok("GET", "/v2.0/ports")["ports"] == []
    status, body = alice.get(f"/v2.0/ports/{port['id']}")
    assert status == 404 and neutron_error(body) == ("PortNotFound", f"Port {port['id']} could not be found.")
    status, body = alice.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert status == 404 and neutron_error(body)[0] == "NetworkNotFound"
    assert [p["id"] for p in admin.ok("GET", "/v2.0/ports")["ports"]] == [port["id"]]
    # the shared network takes anyone's ports
    shared = admin.ok("POST", "/v2.0/networks", {"network": {"name": "sh", "shared": True}}, 201)["network"]
    admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": shared["id"], "ip_version": 4,
                                                  "cidr": "10.2.0.0/24"}}, 201)
    mine = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": shared["id"]}}, 201)["port"]
    assert [p["id"] for p in alice.ok("GET", "/v2.0/ports")["ports"]] == [mine["id"]]


def test_provnet_v1_is_for_admin_and_service_and_agent_reports_for_the_service(api) -> None:
    admin, alice, service = api.client("root"), api.client("alice"), api.client("provnet")
    status, body = alice.get("/provnet/v1/instances")
    assert status == 403 and neutron_error(body) == ("PolicyNotAuthorized",
                                                     "rule:provnet:instances is disallowed by policy")
    assert alice.get("/provnet/v1/revision")[0] == 403
    assert admin.get("/provnet/v1/instances")[0] == 200 and service.get("/provnet/v1/instances")[0] == 200
    report = {"agent": {"host": "h1", "agent_type": "Open vSwitch agent", "binary": "provnet-agent"}}
    status, body = admin.post("/provnet/v1/agents/report", report)
    assert status == 403 and neutron_error(body)[1] == "rule:provnet:report_agent_state is disallowed by policy"
    assert service.post("/provnet/v1/agents/report", report)[0] == 200
    # agents: admin only (a member lists none and cannot see one)
    assert alice.ok("GET", "/v2.0/agents")["agents"] == []
    assert len(admin.ok("GET", "/v2.0/agents")["agents"]) == 1


def test_a_revoked_token_is_refused_once_the_cache_ttl_has_passed(keystone, tmp_path: Path) -> None:
    clock = FakeClock()
    with keystone_api(keystone, f"sqlite:///{tmp_path}/p.sqlite", register=False, clock=clock,
                      token_cache_time=60.0) as api:
        token = keystone.fresh_token("alice")
        client = api.client(token=token)
        assert client.get("/v2.0/networks")[0] == 200
        keystone.admin.revoke(token)
        clock.advance(59)
        assert client.get("/v2.0/networks")[0] == 200  # cached: Keystone is not asked again within the TTL
        clock.advance(2)
        status, _ = client.get("/v2.0/networks")
        assert status == 401  # asked again: revoked
        assert api.client("alice").get("/v2.0/networks")[0] == 200  # a new token works


def test_keystone_down_is_503_never_a_pass_and_service_resumes_by_itself(keystone, tmp_path: Path) -> None:
    with keystone_api(keystone, f"sqlite:///{tmp_path}/p.sqlite", register=False) as api:
        cached = api.client("alice")
        assert cached.get("/v2.0/networks")[0] == 200
        fresh_token = keystone.fresh_token("bob")
        keystone.stop()
        try:
            status, body = api.client(token=fresh_token).get("/v2.0/networks")
            assert status == 503
            assert body["error"]["code"] == 503 and keystone.url.rsplit("/v3", 1)[0] in body["error"]["message"]
            assert cached.get("/v2.0/networks")[0] == 200  # an already validated token keeps working
        finally:
            keystone.start()
        status, _ = api.client(token=fresh_token).get("/v2.0/networks")
        assert status == 200  # no restart of provnet: the next request asks Keystone again


def test_a_service_user_keystone_refuses_is_503_and_the_password_is_never_shown(keystone, tmp_path: Path,
                                                                                 caplog) -> None:
    with keystone_api(keystone, f"sqlite:///{tmp_path}/p.sqlite", register=False,
                      password="wrong-secret-123") as api:
        status, body = api.client("alice").get("/v2.0/networks")
        assert status == 503 and "refused provnet's service user" in body["error"]["message"]
        assert "wrong-secret-123" not in json.dumps(body) and "wrong-secret-123" not in caplog.text


def test_a_policy_file_overrides_neutrons_defaults(keystone, tmp_path: Path) -> None:
    rules = {"create_network": "role:reader", "get_network": "rule:admin_only or project_id:%(project_id)s"}
    policy = Policy(DEFAULT_RULES).override(rules, "test policy")
    with keystone_api(keystone, f"sqlite:///{tmp_path}/p.sqlite", register=False, policy=policy) as api:
        carol = api.client("carol")
        assert carol.post("/v2.0/networks", {"network": NET})[0] == 201
        admin = api.client("root")
        admin.ok("POST", "/v2.0/networks", {"network": {"name": "ext", "router:external": True, **PROVIDER}}, 201)
        assert [n["name"] for n in carol.ok("GET", "/v2.0/networks")["networks"]] == ["n1"]  # external now hidden


def gunicorn_pids(keystone) -> list[int]:
    """Keystone's gunicorn master (its pidfile) and its workers (children of it): processes this session started."""
    master = int((keystone.dir / "gunicorn.pid").read_text())
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                and _ppid(p) == master]
    return [master, *children]


def _ppid(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_a_hung_keystone_is_503_after_the_timeout_while_cached_callers_are_served(keystone, tmp_path: Path) -> None:
    import os
    import signal
    import threading

    with keystone_api(keystone, f"sqlite:///{tmp_path}/p.sqlite", register=False, timeout=2.0) as api:
        cached = api.client("alice")
        wait_until(lambda: cached.get("/v2.0/networks")[0] == 200, timeout=60, interval=0.5)  # validated once
        fresh = keystone.fresh_token("bob")
        pids = gunicorn_pids(keystone)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            answer: dict = {}
            waiting = threading.Thread(target=lambda: answer.update(r=api.client(token=fresh).get("/v2.0/networks")))
            waiting.start()
            for _ in range(5):  # the event loop keeps serving while a validation waits for the hung Keystone
                assert cached.get("/v2.0/networks")[0] == 200
            waiting.join(30)
            status, body = answer["r"]
            assert status == 503 and "unreachable" in body["error"]["message"]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        # resumed: the same token passes as soon as Keystone has worked off what queued while it was stopped
        wait_until(lambda: api.client(token=fresh).get("/v2.0/networks")[0] == 200, timeout=60, interval=0.5)


def test_project_headers_are_ignored_behind_keystone(api, keystone) -> None:
    alice = api.client("alice")
    made = alice.ok("POST", "/v2.0/networks", {"network": {"name": "mine"}}, 201)["network"]
    forged = alice.call("POST", "/v2.0/networks", {"network": {"name": "forged"}},
                        headers={"X-Project-Id": keystone.projects["other"], "X-Tenant-Id": "x"})
    assert forged[0] == 201 and forged[1]["network"]["project_id"] == made["project_id"] == keystone.projects["demo"]


@pytest.fixture
def api_on(keystone, db_url: str):
    """The API behind Keystone on SQLite and on PostgreSQL (the store cuts the pages)."""
    with keystone_api(keystone, db_url, register=False) as running:
        yield running


def follow(client, path: str, collection: str) -> tuple[list[str], list[str]]:
    """Every page of a list through its `next` links: the ids, and every marker the links named."""
    ids: list[str] = []
    markers: list[str] = []
    while path:
        body = client.ok("GET", path)
        ids += [item["id"] for item in body[collection]]
        nxt = next((link["href"] for link in body.get(f"{collection}_links", []) if link["rel"] == "next"), None)
        path = ""
        if nxt is not None and body[collection]:
            markers += urllib.parse.parse_qs(urllib.parse.urlsplit(nxt).query)["marker"]
            parts = urllib.parse.urlsplit(nxt)
            path = f"{parts.path}?{parts.query}"
    return ids, markers


def test_pages_under_the_policy_hold_only_what_the_caller_sees_and_links_never_name_the_rest(
        api_on, monkeypatch) -> None:
    """A member's pages are full pages of its own networks, whatever lies between them in the store; the links'
    markers are ids the member sees (another project's ids never leak through them). The store is read in
    chunks of 3 here so the chunked read crosses other projects' networks more than once."""
    from provnet.api import networking

    monkeypatch.setattr(networking, "VISIBLE_CHUNK", 3)
    alice, bob, admin = api_on.client("alice"), api_on.client("bob"), api_on.client("root")
    mine, theirs = [], []
    for i in range(5):  # interleaved in the store: a, b, b, a, b, b, ...
        mine.append(alice.ok("POST", "/v2.0/networks", {"network": {"name": f"a{i}"}}, 201)["network"]["id"])
        for j in range(2):
            theirs.append(bob.ok("POST", "/v2.0/networks", {"network": {"name": f"b{i}{j}"}}, 201)["network"]["id"])
    for limit in (1, 2, 3):
        ids, markers = follow(alice, f"/v2.0/networks?limit={limit}&sort_key=name&sort_dir=asc", "networks")
        assert ids == mine  # sorted by name a0..a4: each page full, none missing, none twice
        assert set(markers) <= set(mine)
    body = alice.ok("GET", "/v2.0/networks?limit=2&sort_key=name&sort_dir=desc")
    assert [n["name"] for n in body["networks"]] == ["a4", "a3"]
    # a reverse page (the page before the marker) holds the member's own items just before it
    body = alice.ok("GET", f"/v2.0/networks?limit=2&sort_key=name&sort_dir=asc&marker={mine[3]}&page_reverse=True")
    assert [n["name"] for n in body["networks"]] == ["a1", "a2"]
    assert all(urllib.parse.parse_qs(urllib.parse.urlsplit(link["href"]).query)["marker"][0] in mine
               for link in body["networks_links"])
    ids, _ = follow(admin, "/v2.0/networks?limit=4", "networks")
    assert sorted(ids) == sorted(mine + theirs)  # admin: the store's own pages, everything


def test_bulk_creates_past_the_inline_size_are_checked_like_any_other(api_on) -> None:
    """A bulk body over 64 KiB is parsed off the event loop; it is still checked: a member cannot put ports on
    another project's network in bulk, and nothing of the refused bulk is created."""
    alice, bob = api_on.client("alice"), api_on.client("bob")
    net = bob.ok("POST", "/v2.0/networks", {"network": {"name": "bobs"}}, 201)["network"]
    bob.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                "cidr": "10.9.0.0/20"}}, 201)
    ports = [{"network_id": net["id"], "name": "p" * 200} for _ in range(400)]
    assert len(json.dumps({"ports": ports})) > 64 * 1024
    status, body = alice.post("/v2.0/ports", {"ports": ports})
    assert status == 404 and neutron_error(body)[0] == "NetworkNotFound"
    assert bob.ok("GET", "/v2.0/ports")["ports"] == []
    created = bob.ok("POST", "/v2.0/ports", {"ports": ports}, 201)["ports"]
    assert len(created) == 400 and "binding:host_id" not in created[0]  # a member's view, even in bulk


def test_mains_agent_facing_routes_are_for_admin_or_service_explain_for_admin_the_jwks_for_anyone(api) -> None:
    admin, alice, service = api.client("root"), api.client("alice"), api.client("provnet")
    anonymous = api.client()
    # the change feed and the DHCP servers' reservation query: agents' reads
    for client, allowed in ((alice, False), (service, True), (admin, True)):
        assert (client.get("/provnet/v1/changes?after=0")[0] == 200) is allowed
        status, _ = client.post("/provnet/v1/reservations/query", {"network_ids": []})
        assert (status == 200) is allowed
    status, body = alice.post("/provnet/v1/reservations/query", {"network_ids": []})
    assert status == 403 and neutron_error(body)[1] == "rule:provnet:agent_lookups is disallowed by policy"
    # the L3 agent scheduler: the service user reads the schedule (provnet's L3 agent does), only admin changes it
    report = {"agent": {"host": "net1", "agent_type": "L3 agent", "binary": "provnet-l3-agent"}}
    agent = service.ok("POST", "/provnet/v1/agents/report", report)["agent"]
    router = alice.ok("POST", "/v2.0/routers", {"router": {"name": "r"}}, 201)["router"]
    status, body = alice.get(f"/v2.0/agents/{agent['id']}/l3-routers")
    assert status == 403 and neutron_error(body)[1] == "rule:get_l3-routers is disallowed by policy"
    assert alice.get(f"/v2.0/routers/{router['id']}/l3-agents")[0] == 403
    assert service.ok("GET", f"/v2.0/agents/{agent['id']}/l3-routers")["routers"] == []
    status, body = service.post(f"/v2.0/agents/{agent['id']}/l3-routers", {"router_id": router["id"]})
    assert status == 403 and neutron_error(body)[1] == "rule:create_l3-router is disallowed by policy"
    assert admin.post(f"/v2.0/agents/{agent['id']}/l3-routers", {"router_id": router["id"]})[0] == 201
    assert [a["id"] for a in service.ok("GET", f"/v2.0/routers/{router['id']}/l3-agents")["agents"]] == [agent["id"]]
    assert alice.call("DELETE", f"/v2.0/agents/{agent['id']}/l3-routers/{router['id']}")[0] == 403
    assert admin.call("DELETE", f"/v2.0/agents/{agent['id']}/l3-routers/{router['id']}")[0] == 204
    # metadata-explain reads any VM's ports and probes the metadata API: admin only
    explain = "/provnet/v1/metadata/explain?network_id=x&ip=10.0.0.5&probe=false"
    for client in (alice, service):
        status, body = client.get(explain)
        assert status == 403 and neutron_error(body)[1] == "rule:provnet:metadata_explain is disallowed by policy"
    assert anonymous.get(explain)[0] == 401
    assert admin.get(explain)[0] != 403
    # the identity documents' keys: anyone, no token (verifiers hold no OpenStack credentials)
    status, body = anonymous.get("/provnet/v1/metadata/jwks.json")
    assert status == 200 and body == {"keys": []}


def route_table(registry) -> set[tuple[str, str]]:
    """(method, template) of every route the API's app has (HEAD: aiohttp's twin of each GET)."""
    from provnet.api.app import make_app

    app = make_app(registry)
    return {(route.method, route.resource.canonical.replace("{ext}", "")) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def test_every_route_has_a_policy_decision_and_answers_by_it(api) -> None:
    """Walks the app's route table: each route has its line in ROUTE_POLICY (and no line names a route that is
    gone); behind Keystone a public route answers without a token, every other is 401 without one, and a
    rule-guarded one refuses a project member with Neutron's 403 naming the rule before anything is read."""
    from provnet.api.auth import AUTHENTICATED, PUBLIC, RESOURCE, ROUTE_POLICY

    routes = route_table(api.registry)
    assert len(routes) > 40
    assert sorted(routes - set(ROUTE_POLICY)) == [], "routes without a policy decision"
    assert sorted(set(ROUTE_POLICY) - routes) == [], "decisions for routes that do not exist"
    anonymous, alice = api.client(), api.client("alice")
    fill = {"{id}": "4d3a1f1e-0000-4000-8000-000000000001", "{router_id}": "4d3a1f1e-0000-4000-8000-000000000002",
            "{alias}": "binding", "{action}": "add_router_interface"}
    for (method, template), decision in sorted(ROUTE_POLICY.items()):
        path = template
        for name, value in fill.items():
            path = path.replace(name, value)
        body = {} if method in ("POST", "PUT") else None
        status = anonymous.session.request(method, api.url + path, json=body, timeout=30).status_code
        if decision == PUBLIC:  # (/metrics is text)
            assert status == 200, (method, template, status)
            continue
        assert status == 401, (method, template, status)
        status, answer = alice.call(method, path, body)
        if decision in (AUTHENTICATED, RESOURCE):
            assert status not in (401, 500), (method, template, status, answer)
        else:
            assert status == 403, (method, template, status, answer)
            assert neutron_error(answer) == ("PolicyNotAuthorized", f"rule:{decision} is disallowed by policy")


def test_a_route_without_a_policy_decision_is_refused_before_its_handler_runs(api, keystone) -> None:
    """Fail closed: a route added to the app without its line in ROUTE_POLICY is 403 behind Keystone, even for
    the cloud admin, and its handler never runs (nothing it would do happens)."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from provnet.api.app import make_app
    from provnet.api.auth import Auth

    ran: list[str] = []
    token = keystone.token("root")

    async def unlisted(request: web.Request) -> web.Response:
        ran.append(request.path)
        return web.json_response({})

    async def scenario() -> tuple[int, dict]:
        app = make_app(api.registry, auth=Auth("keystone", validator=api.validator))
        app.router.add_post("/v2.0/unlisted", unlisted)
        async with TestClient(TestServer(app)) as client:
            assert (await client.post("/v2.0/unlisted")).status == 401
            response = await client.post("/v2.0/unlisted", headers={"X-Auth-Token": token})
            return response.status, await response.json()

    status, body = asyncio.run(scenario())
    assert status == 403 and neutron_error(body) == ("PolicyNotAuthorized",
                                                     "POST /v2.0/unlisted is disallowed by policy")
    assert ran == []
