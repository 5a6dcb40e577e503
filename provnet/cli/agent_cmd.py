# `provnet agent`: this host's L2 agent (state reports, port status and firewall of the devices on its bridges).
from __future__ import annotations

import asyncio
import logging

import click

from provnet.agents.l2 import BINARY
from provnet.agents.report import StateReporter, ovs_configurations
from provnet.cli.serve import rereader, run
from provnet.model.resources import OVS_AGENT_TYPE
from provnet.runtime import compose
from provnet.runtime.process import StoreError, open_store

log = logging.getLogger("provnet.agent")


def register(group: click.Group) -> None:
    @group.command("agent", epilog="\b\nExamples:\n  provnet --config-file /etc/provnet/provnet.conf agent\n"
                   "  provnet --url http://controller:9696 agent --host compute1\n"
                   "  provnet agent --once          # one heartbeat, e.g. from a health check")
    @click.option("--host", default=None, help="Host name ports name in binding:host_id (default: [DEFAULT] host, "
                  "this machine's name).")
    @click.option("--once", is_flag=True, help="Report once and exit (exit status 1 if the report failed).")
    @click.pass_obj
    def agent(app, host: str | None, once: bool) -> None:
        """This host's L2 agent (root; run on each host with the provider bridge), as neutron-openvswitch-agent
        is for the seed.

        It reports the agent's state every [agent] report_interval seconds: port binding looks for it (a port
        with binding:host_id H binds only while an agent on H is alive and maps the network's physical
        network). It watches the bridges of [ovs] bridge_mappings for the devices Nova plugs (tap + the first
        11 characters of the port id): a port bound to this host is ACTIVE while its device is up and DOWN when
        it goes, and gets Neutron's port firewall on this host (anti-spoofing by MAC and fixed IPs, DHCP
        replies from the external server allowed, DHCP serving from the VM dropped), removed when the device
        or the port goes. Router interfaces plugged by `provnet l3-agent` are marked too, never filtered; any
        other tap on the bridge is dropped. Devices are followed by netlink events and ports by the change feed,
        so a change converges in well under a second; a full resync every [agent] resync_interval repairs rules
        changed by hand.

        \b
            [ovs]
            bridge_mappings = physnet1:br-phy
            [agent]
            report_interval = 30

        Use the local database (--db / --state-path) or a remote API (--url http://controller:9696). Stops
        cleanly on SIGTERM/SIGINT, leaving statuses and rules as they are; SIGHUP resyncs every port now.
        """
        config = app.config
        host = host or config.host
        if not config.get("ovs.bridge_mappings"):
            log.warning("[ovs] bridge_mappings is empty: ports on flat and vlan networks will not bind on host %s",
                        host)
        if once:
            _report_once(app, host)
        else:
            run(config, lambda c, registry: compose.l2_agent_services(c, registry, host), api_url=app.api_url,
                client=app.client, reconfigure=rereader(app, {}))


def _report_once(app, host: str) -> None:
    """One heartbeat (e.g. from a health check): exit status 1 if it failed."""
    try:
        registry = open_store(app.config, app.api_url, app.client)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None

    async def once() -> bool:
        configurations = ovs_configurations(app.config.get("ovs.bridge_mappings"))
        reporter = StateReporter(registry, host, OVS_AGENT_TYPE, BINARY, lambda: configurations,
                                 float(app.config.get("agent.report_interval")))
        ok = await reporter.report()
        reporter.areg.close()
        return ok

    try:
        ok = asyncio.run(once())
    finally:
        registry.close()
    if not ok:
        raise SystemExit(1)
