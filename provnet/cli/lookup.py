# Names or ids wherever the CLI names a resource: try the id, then the name; several matches is an error.
from __future__ import annotations

from typing import Any

from provnet.model.errors import Conflict, NotFound
from provnet.registry.base import Registry

# kind -> (getter, lister, attribute a user may name it by besides its id)
KINDS: dict[str, tuple[str, str, str]] = {
    "network": ("get_network", "list_networks", "name"),
    "subnet": ("get_subnet", "list_subnets", "name"),
    "port": ("get_port", "list_ports", "name"),
    "router": ("get_router", "list_routers", "name"),
    "instance": ("get_instance", "list_instances", "name"),
    "agent": ("get_agent", "list_agents", "host"),
}


class NotFoundByName(NotFound):
    message_format = "Unable to find %(kind)s with name or id '%(name)s'"


class AmbiguousName(Conflict):
    message_format = ("Multiple %(kind)s matches found for %(attr)s '%(name)s', use an ID to be more "
                      "specific: %(ids)s")


def find(registry: Registry, kind: str, name_or_id: str) -> Any:
    """The one resource of `kind` whose id, or else whose name (host for agents), is `name_or_id`."""
    getter, lister, attr = KINDS[kind]
    try:
        return getattr(registry, getter)(name_or_id)
    except NotFound:
        pass
    matches = getattr(registry, lister)({attr: [name_or_id]})
    if not matches:
        raise NotFoundByName(kind=kind, name=name_or_id)
    if len(matches) > 1:
        ids = ", ".join(sorted(m.id for m in matches))
        raise AmbiguousName(kind=kind, attr=attr, name=name_or_id, ids=ids)
    return matches[0]


def find_id(registry: Registry, kind: str, name_or_id: str) -> str:
    return find(registry, kind, name_or_id).id
