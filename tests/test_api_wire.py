# Pure wire pieces of the networking API: body shapes, query strings, field selection, paging, documents.
from __future__ import annotations

import pytest

from provnet.api import wire
from provnet.model.errors import HTTPBadRequest


def test_version_doc_links_to_the_host_the_client_used() -> None:
    doc = wire.version_doc("http://10.0.0.5:9696")
    assert doc["versions"][0]["id"] == "v2.0"
    assert doc["versions"][0]["links"][0] == {"rel": "self", "href": "http://10.0.0.5:9696/v2.0/"}


def test_resources_doc_lists_the_collections() -> None:
    names = [r["collection"] for r in wire.resources_doc("http://h")["resources"]]
    assert names == ["networks", "subnets", "ports", "routers", "agents"]


def test_extensions_include_what_the_seed_uses_and_nothing_unknown() -> None:
    aliases = {e["alias"] for e in wire.extensions_doc()["extensions"]}
    assert {"external-net", "provider", "binding", "port-security", "router", "agent"} <= aliases
    assert wire.find_extension("provider")["extension"]["alias"] == "provider"
    assert wire.find_extension("tag-ports-during-bulk-creation") is None


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "Resource body required"),
    (b"   ", "Resource body required"),
    (b'{"network": ', "Malformed request body"),
    (b"\xff\xfe", "Malformed request body"),
    (b"[1, 2]", "Unable to find 'network' in request body"),
    (b'{"net": {}}', "Unable to find 'network' in request body"),
    (b'{"network": "x"}', "'network' must be a JSON object, got a string"),
    (b'{"network": {}, "extra": 1}', "Unrecognized attribute(s) 'extra'"),
])
def test_bad_member_bodies_are_readable_400s(raw: bytes, message: str) -> None:
    with pytest.raises(HTTPBadRequest) as info:
        wire.parse_member_body(raw, "network")
    assert info.value.status == 400
    assert message in info.value.message


def test_create_body_single_and_bulk() -> None:
    assert wire.parse_create_body(b'{"port": {"name": "a"}}', "port", "ports") == ([{"name": "a"}], False)
    items, bulk = wire.parse_create_body(b'{"ports": [{"name": "a"}, {"name": "b"}]}', "port", "ports")
    assert bulk and [i["name"] for i in items] == ["a", "b"]


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"ports": []}', "non-empty list"),
    (b'{"ports": {"name": "a"}}', "non-empty list"),
    (b'{"ports": [{"name": "a"}, 3]}', "'ports'[1] must be a JSON object, got a number"),
    (b'{"ports": [{}], "port": {}}', "Unable to find 'port'"),
])
def test_bad_bulk_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(HTTPBadRequest) as info:
        wire.parse_create_body(raw, "port", "ports")
    assert message in info.value.message


def test_query_repeated_keys_are_kept_and_fields_split_out() -> None:
    q = wire.parse_query([("network_id", "a"), ("network_id", "b"), ("fixed_ips", "ip_address=172.16.1.103"),
                          ("fields", "id"), ("fields", "name"), ("limit", "2"), ("sort_key", "name"),
                          ("sort_dir", "desc")])
    assert q.filters == {"network_id": ["a", "b"], "fixed_ips": ["ip_address=172.16.1.103"]}
    assert q.fields == ["id", "name"]
    assert (q.limit, q.sort_keys, q.sort_dirs) == (2, ["name"], ["desc"])


@pytest.mark.parametrize(("pairs", "message"), [
    ([("limit", "x")], "Invalid input for limit"),
    ([("limit", "-1")], "non-negative"),
    ([("sort_key", "a"), ("sort_dir", "up")], "sort_dir"),
    ([("sort_key", "a"), ("sort_key", "b"), ("sort_dir", "asc")], "sort_keys and sort_dirs"),
])
def test_bad_query_parameters(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(HTTPBadRequest) as info:
        wire.parse_query(pairs)
    assert message in info.value.message


def test_select_fields() -> None:
    item = {"id": "1", "name": "n", "mtu": 1500}
    assert wire.select_fields(item, []) == item
    assert wire.select_fields(item, ["id", "mtu", "nope"]) == {"id": "1", "mtu": 1500}


def test_paginate_sorts_and_follows_markers() -> None:
    items = [{"id": str(i), "name": n} for i, n in enumerate(["c", "a", "d", "b"])]
    q = wire.parse_query([("sort_key", "name"), ("limit", "2")])
    page, marker = wire.paginate(items, q)
    assert [d["name"] for d in page] == ["a", "b"] and marker == "3"
    q.marker = marker
    page, marker = wire.paginate(items, q)
    assert [d["name"] for d in page] == ["c", "d"] and marker is None


def test_paginate_unknown_sort_key() -> None:
    with pytest.raises(HTTPBadRequest):
        wire.paginate([{"id": "1"}], wire.parse_query([("sort_key", "nope")]))
