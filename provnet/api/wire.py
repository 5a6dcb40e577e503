# Pure pieces of the Neutron v2.0 wire format: documents, request-body shapes, query strings, fields, page links.
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from provnet.model.errors import HTTPBadRequest
from provnet.model.validation import MAX_JSON_DEPTH, Invalid, check_json
from provnet.registry.base import Page

# collection -> member; the order is the order of `GET /v2.0/`.
RESOURCES: dict[str, str] = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "agents": "agent",
}

# The extensions whose attributes and behaviour this API honours (alias, name, description).
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("agent", "agent", "The agent management extension."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application."),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("network-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("port-security", "Port Security", "Provides port security."),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks."),
    ("standard-attr-description", "standard-attr-description",
     "Extension to add descriptions to standard attributes."),
    ("l3_agent_scheduler", "L3 Agent Scheduler", "Schedule routers among L3 agents."),
    ("standard-attr-revisions", "Resource revision numbers",
     "This extension will display the revision number of neutron resources."),
    ("standard-attr-timestamp", "Resource timestamps",
     "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("revision-if-match", "If-Match constraints based on revision_number",
     "Extension indicating that If-Match based on revision_number is supported."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 networks "
     "(no external gateway: the physical router routes)."),
)
EXTENSION_UPDATED = "2026-01-01T00:00:00-00:00"

# Items a list answers at most when [DEFAULT] pagination_max_limit is not set (0: no cap).
PAGINATION_MAX_LIMIT = 1000
# Query keys that shape the answer instead of filtering it.
PAGING_KEYS = ("limit", "marker", "sort_key", "sort_dir", "page_reverse")


def version_doc(base_url: str) -> dict:
    """`GET /`: the one version; its `self` link is what openstacksdk and OSC use as the API base."""
    return {"versions": [{"id": "v2.0", "status": "CURRENT",
                          "links": [{"rel": "self", "href": f"{base_url}/v2.0/"}]}]}


def resources_doc(base_url: str) -> dict:
    """`GET /v2.0/`: the collections this API serves."""
    return {"resources": [
        {"name": member, "collection": collection,
         "links": [{"rel": "self", "href": f"{base_url}/v2.0/{collection}"}]}
        for collection, member in RESOURCES.items()
    ]}


def extension_body(alias: str, name: str, description: str) -> dict:
    return {"alias": alias, "name": name, "description": description, "updated": EXTENSION_UPDATED,
            "links": []}


def extensions_doc() -> dict:
    return {"extensions": [extension_body(*ext) for ext in EXTENSIONS]}


def find_extension(alias: str) -> dict | None:
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return {"extension": extension_body(*ext)}
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """The request body as JSON, or a 400 saying what is wrong with it: not UTF-8, not JSON, nested deeper than
    MAX_JSON_DEPTH, NaN or Infinity, or text no store can keep (NUL, lone surrogates)."""
    if not raw.strip():
        raise HTTPBadRequest(msg="Resource body required")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise HTTPBadRequest(msg="Malformed request body: not UTF-8") from None
    except RecursionError:
        raise HTTPBadRequest(msg=f"Malformed request body: nested more than {MAX_JSON_DEPTH} deep") from None
    except ValueError as exc:
        raise HTTPBadRequest(msg=f"Malformed request body: {exc}") from None
    try:
        return check_json(body)
    except Invalid as exc:
        raise HTTPBadRequest(msg=f"Malformed request body: {exc}") from None


def parse_member_body(raw: bytes, member: str) -> dict:
    """`{"network": {...}}` -> the inner dict."""
    body = parse_json(raw)
    if not isinstance(body, dict) or member not in body:
        raise HTTPBadRequest(msg=f"Unable to find '{member}' in request body")
    if len(body) != 1:
        extra = sorted(k for k in body if k != member)
        raise HTTPBadRequest(msg=f"Unrecognized attribute(s) '{', '.join(extra)}' beside '{member}'")
    inner = body[member]
    if not isinstance(inner, dict):
        raise HTTPBadRequest(msg=f"Invalid format: '{member}' must be a JSON object, got {_json_type(inner)}")
    return inner


def parse_create_body(raw: bytes, member: str, collection: str) -> tuple[list[dict], bool]:
    """A create body: `{"network": {...}}` or the bulk form `{"networks": [{...}, ...]}`; returns (items, bulk)."""
    body = parse_json(raw)
    if isinstance(body, dict) and collection in body and len(body) == 1:
        items = body[collection]
        if not isinstance(items, list) or not items:
            raise HTTPBadRequest(msg=f"Invalid format: '{collection}' must be a non-empty list of objects")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise HTTPBadRequest(msg=f"Invalid format: '{collection}'[{index}] must be a JSON object, "
                                         f"got {_json_type(item)}")
        return items, True
    if isinstance(body, dict) and collection in body:
        raise HTTPBadRequest(msg=f"Unable to find '{member}' in request body")
    return [parse_member_body(raw, member)], False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


@dataclass
class ListQuery:
    """A list request's query string, split into filters (for the registry), fields and paging."""

    filters: dict[str, list[str]] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    limit: int | None = None
    marker: str | None = None
    sort_keys: list[str] = field(default_factory=list)
    sort_dirs: list[str] = field(default_factory=list)
    page_reverse: bool = False


def parse_query(pairs: Iterable[tuple[str, str]]) -> ListQuery:
    """Query string pairs -> ListQuery; a key repeated is kept as several values (OR in the registry)."""
    query = ListQuery()
    for key, value in pairs:
        if key == "fields":
            query.fields.extend(v for v in value.split(",") if v)
        elif key == "limit":
            query.limit = _int_param("limit", value)
        elif key == "marker":
            query.marker = value
        elif key == "sort_key":
            query.sort_keys.append(value)
        elif key == "sort_dir":
            if value not in ("asc", "desc"):
                raise HTTPBadRequest(msg=f"['{value}'] is invalid value for sort_dirs, valid value is 'asc' and "
                                         "'desc'")
            query.sort_dirs.append(value)
        elif key == "page_reverse":
            query.page_reverse = value.strip().lower() in ("true", "1")
        else:
            query.filters.setdefault(key, []).append(value)
    if query.sort_dirs and len(query.sort_dirs) != len(query.sort_keys):
        raise HTTPBadRequest(msg="The number of sort_keys and sort_dirs must be same")
    return query


def _int_param(name: str, value: str) -> int:
    try:
        number = int(value) if len(value) <= 20 else int("x")
    except ValueError:
        raise HTTPBadRequest(msg=f"Invalid input for {name}. Reason: '{value}' is not an integer.") from None
    if number < 0:
        raise HTTPBadRequest(msg=f"Invalid input for {name}. Reason: '{value}' should be non-negative.")
    return number


def encode_collection(collection: str, items: Iterable[dict], extra: Mapping[str, Any] | None = None) -> bytes:
    """`{"<collection>": [...], ...extra}` as JSON bytes, one item at a time: a long list never holds the GIL in
    one C call (json.dumps of 1,000 ports is ~20 ms), so the event loop gets its turns while it is encoded."""
    parts = [b'{"', collection.encode(), b'": [', b", ".join(json.dumps(item).encode() for item in items), b"]"]
    for key, value in (extra or {}).items():
        parts += [b", ", json.dumps(key).encode(), b": ", json.dumps(value).encode()]
    parts.append(b"}")
    return b"".join(parts)


def parse_if_match(header: str | None) -> int | None:
    """`If-Match: revision_number=N` (Neutron's revision constraint on an update): N, or None without one.
    Other entity tags are ignored, as Neutron does; two revision_number tags or a non-integer one are a 400."""
    revision = None
    for tag in (header or "").split(","):
        tag = tag.strip()
        tag = tag[2:] if tag.startswith("W/") else tag
        tag = tag.strip('"')
        if not tag.startswith("revision_number="):
            continue
        if revision is not None:
            raise HTTPBadRequest(msg="Multiple revision_number etags are not supported.")
        value = tag.split("=", 1)[1]
        if not value.isascii() or not value.isdigit() or len(value) > 19:
            raise HTTPBadRequest(msg="Revision number etag must be in the format of revision_number=<int>")
        revision = int(value)
    return revision


def select_fields(item: Mapping[str, Any], fields: Sequence[str]) -> dict:
    """`fields=a&fields=b`: only those attributes (all of them when none are asked for)."""
    if not fields:
        return dict(item)
    return {k: item[k] for k in fields if k in item}


def effective_limit(query: ListQuery, max_limit: int) -> int | None:
    """Neutron's rule: the asked limit, at most `max_limit` (when it is > 0); no limit asked: `max_limit`
    (None when that is 0 too: the whole list)."""
    limit = query.limit or 0
    if max_limit > 0:
        limit = min(max_limit, limit) or max_limit
    return limit or None


def page_of(query: ListQuery, max_limit: int) -> Page | None:
    """The store's Page for a list request, or None for the whole list in creation order."""
    limit = effective_limit(query, max_limit)
    if limit is None and not query.sort_keys:
        return None
    dirs = query.sort_dirs or ["asc"] * len(query.sort_keys)
    sort = tuple((key, direction == "asc") for key, direction in zip(query.sort_keys, dirs, strict=True))
    return Page(limit=limit, marker=query.marker if limit else None, sort=sort,
                reverse=query.page_reverse and limit is not None)


def pagination_links(url: str, pairs: Sequence[tuple[str, str]], ids: Sequence[str], limit: int | None,
                     page_reverse: bool) -> list[dict]:
    """Neutron's `<collection>_links` for a page whose items have `ids`: `next` unless a forward page came back
    short, `previous` unless a reverse page did; each the request's query with marker (and page_reverse) set."""
    if not limit:
        return []
    kept = [(k, v) for k, v in pairs if k not in ("marker", "page_reverse")]
    links = []
    if not (len(ids) < limit and not page_reverse):
        marker = [("marker", ids[-1])] if ids else []
        links.append({"rel": "next", "href": f"{url}?{urlencode(kept + marker)}"})
    if not (len(ids) < limit and page_reverse):
        marker = [("marker", ids[0])] if ids else []
        links.append({"rel": "previous", "href": f"{url}?{urlencode(kept + marker + [('page_reverse', 'True')])}"})
    return links
