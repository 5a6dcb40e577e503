# `provnet l3-agent`: this host's L3 agent (routers' namespaces, qr- devices, metadata rules and proxies; network
# mode's metadata namespaces).
from __future__ import annotations

import logging

import click

from provnet.cli.serve import rereader, run
from provnet.runtime import compose

log = logging.getLogger("provnet.l3_agent")


def register(group: click.Group) -> None:
    @group.command("l3-agent", epilog="\b\nExamples:\n  provnet --config-file /etc/provnet/provnet.conf l3-agent\n"
                   "  provnet --url http://controller:9696 l3-agent --host network1\n"
                   "  provnet --url https://controller:9696 --os-cloud provnet-agent l3-agent  # behind Keystone")
    @click.option("--host", default=None, help="This host's name (default: [DEFAULT] host, this machine's name).")
    @click.pass_obj
    def l3_agent(app, host: str | None) -> None:
        """Host the routers the registry schedules here (root; run on each host with the provider bridge).

        For each router it hosts: a qrouter-<id> namespace, one qr- device per interface port (the port's MAC
        and fixed IPs) on the bridge that [ovs] bridge_mappings names for the network's physical network, the
        metadata rules (169.254.169.254:80 -> the proxy's port) and one metadata proxy, which outlives the agent
        and is adopted when it starts again. Changes in the registry are applied as they come (the change
        feed); a full resync runs at start and every [l3_agent] resync_interval seconds and repairs what was
        changed by hand. A router moves to another L3 agent when this one has been silent for agent_down_time.

        Network mode (metadata without a router): for each network with a metadata port (device_owner
        network:distributed) and a VM port bound to this host, a provnet-meta-<network> namespace holding the
        port's MAC and fixed IPs, 169.254.169.254/32 (and fe80::a9fe:a9fe/64 with an IPv6 subnet) on the same
        bridge, and one proxy bound to 169.254.169.254:80 itself (no rules); ebtables keep that device's frames
        on this host, since every host with VMs on the network holds the same MAC (as OVN's localport does).

        \b
            [ovs]
            bridge_mappings = physnet1:br-phy
            [agent]
            report_interval = 30

        Run `provnet metadata-agent` on the same host (the proxies connect to its metadata_proxy_socket).
        Stops on SIGTERM/SIGINT, leaving namespaces and proxies in place. SIGHUP reads [ovs] bridge_mappings
        again and resyncs every router now (after repairing a host by hand, rather than wait for the timer).
        """
        config = app.config
        host = host or config.host
        if not config.get("ovs.bridge_mappings"):
            log.warning("[ovs] bridge_mappings is empty: no router can be plugged on host %s", host)
        run(config, lambda c, registry: compose.l3_agent_services(c, registry, host), api_url=app.api_url,
            client=app.client, reconfigure=rereader(app, {}))
