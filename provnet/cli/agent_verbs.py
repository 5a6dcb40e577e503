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
from provnet.registry.base import Registry

AGENT_COLUMNS = ("id", "agent_type", "host", "alive", "admin_state_up", "binary")


def agent_row(agent: Any, agent_down_time: float, fmt: str) -> dict[str, Any]:
    """The API's agent; in a table `alive` reads as the neutron CLI showed it, `:-)` or `xxx`."""
    row = agent.to_api(agent_down_time)
    if fmt == "table":
        row["alive"] = ":-)" if row["alive"] else "xxx"
    return row


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
