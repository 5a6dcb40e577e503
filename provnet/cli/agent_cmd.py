# `provnet agent`: this host's Open vSwitch-type agent, reporting its state (heartbeat, bridge_mappings) in a loop.
from __future__ import annotations

import asyncio
import logging

import click

from provnet.agents.report import StateReporter, ovs_configurations
from provnet.cli.serve import run
from provnet.model.resources import OVS_AGENT_TYPE
from provnet.runtime.process import StoreError, open_store

log = logging.getLogger("provnet.agent")
BINARY = "provnet-agent"


def register(group: click.Group) -> None:
    @group.command("agent", epilog="\b\nExamples:\n  provnet --config-file /etc/provnet/provnet.conf agent\n"
                   "  provnet --url http://controller:9696 agent --host compute1\n"
                   "  provnet agent --once          # one heartbeat, e.g. from a health check")
    @click.option("--host", default=None, help="Host name ports name in binding:host_id (default: [DEFAULT] host, "
                  "this machine's name).")
    @click.option("--once", is_flag=True, help="Report once and exit (exit status 1 if the report failed).")
    @click.pass_obj
    def agent(app, host: str | None, once: bool) -> None:
        """Report this host's agent state to the registry every [agent] report_interval seconds.

        The agent is what port binding looks for: a port with binding:host_id H binds (vif_type ovs) only
        while an agent on H has reported within agent_down_time, and for flat/vlan networks only if the
        network's physical network is in the agent's bridge_mappings, set in provnet's configuration:

        \b
            [ovs]
            bridge_mappings = physnet1:br-phy
            [agent]
            report_interval = 30

        Every report also binds again this host's ports whose binding failed. Use the local database
        (--db / --state-path) or a remote API (--url http://controller:9696). Stops cleanly on SIGTERM/SIGINT.
        """
        config = app.config
        host = host or config.host
        configurations = ovs_configurations(config.get("ovs.bridge_mappings"))
        if not configurations["bridge_mappings"]:
            log.warning("[ovs] bridge_mappings is empty: ports on flat and vlan networks will not bind on host %s",
                        host)

        def build(c, registry):
            return [StateReporter(registry, host, OVS_AGENT_TYPE, BINARY, lambda: configurations,
                                  float(c.get("agent.report_interval")))]

        if once:
            _report_once(app, build)
        else:
            run(config, build, api_url=app.api_url, client=app.client)


def _report_once(app, build) -> None:
    """One heartbeat (e.g. from a health check): exit status 1 if it failed."""
    try:
        registry = open_store(app.config, app.api_url, app.client)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None

    async def once() -> bool:
        reporter = build(app.config, registry)[0]
        ok = await reporter.report()
        reporter.areg.close()
        return ok

    try:
        ok = asyncio.run(once())
    finally:
        registry.close()
    if not ok:
        raise SystemExit(1)
