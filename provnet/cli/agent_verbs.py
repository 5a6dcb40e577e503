# The agent verbs: agent-list/-show/-update/-delete (agents create themselves by reporting their state).
from __future__ import annotations

from typing import Any

import click

from provnet.cli.lookup import find
from provnet.cli.verbs import (
    delete_all,
    emit_many,
    emit_one,
    list_filters,
    list_options,
    neutron_command,
    nothing_in,
    output_options,
    update_one,
)
from provnet.model.forms import list_columns
from provnet.model.resources import L3_AGENT_TYPE
from provnet.registry.base import Registry

AGENT_COLUMNS = list_columns("agent")  # as the attributes declare them (model/validation.py)


def agent_row(agent: Any, agent_down_time: float, fmt: str) -> dict[str, Any]:
    """The API's agent; in a table `alive` reads as the neutron CLI showed it, `:-)` or `xxx`."""
    row = agent.to_api(agent_down_time)
    if fmt == "table":
        row["alive"] = ":-)" if row["alive"] else "xxx"
    return row


def _l3_agent(registry: Registry, name_or_id: str) -> Any:
    """An agent by id, or the L3 agent of a host (a host runs an L2 and an L3 agent: the host alone is ambiguous)."""
    found = registry.list_agents({"host": [name_or_id], "agent_type": [L3_AGENT_TYPE]})
    return found[0] if len(found) == 1 else find(registry, "agent", name_or_id)


def register(group: click.Group) -> None:
    @neutron_command(group, "agent-list", "", kind="agent",
                     epilog="\b\nExample:\n  provnet agent-list --host compute1 --agent_type 'Open vSwitch agent'")
    @list_options
    def agent_list(app, args, extras, show_details, fmt, columns) -> None:
        """List agents and whether each is alive (a heartbeat within agent_down_time).

        Pass-through options are filters (`--host H`, `--agent_type T`). A dead agent on a port's host is
        the seed's second cause of binding_failed.
        """
        registry: Registry = app.registry
        down = app.config.agent_down_time
        rows = [agent_row(a, down, fmt) for a in registry.list_agents(list_filters(extras) or None)]
        cols = sorted(rows[0]) if show_details and rows else list(AGENT_COLUMNS)
        emit_many(rows, cols, fmt, columns, nothing_in(app, "agents"))

    @neutron_command(group, "agent-show", "AGENT", kind="agent", extras=False,
                     epilog="\b\nAGENT is an id or, when one agent runs there, a host name. Example:\n"
                     "  provnet agent-show compute1 -c configurations")
    @output_options
    def agent_show(app, args, extras, fmt, columns) -> None:
        """Show an agent: its configurations (bridge_mappings), heartbeat and liveness."""
        agent = find(app.registry, "agent", args[0])
        emit_one(agent_row(agent, app.config.agent_down_time, fmt), fmt, columns)

    @neutron_command(group, "agent-update", "AGENT", kind="agent",
                     epilog="\b\nExample:\n  provnet agent-update compute1 --admin-state-down")
    @click.option("--admin-state-up", "up", is_flag=True, help="Let ports bind through this agent.")
    @click.option("--admin-state-down", "down", is_flag=True, help="Take the agent out of service.")
    @output_options
    def agent_update(app, args, extras, up, down, fmt, columns) -> None:
        """Update an agent's admin state."""
        updated = update_one(app, "agent", args[0], {}, extras, up, down)
        emit_one(agent_row(updated, app.config.agent_down_time, fmt), fmt, columns, f"Updated agent: {args[0]}")

    @neutron_command(group, "agent-delete", "AGENT...", extras=False)
    def agent_delete(app, args, extras) -> None:
        """Delete agents (a running agent re-registers at its next report)."""
        delete_all(app, "agent", args)

    # L3 agent scheduling, the old neutron CLI's verbs (l3_agent_scheduler)
    @neutron_command(group, "l3-agent-router-add", "L3_AGENT ROUTER", extras=False,
                     epilog="\b\nExample:\n  provnet l3-agent-router-add network1 metadata-router")
    def l3_agent_router_add(app, args, extras) -> None:
        """Host ROUTER on this L3 agent (refused while another agent hosts it: remove it there first)."""
        agent, router = _l3_agent(app.registry, args[0]), find(app.registry, "router", args[1])
        app.registry.add_router_to_l3_agent(agent.id, router.id)
        click.echo(f"Added router {args[1]} to L3 agent")

    @neutron_command(group, "l3-agent-router-remove", "L3_AGENT ROUTER", extras=False,
                     epilog="\b\nExample:\n  provnet l3-agent-router-remove network1 metadata-router")
    def l3_agent_router_remove(app, args, extras) -> None:
        """Stop hosting ROUTER on this L3 agent (it is hosted nowhere until added again or given an interface)."""
        agent, router = _l3_agent(app.registry, args[0]), find(app.registry, "router", args[1])
        app.registry.remove_router_from_l3_agent(agent.id, router.id)
        click.echo(f"Removed router {args[1]} from L3 agent")

    @neutron_command(group, "router-list-on-l3-agent", "L3_AGENT", kind="router", extras=False,
                     epilog="\b\nExample:\n  provnet router-list-on-l3-agent network1")
    @output_options
    def router_list_on_l3_agent(app, args, extras, fmt, columns) -> None:
        """List the routers an L3 agent hosts."""
        agent = _l3_agent(app.registry, args[0])
        rows = [r.to_api() for r in app.registry.list_routers_on_l3_agent(agent.id)]
        emit_many(rows, ("id", "name", "external_gateway_info"), fmt, columns,
                  f"No routers on L3 agent {args[0]}.")

    @neutron_command(group, "l3-agent-list-hosting-router", "ROUTER", kind="agent", extras=False,
                     epilog="\b\nExample:\n  provnet l3-agent-list-hosting-router metadata-router")
    @output_options
    def l3_agent_list_hosting_router(app, args, extras, fmt, columns) -> None:
        """List the L3 agent hosting a router, and whether it is alive."""
        router = find(app.registry, "router", args[0])
        down = app.config.agent_down_time
        rows = [agent_row(a, down, fmt) for a in app.registry.list_l3_agents_hosting_router(router.id)]
        emit_many(rows, ("id", "host", "admin_state_up", "alive"), fmt, columns,
                  f"No L3 agent hosts router {args[0]}.")
