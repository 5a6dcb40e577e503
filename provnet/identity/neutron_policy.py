# Neutron's default policy (neutron-lib's rules as Neutron registers them) for what provnet serves, and how Neutron
# composes a check: the action AND a rule per attribute the request sets explicitly (`create_port:binding:host_id`).
"""The rule texts are Neutron's defaults (neutron/conf/policies/{base,network,subnet,port,router,agent}.py, with
neutron_lib/policy/rules.py's building blocks expanded) for the attributes and actions provnet implements, plus
provnet's own rules for /provnet/v1, which has no Neutron counterpart:

- `provnet:instances`: user data, keys, passwords and properties (Nova's side): admin or the service role;
- `provnet:report_agent_state`: an agent's heartbeat: the service role (agents run as a service user);
- `provnet:update_port_status`: an L2 agent's device up or gone (Neutron's update_device_up/down RPC): the service
  role;
- `provnet:agent_lookups`: the indexed lookups, the change feed and the reservation query remote agents use:
  admin or service;
- `provnet:metadata_explain`: metadata-explain's walk (it reads any VM's ports and probes the metadata API): admin.
The identity documents' public keys (/provnet/v1/metadata/jwks.json) need no token: verifiers anywhere fetch them.

A policy file in oslo.policy's YAML format overrides any of them by name.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ADMIN = "rule:admin_only"
SERVICE = "rule:service_api"
ADMIN_OR_SERVICE = f"({ADMIN}) or ({SERVICE})"
PROJECT_MEMBER = "role:member and project_id:%(project_id)s"
PROJECT_READER = "role:reader and project_id:%(project_id)s"
ADMIN_OR_PROJECT_MEMBER = f"({ADMIN}) or ({PROJECT_MEMBER})"
ADMIN_OR_PROJECT_READER = f"({ADMIN}) or ({PROJECT_READER})"
NET_OWNER_MEMBER = "role:member and rule:network_owner"
NET_OWNER_READER = "role:reader and rule:network_owner"
ADMIN_OR_NET_OWNER_MEMBER = f"({ADMIN}) or ({NET_OWNER_MEMBER})"
ADMIN_OR_NET_OWNER_READER = f"({ADMIN}) or ({NET_OWNER_READER})"
PORT_WRITE = f"({ADMIN}) or ({SERVICE}) or {NET_OWNER_MEMBER}"

DEFAULT_RULES: dict[str, str] = {
    # base.py
    "context_is_admin": "role:admin",
    "context_with_global_access": "!",
    "service_api": "role:service",
    "owner": "project_id:%(project_id)s",
    "admin_or_owner": "rule:context_is_admin or rule:owner",
    "context_is_advsvc": "role:advsvc",
    "admin_or_network_owner": "rule:context_is_admin or project_id:%(network:project_id)s",
    "admin_owner_or_network_owner": "rule:owner or rule:admin_or_network_owner",
    "network_owner": "project_id:%(network:project_id)s",
    "admin_only": "rule:context_is_admin",
    "regular_user": "",
    "shared": "field:networks:shared=True",
    "default": "rule:admin_or_owner",
    # network.py
    "external": "field:networks:router:external=True",
    "create_network": ADMIN_OR_PROJECT_MEMBER,
    "create_network:shared": ADMIN,
    "create_network:router:external": ADMIN,
    "create_network:port_security_enabled": ADMIN_OR_PROJECT_MEMBER,
    "create_network:provider:network_type": ADMIN,
    "create_network:provider:physical_network": ADMIN,
    "create_network:provider:segmentation_id": ADMIN,
    "get_network": f"{ADMIN_OR_PROJECT_READER} or {SERVICE} or rule:shared or rule:external or "
                   "rule:context_is_advsvc",
    # Neutron: admin only (its agents get a network's segment over RPC); provnet's L2 and L3 agents read it through
    # the API as a service user, so the service role may read it too
    "get_network:provider:network_type": ADMIN_OR_SERVICE,
    "get_network:provider:physical_network": ADMIN_OR_SERVICE,
    "get_network:provider:segmentation_id": ADMIN_OR_SERVICE,
    "update_network": ADMIN_OR_PROJECT_MEMBER,
    "update_network:shared": ADMIN,
    "update_network:provider:network_type": ADMIN,
    "update_network:provider:physical_network": ADMIN,
    "update_network:provider:segmentation_id": ADMIN,
    "update_network:router:external": ADMIN,
    "update_network:port_security_enabled": ADMIN_OR_PROJECT_MEMBER,
    "delete_network": ADMIN_OR_PROJECT_MEMBER,
    # subnet.py
    "external_network": "field:subnets:router:external=True",
    "create_subnet": ADMIN_OR_NET_OWNER_MEMBER,
    "get_subnet": f"{PROJECT_READER} or rule:shared or rule:external_network or {ADMIN_OR_NET_OWNER_READER} "
                  f"or {SERVICE}",
    "update_subnet": f"{PROJECT_MEMBER} or {ADMIN_OR_NET_OWNER_MEMBER}",
    "delete_subnet": f"{PROJECT_MEMBER} or {ADMIN_OR_NET_OWNER_MEMBER}",
    # port.py
    "network_device": "field:port:device_owner=~^network:",
    "create_port": f"{PORT_WRITE} or rule:shared",
    "create_port:device_id": f"{ADMIN_OR_PROJECT_MEMBER} or {SERVICE}",
    "create_port:device_owner": f"not rule:network_device or {PORT_WRITE}",
    "create_port:mac_address": PORT_WRITE,
    "create_port:fixed_ips": f"{PORT_WRITE} or rule:shared",
    "create_port:fixed_ips:ip_address": PORT_WRITE,
    "create_port:fixed_ips:subnet_id": f"{PORT_WRITE} or rule:shared",
    "create_port:port_security_enabled": PORT_WRITE,
    "create_port:binding:host_id": ADMIN_OR_SERVICE,
    "create_port:binding:profile": SERVICE,
    "create_port:binding:vnic_type": f"{ADMIN_OR_PROJECT_MEMBER} or {SERVICE}",
    "create_port:allowed_address_pairs": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "create_port:allowed_address_pairs:mac_address": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "create_port:allowed_address_pairs:ip_address": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "get_port": f"({ADMIN}) or ({SERVICE}) or {NET_OWNER_READER} or {PROJECT_READER}",
    "get_port:binding:vif_type": ADMIN_OR_SERVICE,
    "get_port:binding:vif_details": ADMIN_OR_SERVICE,
    "get_port:binding:host_id": ADMIN_OR_SERVICE,
    "get_port:binding:profile": ADMIN_OR_SERVICE,
    "get_port:binding:failure_reason": ADMIN_OR_SERVICE,  # provnet's: it repeats binding:vif_details' reason
    "update_port": f"({ADMIN}) or ({SERVICE}) or {PROJECT_MEMBER}",
    "update_port:device_id": f"{ADMIN_OR_PROJECT_MEMBER} or {SERVICE}",
    "update_port:device_owner": f"not rule:network_device or {PORT_WRITE}",
    "update_port:mac_address": f"({ADMIN}) or ({SERVICE}) or role:manager and rule:network_owner",
    "update_port:fixed_ips": PORT_WRITE,
    "update_port:fixed_ips:ip_address": PORT_WRITE,
    "update_port:fixed_ips:subnet_id": f"{PORT_WRITE} or rule:shared",
    "update_port:port_security_enabled": PORT_WRITE,
    "update_port:binding:host_id": ADMIN_OR_SERVICE,
    "update_port:binding:profile": SERVICE,
    "update_port:binding:vnic_type": f"({ADMIN}) or ({SERVICE}) or {PROJECT_MEMBER}",
    "update_port:allowed_address_pairs": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "update_port:allowed_address_pairs:mac_address": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "update_port:allowed_address_pairs:ip_address": f"{ADMIN_OR_NET_OWNER_MEMBER} or {SERVICE}",
    "delete_port": f"({ADMIN}) or ({SERVICE}) or {NET_OWNER_MEMBER} or {PROJECT_MEMBER}",
    # router.py
    "create_router": ADMIN_OR_PROJECT_MEMBER,
    "get_router": ADMIN_OR_PROJECT_READER,
    "update_router": ADMIN_OR_PROJECT_MEMBER,
    "delete_router": ADMIN_OR_PROJECT_MEMBER,
    "add_router_interface": ADMIN_OR_PROJECT_MEMBER,
    "remove_router_interface": ADMIN_OR_PROJECT_MEMBER,
    # agent.py
    "get_agent": ADMIN,
    "update_agent": ADMIN,
    "delete_agent": ADMIN,
    # l3_agent.py (the l3_agent_scheduler extension); provnet's L3 agent reads its routers through the API (a
    # Neutron L3 agent does over RPC), so the service role may read the schedule
    "create_l3-router": ADMIN,
    "delete_l3-router": ADMIN,
    "get_l3-routers": ADMIN_OR_SERVICE,
    "get_l3-agents": ADMIN_OR_SERVICE,
    # provnet's own API (/provnet/v1)
    "provnet:instances": ADMIN_OR_SERVICE,
    "provnet:report_agent_state": SERVICE,
    "provnet:update_port_status": SERVICE,
    "provnet:agent_lookups": ADMIN_OR_SERVICE,
    "provnet:metadata_explain": ADMIN,
}


class _NotSpecified:
    def __repr__(self) -> str:
        return "<not specified>"


NOT_SPECIFIED: Any = _NotSpecified()


@dataclass(frozen=True)
class Enforced:
    """An attribute with `enforce_policy` in neutron-lib: setting it explicitly (not to its default) adds the rule
    `<action>:<name>`, and for a list of objects `<action>:<name>:<key>` for every key its items carry."""

    name: str
    default: Any = NOT_SPECIFIED
    boolean: bool = False
    items_are_objects: bool = False


# neutron-lib's attribute maps (core attributes first, then the extensions), only what provnet serves
ENFORCED: dict[str, tuple[Enforced, ...]] = {
    "network": (
        Enforced("shared", False, boolean=True),
        Enforced("router:external", False, boolean=True),
        Enforced("provider:network_type"),
        Enforced("provider:physical_network"),
        Enforced("provider:segmentation_id"),
        Enforced("port_security_enabled", True, boolean=True),
    ),
    "subnet": (),
    "port": (
        Enforced("mac_address"),
        Enforced("fixed_ips", items_are_objects=True),
        Enforced("device_id", ""),
        Enforced("device_owner", ""),
        Enforced("binding:vnic_type", "normal"),
        Enforced("binding:host_id"),
        Enforced("binding:profile"),
        Enforced("port_security_enabled", boolean=True),
        Enforced("allowed_address_pairs", items_are_objects=True),
    ),
    "router": (),
    "agent": (),
}


def _as_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _explicitly_set(attr: Enforced, body: Mapping[str, Any], updating: bool) -> bool:
    """Neutron's rule: on update, every attribute in the body counts; on create, only one set to something other
    than its default."""
    if attr.name not in body:
        return False
    if updating or attr.default is NOT_SPECIFIED:
        return True
    value = _as_bool(body[attr.name]) if attr.boolean else body[attr.name]
    return value != attr.default


@dataclass(frozen=True)
class MatchRule:
    """What one create/update is checked against: every rule must pass; `text` is oslo.policy's rendering of the
    check tree, which Neutron puts in the 403 message ("... is disallowed by policy")."""

    rules: tuple[str, ...]
    text: str


def match_rule(action: str, member: str, body: Mapping[str, Any], updating: bool = False) -> MatchRule:
    """The rule an action on `member` with request `body` must pass, composed as Neutron's _build_match_rule."""
    rules = [action]
    text = f"rule:{action}"
    for attr in ENFORCED.get(member, ()):
        if not _explicitly_set(attr, body, updating):
            continue
        name = f"{action}:{attr.name}"
        rules.append(name)
        attr_text = f"rule:{name}"
        value = body[attr.name]
        if attr.items_are_objects and isinstance(value, list):
            subs = [f"{name}:{key}" for item in value if isinstance(item, Mapping) for key in item]
            if subs:
                rules.extend(dict.fromkeys(subs))
                attr_text = f"({attr_text} and ({' and '.join('rule:' + s for s in subs)}))"
        text = f"({text} and {attr_text})"
    return MatchRule(tuple(rules), text)
