# Hostile values in every API field and every list filter, on SQLite and PostgreSQL: always 4xx or success, never a
# 500, and nothing written by a refused request (the revision does not move).
from __future__ import annotations

import json
import urllib.parse

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provnet.api.thread import ApiThread
from provnet.model.validation import SPECS
from provnet.registry import open_registry
from provnet.registry import sql_rows as rows
from provnet.registry.sql_rows import SPECIAL_FILTERS

COLLECTIONS = {"network": "/v2.0/networks", "subnet": "/v2.0/subnets", "port": "/v2.0/ports",
               "router": "/v2.0/routers", "agent": "/v2.0/agents", "instance": "/provnet/v1/instances"}
CREATABLE = ("network", "subnet", "port", "router", "instance")
PAGING = ("limit", "marker", "sort_key", "sort_dir", "page_reverse", "fields")

HOSTILE_TEXT = ["\x00", "a\x00b", "\ud800", "x\udfff", "", " ", "\ufeff", "1e400", "NaN", "-1", "0", "%00",
                "9" * 5000, "ä" * 300, "\u202e", "../../etc/passwd", "' OR 1=1 --", "true"]
HOSTILE_INTS = [2**31, -2**31 - 1, 2**63, -2**63 - 1, 2**70, 1180591620717411303424, -1, 0, 4, 6, 10**400]
scalars = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.sampled_from(HOSTILE_INTS),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "L", "N", "P", "Zs"]), max_size=12),
    st.booleans(), st.none(), st.floats(allow_nan=True, allow_infinity=True))
hostile = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["a", "\x00", "\ud800", "ip_address", "start"]), inner,
                                         max_size=3), max_leaves=6)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


def encode(value: object) -> bytes:
    """JSON as a hostile client sends it: lone surrogates as \\uD800 escapes, NaN and Infinity as bare words."""
    return json.dumps(value).encode()


@pytest.fixture
def api(db_url: str):
    registry = open_registry(db_url)
    with ApiThread(registry) as thread:
        session = requests.Session()
        base = thread.url
        net = session.post(f"{base}/v2.0/networks", json={"network": {"name": "n"}}).json()["network"]
        subnet = session.post(f"{base}/v2.0/subnets", json={"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/16"}}).json()["subnet"]
        port = session.post(f"{base}/v2.0/ports", json={"port": {"network_id": net["id"]}}).json()["port"]
        router = session.post(f"{base}/v2.0/routers", json={"router": {"name": "r"}}).json()["router"]
        instance = session.post(f"{base}/provnet/v1/instances", json={"instance": {"name": "vm"}}).json()["instance"]
        agent = registry.report_agent_state("h1", "Open vSwitch agent", "provnet-agent", {})
        ids = {"network": net["id"], "subnet": subnet["id"], "port": port["id"], "router": router["id"],
               "instance": instance["id"], "agent": agent.id}
        bases = {"network": {}, "subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/24"},
                 "port": {"network_id": net["id"]}, "router": {}, "instance": {}}
        yield base, session, ids, bases
        session.close()
    registry.close()


def revision(base: str, session: requests.Session) -> int:
    return session.get(f"{base}/provnet/v1/revision").json()["revision"]


def check(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        fault = response.json()["NeutronError"]
        assert fault["type"] and isinstance(fault["message"], str)


@SETTINGS
@given(data=st.data())
def test_every_field_with_hostile_values(api, data) -> None:
    base, session, ids, bases = api
    kind = data.draw(st.sampled_from([*CREATABLE, "agent"]))
    field = data.draw(st.sampled_from(sorted(SPECS[kind])))
    value = data.draw(hostile)
    member = kind
    before = revision(base, session)
    if kind != "agent" and data.draw(st.booleans()):
        body = {member: {**bases[kind], field: value}}
        response = session.post(f"{base}{COLLECTIONS[kind]}", data=encode(body))
    else:
        body = {member: {field: value}}
        response = session.put(f"{base}{COLLECTIONS[kind]}/{ids[kind]}", data=encode(body))
    check(response)
    if response.status_code >= 400:
        assert revision(base, session) == before, "a refused request wrote something"


@SETTINGS
@given(data=st.data())
def test_every_filter_with_hostile_values(api, data) -> None:
    base, session, ids, _ = api
    kind = data.draw(st.sampled_from(sorted(COLLECTIONS)))
    keys = [*rows.MAPS[kind].filters, *SPECIAL_FILTERS.get(kind, {}), *PAGING]
    key = data.draw(st.sampled_from(sorted(keys)))
    value = data.draw(st.one_of(st.sampled_from(HOSTILE_TEXT), st.sampled_from([str(i) for i in HOSTILE_INTS[:-1]]),
                                st.text(st.characters(codec=None, categories=["Cs", "Cc", "L", "N", "P"]),
                                        max_size=12)))
    raw = urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")
    before = revision(base, session)
    response = session.get(f"{base}{COLLECTIONS[kind]}?{urllib.parse.quote(key)}={raw}")
    check(response)
    if "\x00" in value:  # (a lone surrogate arrives as invalid UTF-8, which the URL parser does not decode)
        assert response.status_code == 400, response.text[:300]
    assert revision(base, session) == before


@pytest.mark.parametrize("path", ["/v2.0/ports/%00", "/v2.0/networks/a%00b", "/v2.0/subnets/%ED%A0%80",
                                  "/provnet/v1/instances/%00"])
def test_hostile_ids_in_the_path(api, path: str) -> None:
    base, session, _, _ = api
    for method in ("GET", "PUT", "DELETE"):
        response = session.request(method, base + path, data=b'{"port": {}}')
        check(response)
        assert response.status_code in (400, 404), (method, path, response.status_code)


def test_the_issue_rows(api) -> None:
    """Each input the faults issue saw answered 500: now a 400 with Neutron's body, nothing written."""
    base, session, ids, bases = api
    before = revision(base, session)
    cases = [
        ("POST", "/v2.0/networks", b'{"network": ' * 100_000 + b"{}" + b"}" * 100_000),
        ("POST", "/v2.0/networks", encode({"network": {"name": "\ud800"}})),
        ("POST", "/v2.0/networks", encode({"network": {"name": "a\x00b"}})),
        ("GET", "/v2.0/subnets?ip_version=1180591620717411303424", None),
        ("POST", "/provnet/v1/instances", encode({"instance": {"launch_index": 2**70}})),
        ("GET", "/v2.0/networks?name=a%00b", None),
        ("GET", "/provnet/v1/instances?launch_index=" + str(2**70), None),
        ("POST", "/v2.0/ports", encode({"port": {**bases["port"], "binding:profile": {"a": "\x00"}}})),
        ("POST", "/v2.0/ports", b'{"port": {"network_id": "x", "name": NaN}}'),
        ("PUT", f"/v2.0/ports/{ids['port']}", encode({"port": {"binding:profile": {"a": {"b": [[[[[[[[[[[[[[[[[[[[[[[[[
            [[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}})),
    ]
    for method, path, body in cases:
        response = session.request(method, base + path, data=body)
        assert response.status_code == 400, (path, response.status_code, response.text[:200])
        assert response.json()["NeutronError"]["type"] in ("HTTPBadRequest", "InvalidInput"), response.text[:200]
    assert revision(base, session) == before
