# Neutron request bodies -> clean attribute dicts: unknown, read-only, required and typed attributes, Neutron's words.
"""Attribute maps for network/subnet/port/router/instance create and update bodies.

`parse_create(kind, body)` returns every attribute of the resource (defaults filled in, values converted);
`parse_update(kind, body)` returns only the given ones. Errors are `HTTPBadRequest` with Neutron's messages:
"Unrecognized attribute(s) 'foo'", "Failed to parse request. Required attribute 'x' not specified",
"Cannot update read-only attribute cidr", "Invalid input for <attr>. Reason: <msg>.".
The semantic rules (provider networks, CIDRs, pools) live in network_rules.py and subnet_rules.py.
"""
from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, overload

from provnet.model.errors import HTTPBadRequest
from provnet.model.metadata_options import check_property
from provnet.model.values import (
    DEFAULT_PROJECT_ID,
    AllocationPool,
    FixedIP,
    HostRoute,
    KeyPair,
    agent_time,
    api_time,
    parse_time,
)

MAX_USER_DATA = 65536
VNIC_TYPES = ("normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder", "smart-nic",
              "vdpa", "remote-managed")
NETWORK_TYPES = ("flat", "vlan", "vxlan", "gre", "local")
KEY_PAIR_TYPES = ("ssh", "x509")
IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
_MAC_RE = re.compile(r"^([0-9a-fA-F]{2})([:-][0-9a-fA-F]{2}){5}$")


class Invalid(ValueError):
    """A converter's complaint; parse_* turns it into "Invalid input for <attr>. Reason: <msg>."."""


_NOT_SET = object()


def _read_only(value: Any) -> Any:
    raise Invalid("the attribute is read-only")


@dataclass(frozen=True)
class Attr:
    """One attribute of a resource, declared once: how a request's value is checked (`convert`, `post`, `put`,
    `required`, `default`), where the resource keeps it (`field`; None: computed by `derive`), how its API form
    differs from the field's value (`dump`, `load`), whether lists filter and sort on it (`filter`: True by the
    stored column's type, a converter of its own, or False), and whether the CLI lists show it (`listed`).
    The API form, the filters, the SQL column maps and the CLI's default columns are all derived from these."""

    convert: Callable[[Any], Any] = _read_only
    post: bool = True
    put: bool = True
    required: bool = False
    default: Any = _NOT_SET  # a value, or a zero-argument callable for mutable defaults
    field: str | None = ""  # "": the name with ':' as '_'
    dump: Callable[[Any], Any] | None = None  # field value -> API value (None: the same)
    load: Callable[[Any], Any] | None = None  # API (or converted request) value -> field value
    derive: Callable[[Any], Any] | None = None  # the resource -> API value, for a computed attribute (field None)
    filter: bool | Callable[[Any], Any] = True
    listed: bool = False


def _output(**kwargs: Any) -> Attr:
    """An attribute the server sets: shown, never taken from a request."""
    return Attr(post=False, put=False, **kwargs)


def _const(value: Any) -> Attr:
    """An attribute shown with a fixed value (an extension this API does not implement)."""
    return _output(field=None, derive=lambda _obj: copy.copy(value), filter=False)


def _spec(attrs: dict[str, Attr]) -> dict[str, Attr]:
    return {name: replace(a, field=name.replace(":", "_")) if a.field == "" else a for name, a in attrs.items()}


# ---- converters (each returns the clean value or raises Invalid) ----------------------------------------------

INT32 = (-2**31, 2**31 - 1)  # the range of an Integer column (PostgreSQL's integer)
INT64 = (-2**63, 2**63 - 1)  # the range of a BigInteger column (and of SQLite's INTEGER)
_MAX_INT_TEXT = 40  # digits (and sign, blanks) an integer given as text may have


def check_text(value: str) -> str:
    """Text a store can keep as it was given: no NUL (PostgreSQL refuses it, SQLite would keep it) and no lone
    surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        raise Invalid("the text contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("the text is not valid Unicode (a lone surrogate)") from None
    return value


def to_text(value: Any) -> str:
    """A filter's or an id's value as text, refused when no store could hold it."""
    return check_text(str(value))


@overload
def to_string(max_len: int = 255, allow_none: Literal[False] = False) -> Callable[[Any], str]: ...
@overload
def to_string(max_len: int = 255, *, allow_none: bool) -> Callable[[Any], str | None]: ...
def to_string(max_len: int = 255, allow_none: bool = False) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        if value is None and allow_none:
            return None
        if not isinstance(value, str):
            raise Invalid(f"'{value}' is not a valid string")
        if len(value) > max_len:
            raise Invalid(f"'{value}' exceeds maximum length of {max_len}")
        return check_text(value)
    return convert


def to_boolean(value: Any) -> bool:
    """neutron-lib's convert_to_boolean: true/false in any case, 1/0, as bools, ints or strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "t", "yes", "y", "on"):
            return True
        if text in ("false", "0", "f", "no", "n", "off"):
            return False
    raise Invalid(f"'{value}' cannot be converted to boolean")


def to_int(value: Any, bounds: tuple[int, int] = INT64) -> int:
    """An integer (or its decimal text) within `bounds` (by default what any integer column holds)."""
    if isinstance(value, bool):
        raise Invalid(f"'{value}' is not an integer")
    if isinstance(value, str) and len(value) <= _MAX_INT_TEXT and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        shown = value[:_MAX_INT_TEXT] + "..." if isinstance(value, str) and len(value) > _MAX_INT_TEXT else value
        raise Invalid(f"'{shown}' is not an integer")
    if not bounds[0] <= value <= bounds[1]:
        raise Invalid(f"'{value}' is out of range ({bounds[0]} through {bounds[1]})")
    return value


def to_int32(value: Any) -> int:
    return to_int(value, INT32)


def to_int_or_none(value: Any) -> int | None:
    return None if value is None else to_int(value)


def to_uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"'{value}' is not a valid UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Invalid(f"'{value}' is not a valid UUID") from None


def to_ip(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"'{value}' is not a valid IP address")
    try:
        if value != value.strip():
            raise ValueError(value)
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"'{value}' is not a valid IP address") from None


def to_ip_or_none(value: Any) -> str | None:
    return None if value is None else to_ip(value)


def to_cidr(value: Any) -> str:
    """A subnet CIDR; host bits are allowed here (the subnet rules normalise them)."""
    if not isinstance(value, str):
        raise Invalid(f"'{value}' is not a valid IP subnet")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise Invalid(f"'{value}' is not a valid IP subnet") from None
    if "/" not in value:
        raise Invalid(f"'{value}' isn't a recognized IP subnet cidr, '{iface.ip}/{iface.max_prefixlen}' "
                      f"is recommended")
    return str(iface)


def to_mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.match(value):
        raise Invalid(f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        raise Invalid(f"'{value}' is not a valid MAC address")
    return mac


MAX_JSON_DEPTH = 32  # nesting of objects and lists a request may have (Neutron's bodies need 4)


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`value` if it is JSON a store keeps as given: nested at most `max_depth` deep, every key and string
    storable text (check_text), numbers finite. Iterative: a hostile depth cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise Invalid("numbers must be finite")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise Invalid(f"nested more than {max_depth} deep")
            if isinstance(item, dict):
                for key, val in item.items():
                    if not isinstance(key, str):
                        raise Invalid(f"'{key}' is not a valid key")
                    check_text(key)
                    stack.append((val, depth + 1))
            else:
                stack.extend((val, depth + 1) for val in item)
    return value


def to_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"'{value}' is not a dictionary")
    return dict(check_json(value))


def to_ip_version(value: Any) -> int:
    number = to_int(value)
    if number not in (4, 6):
        raise Invalid(f"'{value}' is not in [4, 6]")
    return number


def to_one_of(*values: str | None) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value not in values:
            raise Invalid(f"'{value}' is not in {list(values)}")
        return value
    return convert


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise Invalid(f"'{value}' is not a list")
    return value


def _entry(value: Any, what: str, keys: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict) or not set(value) <= set(keys) or not set(required) <= set(value):
        raise Invalid(f"Invalid data format for {what}: '{value}'")
    return value


def to_pools(value: Any) -> list[dict[str, str]]:
    out = []
    for item in _list(value):
        entry = _entry(item, "IP pool", ("start", "end"), ("start", "end"))
        out.append({"start": to_ip(entry["start"]), "end": to_ip(entry["end"])})
    return out


def to_nameservers(value: Any) -> list[str]:
    out: list[str] = []
    for item in _list(value):
        try:
            ip = to_ip(item)
        except Invalid:
            raise Invalid(f"'{item}' is not a valid nameserver") from None
        if ip in out:
            raise Invalid(f"Duplicate nameserver '{item}'")
        out.append(ip)
    return out


def to_host_routes(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in _list(value):
        entry = _entry(item, "hostroute", ("destination", "nexthop"), ("destination", "nexthop"))
        route = {"destination": str(ipaddress.ip_network(to_cidr(entry["destination"]), strict=False)),
                 "nexthop": to_ip(entry["nexthop"])}
        if route in out:
            raise Invalid(f"Duplicate hostroute '{item}'")
        out.append(route)
    return out


def to_fixed_ips(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in _list(value):
        entry = _entry(item, "fixed IP", ("subnet_id", "ip_address"), ())
        if not entry:
            raise Invalid(f"Invalid data format for fixed IP: '{item}'")
        clean: dict[str, str] = {}
        if "subnet_id" in entry:
            clean["subnet_id"] = to_uuid(entry["subnet_id"])
        if "ip_address" in entry:
            clean["ip_address"] = to_ip(entry["ip_address"])
            if clean["ip_address"] in [o.get("ip_address") for o in out]:
                raise Invalid(f"Duplicate IP address '{entry['ip_address']}'")
        out.append(clean)
    return out


def to_address_pairs(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in _list(value):
        entry = _entry(item, "allowed address pair", ("ip_address", "mac_address"), ("ip_address",))
        ip = entry["ip_address"]
        try:
            net = ipaddress.ip_network(ip, strict=False) if isinstance(ip, str) else None
        except ValueError:
            net = None
        if net is None:
            raise Invalid(f"'{ip}' is not a valid IP address")
        pair = {"ip_address": ip}
        if "mac_address" in entry:
            pair["mac_address"] = to_mac(entry["mac_address"])
        out.append(pair)
    return out


def to_string_list(value: Any) -> list[str]:
    convert = to_string()
    return [str(convert(v)) for v in _list(value)]


def to_user_data(value: Any) -> bytes | None:
    """Base64 text (as Nova's API takes it) -> bytes, at most 64 KiB decoded."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("user_data must be base64-encoded text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("user_data is not valid base64") from None
    if len(data) > MAX_USER_DATA:
        raise Invalid(f"user_data is {len(data)} bytes, more than the {MAX_USER_DATA} allowed")
    return data


def to_key_pairs(value: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for item in _list(value):
        entry = _entry(item, "key pair", ("name", "type", "data"), ("name", "data"))
        name = to_string()(entry["name"])
        if not name:
            raise Invalid("a key pair needs a non-empty name")
        if name in [k["name"] for k in out]:
            raise Invalid(f"Duplicate key pair name '{name}'")
        out.append({"name": name, "type": to_one_of(*KEY_PAIR_TYPES)(entry.get("type", "ssh")),
                    "data": to_string(max_len=65536)(entry["data"])})
    return out


def to_metadata(value: Any) -> dict[str, str]:
    """Nova server metadata: string keys of 1..255 characters, string values of at most 255."""
    out: dict[str, str] = {}
    for key, val in to_dict(value).items():
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise Invalid(f"metadata key '{key}' must be a string of 1 to 255 characters")
        if not isinstance(val, str) or len(val) > 255:
            raise Invalid(f"metadata value of '{key}' must be a string of at most 255 characters")
        reserved = check_property(key, val)
        if reserved:
            raise Invalid(reserved)
        out[check_text(key)] = check_text(val)
    return out


def to_json_object(value: Any) -> dict[str, Any]:
    obj = to_dict(value)
    try:
        json.dumps(obj)
    except (TypeError, ValueError):
        raise Invalid(f"'{value}' is not a JSON object") from None
    return obj


def to_non_negative_int(value: Any) -> int:
    number = to_int(value, INT32)
    if number < 0:
        raise Invalid(f"'{value}' should be non-negative")
    return number


# ---- attribute maps --------------------------------------------------------------------------------------------

_PROJECT = Attr(to_string(), put=False, field="project_id")
_ID = Attr(to_uuid, post=False, put=False, listed=True)
_NAME = Attr(to_string(), default="", listed=True)
_DESCRIPTION = Attr(to_string(255), default="")  # Neutron's standard attribute: a string of at most 255
_STATUS = _output()
# Neutron's standard attributes (the "standard-attr-timestamp" and "standard-attr-revisions" extensions)
_STANDARD = {
    "created_at": _output(dump=api_time, load=parse_time, filter=False),
    "updated_at": _output(dump=api_time, load=parse_time, filter=False),
    "revision_number": _output(),
}


def _pools(value: Iterable[AllocationPool | Mapping[str, str]]) -> list[AllocationPool]:
    return [p if isinstance(p, AllocationPool) else AllocationPool(p["start"], p["end"]) for p in value]


def _routes(value: Iterable[HostRoute | Mapping[str, str]]) -> list[HostRoute]:
    return [r if isinstance(r, HostRoute) else HostRoute(r["destination"], r["nexthop"]) for r in value]


def _fixed_ips(value: Iterable[FixedIP | Mapping[str, str]]) -> list[FixedIP]:
    return [f if isinstance(f, FixedIP) else FixedIP(f["subnet_id"], f["ip_address"]) for f in value]


def _key_pairs(value: Iterable[KeyPair | Mapping[str, str]]) -> list[KeyPair]:
    return [k if isinstance(k, KeyPair) else KeyPair(k["name"], k["data"], k.get("type", "ssh")) for k in value]


def _to_api_list(value: Iterable[AllocationPool | HostRoute | FixedIP | KeyPair]) -> list[dict[str, str]]:
    return [v.to_api() for v in value]


def _user_data_api(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value is not None else None


def _user_data_field(value: str | bytes | None) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else value


def _mac_filter(value: Any) -> str:
    try:
        return to_mac(value)
    except Invalid:
        return to_text(value).lower()


NETWORK: dict[str, Attr] = _spec({
    "id": _ID,
    "name": _NAME,
    "description": _DESCRIPTION,
    "tenant_id": _PROJECT,
    "project_id": _PROJECT,
    "admin_state_up": Attr(to_boolean, default=True),
    "status": _STATUS,
    "shared": Attr(to_boolean, default=False),
    "subnets": _output(dump=list, listed=True),
    "mtu": _output(filter=False),
    "router:external": Attr(to_boolean, default=False),
    "provider:network_type": Attr(to_string(allow_none=True), default=None, field="network_type"),
    "provider:physical_network": Attr(to_string(64, allow_none=True), default=None, field="physical_network"),
    "provider:segmentation_id": Attr(to_int_or_none, default=None, field="segmentation_id"),
    "port_security_enabled": Attr(to_boolean, default=True),    **_STANDARD,
})

SUBNET: dict[str, Attr] = _spec({
    "id": _ID,
    "name": _NAME,
    "description": _DESCRIPTION,
    "tenant_id": _PROJECT,
    "project_id": _PROJECT,
    "network_id": Attr(to_uuid, put=False, required=True),
    "ip_version": Attr(to_ip_version, put=False, required=True),
    "cidr": Attr(to_cidr, put=False, required=True, listed=True),
    "gateway_ip": Attr(to_ip_or_none, default=_NOT_SET),  # absent: the first host; None: no gateway
    "allocation_pools": Attr(to_pools, default=list, dump=_to_api_list, load=_pools, listed=True),
    "dns_nameservers": Attr(to_nameservers, default=list, dump=list),
    "host_routes": Attr(to_host_routes, default=list, dump=_to_api_list, load=_routes),
    "enable_dhcp": Attr(to_boolean, default=True),
    # subnet pools and IPv6 RA/address modes are not implemented: taken as the API allows, shown as null
    "ipv6_ra_mode": replace(_const(None), convert=to_one_of(None, *IPV6_MODES), post=True, default=None),
    "ipv6_address_mode": replace(_const(None), convert=to_one_of(None, *IPV6_MODES), post=True, default=None),
    "subnetpool_id": replace(_const(None), convert=to_one_of(None), post=True, default=None),    **_STANDARD,
})

PORT: dict[str, Attr] = _spec({
    "id": _ID,
    "name": _NAME,
    "description": _DESCRIPTION,
    "tenant_id": _PROJECT,
    "project_id": _PROJECT,
    "network_id": Attr(to_uuid, put=False, required=True),
    "admin_state_up": Attr(to_boolean, default=True),
    "mac_address": Attr(to_mac, default=None, filter=_mac_filter, listed=True),
    # absent: one address from the network's first subnet
    "fixed_ips": Attr(to_fixed_ips, default=None, dump=_to_api_list, load=_fixed_ips, listed=True),
    "device_id": Attr(to_string(), default=""),
    "device_owner": Attr(to_string(), default=""),
    "status": _STATUS,
    "security_groups": Attr(to_string_list, default=list, dump=list),
    "port_security_enabled": Attr(to_boolean, default=None),  # absent: the network's
    "allowed_address_pairs": Attr(to_address_pairs, default=list, dump=list),
    "binding:host_id": Attr(to_string(), default=""),
    "binding:vnic_type": Attr(to_one_of(*VNIC_TYPES), default="normal"),
    "binding:profile": Attr(to_dict, default=dict, dump=dict),
    "binding:vif_type": _output(),
    "binding:vif_details": _output(dump=dict),
    "binding:failure_reason": _output(),    **_STANDARD,
})

ROUTER: dict[str, Attr] = _spec({
    "id": _ID,
    "name": _NAME,
    "description": _DESCRIPTION,
    "tenant_id": _PROJECT,
    "project_id": _PROJECT,
    "admin_state_up": Attr(to_boolean, default=True),
    "status": _STATUS,
    "external_gateway_info": replace(_const(None), listed=True),  # no external gateway: the physical router routes
    "routes": _const([]),    **_STANDARD,
})

AGENT: dict[str, Attr] = _spec({  # agents report themselves; an operator may only enable or disable one
    "id": _output(listed=True),
    "agent_type": _output(listed=True),
    "host": _output(listed=True),
    "alive": replace(_const(None), listed=True),  # computed against the server's agent_down_time (Agent.to_api)
    "admin_state_up": Attr(to_boolean, post=False, listed=True),
    "binary": _output(listed=True),
    "topic": _output(),
    "heartbeat_timestamp": _output(dump=agent_time, load=parse_time, filter=False),
    "created_at": _output(dump=agent_time, load=parse_time, filter=False),
    "started_at": _output(dump=agent_time, load=parse_time, filter=False),
    "configurations": _output(dump=dict),
    "description": _const(None),
})

INSTANCE: dict[str, Attr] = _spec({
    "id": Attr(to_uuid, put=False, default=lambda: str(uuid.uuid4()), listed=True),
    "name": _NAME,
    "hostname": Attr(to_string(255), default="", listed=True),  # empty: derived from the name
    "availability_zone": Attr(to_string(), default="nova", listed=True),
    "tenant_id": _PROJECT,
    "project_id": replace(_PROJECT, listed=True),
    "launch_index": Attr(to_non_negative_int, put=False, default=0),
    "user_data": Attr(to_user_data, default=None, dump=_user_data_api, load=_user_data_field),
    "key_pairs": Attr(to_key_pairs, default=list, dump=_to_api_list, load=_key_pairs),
    "metadata": Attr(to_metadata, default=dict, dump=dict),
    "vendor_data": Attr(to_json_object, default=dict),
    "flavor": Attr(to_string(), default="m1.small"),
    "has_password": _output(field=None, derive=lambda inst: inst.password is not None, filter=False),
    "created_at": _output(dump=agent_time, load=parse_time, filter=False),
    "updated_at": _output(dump=agent_time, load=parse_time, filter=False),
    "revision_number": _output(),
})

SPECS: dict[str, dict[str, Attr]] = {
    "network": NETWORK, "subnet": SUBNET, "port": PORT, "router": ROUTER, "agent": AGENT, "instance": INSTANCE,
}


# ---- parsing ---------------------------------------------------------------------------------------------------

def _check_body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise HTTPBadRequest(msg="Body contains invalid data")
    return body


def _unknown(spec: Mapping[str, Attr], body: Mapping[str, Any]) -> None:
    unknown = [key for key in body if key not in spec]
    if unknown:
        names = ", ".join(sorted(unknown))
        raise HTTPBadRequest(msg=f"Unrecognized attribute(s) '{names}'")


def _convert(name: str, attr: Attr, value: Any) -> Any:
    try:
        return attr.convert(value)
    except Invalid as exc:
        raise HTTPBadRequest(msg=f"Invalid input for {name}. Reason: {exc}.") from None


def _project(body: Mapping[str, Any], clean: dict[str, Any]) -> None:
    """tenant_id and project_id are one attribute; keep project_id."""
    tenant = clean.pop("tenant_id", None)
    project = clean.get("project_id")
    if tenant is not None and project is not None and tenant != project:
        raise HTTPBadRequest(msg="'project_id' and 'tenant_id' do not match")
    clean["project_id"] = project if project is not None else tenant


def parse_create(kind: str, body: Any) -> dict[str, Any]:
    """Every attribute of a new `kind`: given ones converted, absent ones defaulted (`_NOT_SET` left out)."""
    spec = SPECS[kind]
    body = _check_body(body)
    _unknown(spec, body)
    for name in body:
        if not spec[name].post:
            raise HTTPBadRequest(msg=f"Attribute '{name}' not allowed in POST")
    clean: dict[str, Any] = {}
    for name, attr in spec.items():
        if name in body:
            clean[name] = _convert(name, attr, body[name])
        elif attr.required:
            raise HTTPBadRequest(msg=f"Failed to parse request. Required attribute '{name}' not specified")
        elif attr.default is not _NOT_SET and attr.post:
            clean[name] = attr.default() if callable(attr.default) else attr.default
    if "project_id" in spec:
        _project(body, clean)
        if clean["project_id"] is None:
            clean["project_id"] = DEFAULT_PROJECT_ID
    return clean


def parse_update(kind: str, body: Any) -> dict[str, Any]:
    """Only the given attributes of an update, converted; read-only ones refused."""
    spec = SPECS[kind]
    body = _check_body(body)
    _unknown(spec, body)
    for name in body:
        if not spec[name].put:
            raise HTTPBadRequest(msg=f"Cannot update read-only attribute {name}")
    return {name: _convert(name, spec[name], value) for name, value in body.items()}


def is_set(clean: Mapping[str, Any], name: str) -> bool:
    return name in clean


def hostname_from_name(name: str, instance_id: str) -> str:
    """A DNS label from a display name (lowercase letters, digits, '-'), as Nova derives hostnames."""
    text = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    text = re.sub(r"-{2,}", "-", text)[:63].strip("-.")
    return text or f"server-{instance_id}"
