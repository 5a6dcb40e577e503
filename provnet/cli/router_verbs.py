# The neutron-style router verbs: router-create/-list/-show/-update/-delete, router-interface-add/-delete.
from __future__ import annotations

from typing import Any

import click

from provnet.cli.lookup import find, find_id
from provnet.cli.neutron_args import merge_body, parse_interface
from provnet.cli.verbs import (
    admin_state_options,
    delete_all,
    emit_many,
    emit_one,
    list_filters,
    list_options,
    neutron_command,
    nothing_in,
    output_options,
    project_option,
    rows_for,
    update_one,
)
from provnet.model.forms import list_columns
from provnet.registry.base import Registry

ROUTER_COLUMNS = list_columns("router")  # as the attributes declare them (model/validation.py)
ROUTER_PORT_COLUMNS = list_columns("port")


def interface_target(registry: Registry, text: str) -> dict[str, str]:
    """INTERFACE (`SUBNET`, `subnet=SUBNET`, `port=PORT`) -> {"subnet_id": id} or {"port_id": id}."""
    kind, name = parse_interface(text)
    return {f"{kind}_id": find_id(registry, kind, name)}


def register(group: click.Group) -> None:
    @neutron_command(group, "router-create", "NAME", kind="router",
                     epilog="\b\nExample (a router used only for metadata, as in the seed):\n"
                     "  provnet router-create metadata-router\n"
                     "  provnet router-interface-add metadata-router phy_subnet_without_dhcp")
    @click.option("--admin-state-down", is_flag=True, help="Create it administratively down.")
    @project_option
    @output_options
    def router_create(app, args, extras, admin_state_down, project_id, fmt, columns) -> None:
        """Create a router NAME. Its interfaces' networks are the ones its metadata proxy serves."""
        body: dict[str, Any] = {"name": args[0]}
        if admin_state_down:
            body["admin_state_up"] = False
        if project_id:
            body["project_id"] = project_id
        router = app.registry.create_router(merge_body(body, extras))
        emit_one(router.to_api(), fmt, columns, "Created a new router:")

    @neutron_command(group, "router-list", "", kind="router",
                     epilog="\b\nExample:\n  provnet router-list -f value -c id")
    @list_options
    def router_list(app, args, extras, show_details, fmt, columns) -> None:
        """List routers; pass-through options are filters (`--name NAME`)."""
        rows, cols = rows_for(app.registry.list_routers(list_filters(extras) or None), ROUTER_COLUMNS,
                              show_details)
        emit_many(rows, cols, fmt, columns, nothing_in(app, "routers"))

    @neutron_command(group, "router-show", "ROUTER", kind="router", extras=False)
    @output_options
    def router_show(app, args, extras, fmt, columns) -> None:
        """Show a router, by name or id."""
        emit_one(find(app.registry, "router", args[0]).to_api(), fmt, columns)

    @neutron_command(group, "router-update", "ROUTER", kind="router",
                     epilog="\b\nExample:\n  provnet router-update metadata-router --name r1")
    @click.option("--name", help="New name.")
    @admin_state_options
    @output_options
    def router_update(app, args, extras, name, up, down, fmt, columns) -> None:
        """Update a router's name or admin state."""
        body: dict[str, Any] = {} if name is None else {"name": name}
        router = update_one(app, "router", args[0], body, extras, up, down)
        emit_one(router.to_api(), fmt, columns, f"Updated router: {args[0]}")

    @neutron_command(group, "router-delete", "ROUTER...", extras=False)
    def router_delete(app, args, extras) -> None:
        """Delete routers, by name or id (refused while they have interfaces)."""
        delete_all(app, "router", args)

    @neutron_command(group, "router-interface-add", "ROUTER INTERFACE", extras=False,
                     epilog="\b\nINTERFACE is SUBNET, subnet=SUBNET or port=PORT (names or ids). Examples:\n"
                     "  provnet router-interface-add metadata-router phy_subnet_without_dhcp\n"
                     "  provnet router-interface-add metadata-router port=router-port")
    @output_options
    def interface_add(app, args, extras, fmt, columns) -> None:
        """Add an interface to ROUTER.

        By subnet, a new port with device_owner network:router_interface takes the subnet's gateway_ip
        (which must be free); by port, an existing port becomes the interface.
        """
        registry: Registry = app.registry
        router_id = find_id(registry, "router", args[0])
        info = registry.add_router_interface(router_id, **interface_target(registry, args[1]))
        if fmt == "table" and not columns:
            click.echo(f"Added interface {info.get('port_id', '')} to router {args[0]}.")
        else:  # the API's interface body (id, port_id, subnet_id, subnet_ids, ...)
            emit_one(info, fmt, columns)

    @neutron_command(group, "router-interface-delete", "ROUTER INTERFACE", extras=False,
                     epilog="\b\nINTERFACE is SUBNET, subnet=SUBNET or port=PORT (names or ids).")
    def interface_delete(app, args, extras) -> None:
        """Remove an interface from ROUTER (by subnet its interface port is deleted)."""
        registry: Registry = app.registry
        router_id = find_id(registry, "router", args[0])
        registry.remove_router_interface(router_id, **interface_target(registry, args[1]))
        click.echo(f"Removed interface from router {args[0]}.")

    @neutron_command(group, "router-port-list", "ROUTER", kind="port", extras=False)
    @list_options
    def router_port_list(app, args, extras, show_details, fmt, columns) -> None:
        """List a router's ports (its interfaces)."""
        registry: Registry = app.registry
        router_id = find_id(registry, "router", args[0])
        rows, cols = rows_for(registry.list_ports({"device_id": [router_id]}), ROUTER_PORT_COLUMNS, show_details)
        emit_many(rows, cols, fmt, columns, nothing_in(app, f"ports on router {args[0]}"))
