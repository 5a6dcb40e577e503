# `provnet agent`: this host's Open vSwitch-type agent, reporting its state (heartbeat, bridge_mappings) in a loop.
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import click

from provnet.model.errors import NeutronError
from provnet.model.resources import OVS_AGENT_TYPE

log = logging.getLogger("provnet.agent")
BINARY = "provnet-agent"


def agent_configurations(bridge_mappings: Mapping[str, str]) -> dict[str, Any]:
    """What the agent reports, in neutron-openvswitch-agent's shape (binding reads bridge_mappings)."""
    return {"bridge_mappings": dict(bridge_mappings), "integration_bridge": "br-int", "tunnel_types": [],
            "ovs_hybrid_plug": False, "datapath_type": "system"}


def report_loop(report: Callable[[], Any], interval: float, stop: threading.Event,
                once: bool = False) -> int:
    """Call `report` now and then every `interval` seconds until `stop` is set; return the failed reports.

    A failed report (registry unreachable, API error) is logged and retried at the next interval: the
    agent must outlive a registry restart, and binding treats it as dead only after agent_down_time.
    """
    failures = 0
    healthy: bool | None = None
    while not stop.is_set():
        try:
            agent = report()
        except Exception as exc:  # noqa: BLE001 - any failure (network, HTTP, API error): retry, never die
            failures += 1
            if healthy is not False:
                log.warning("state report failed, retrying every %g s: %s", interval,
                            exc if isinstance(exc, OSError | NeutronError) else repr(exc))
            healthy = False
        else:
            if healthy is not True:
                log.info("reported state as agent %s (host %s, bridge_mappings %s)%s", agent.id, agent.host,
                         agent.configurations.get("bridge_mappings"), "" if once else f", every {interval:g} s")
            else:
                log.debug("heartbeat of agent %s", agent.id)
            healthy = True
        if once:
            break
        stop.wait(interval)
    return failures


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
        interval = float(config.get("agent.report_interval"))
        configurations = agent_configurations(config.get("ovs.bridge_mappings"))
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if not configurations["bridge_mappings"]:
            log.warning("[ovs] bridge_mappings is empty: ports on flat and vlan networks will not bind on host %s",
                        host)
        try:
            registry = app.registry
        except Exception as exc:  # a local store that cannot be opened (its directory, its URL): one line
            raise click.ClickException(f"cannot open the registry: {exc}") from None

        def report():
            return registry.report_agent_state(host, OVS_AGENT_TYPE, BINARY, configurations)

        failures = report_loop(report, interval, stop, once=once)
        log.info("agent on host %s stopped", host)
        if once and failures:
            raise SystemExit(1)
