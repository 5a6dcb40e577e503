# Pure wire pieces of the networking API: body shapes, query strings, field selection, paging, documents.
from __future__ import annotations

import pytest

from provnet.api import wire
from provnet.model.errors import HTTPBadRequest
from provnet.registry.base import Page


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


def test_page_of_caps_by_pagination_max_limit_as_neutron() -> None:
    q = wire.parse_query([("sort_key", "name"), ("sort_dir", "desc"), ("limit", "2"), ("marker", "m")])
    assert wire.page_of(q, 1000) == Page(limit=2, marker="m", sort=(("name", False),))
    assert wire.page_of(wire.parse_query([("limit", "5000")]), 1000).limit == 1000  # capped
    assert wire.page_of(wire.parse_query([]), 1000).limit == 1000  # no limit asked: the cap
    assert wire.page_of(wire.parse_query([]), 0) is None  # no cap: the whole list
    assert wire.page_of(wire.parse_query([("page_reverse", "True"), ("limit", "3")]), 0).reverse is True


def test_pagination_links_as_neutron_builds_them() -> None:
    url, pairs = "http://h/v2.0/ports", [("limit", "2"), ("name", "x"), ("marker", "a")]
    links = wire.pagination_links(url, pairs, ["b", "c"], 2, False)
    assert links == [{"rel": "next", "href": "http://h/v2.0/ports?limit=2&name=x&marker=c"},
                     {"rel": "previous", "href": "http://h/v2.0/ports?limit=2&name=x&marker=b&page_reverse=True"}]
    assert [link["rel"] for link in wire.pagination_links(url, pairs, ["b"], 2, False)] == ["previous"]  # short
    assert [link["rel"] for link in wire.pagination_links(url, pairs, ["b"], 2, True)] == ["next"]
    assert wire.pagination_links(url, pairs, ["b"], None, False) == []


def test_sort_dir_other_than_asc_or_desc_is_neutrons_400() -> None:
    with pytest.raises(HTTPBadRequest, match="is invalid value for sort_dirs"):
        wire.parse_query([("sort_key", "name"), ("sort_dir", "up")])
