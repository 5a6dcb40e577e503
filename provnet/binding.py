# ML2-style port binding with the openvswitch driver, pure: which agent binds a port, or why none can.
"""Port binding as ML2 does it with the openvswitch mechanism driver, without I/O.

`bind_port` is called by the registry inside port create/update when `binding:host_id` is set and the
port is unbound or failed, and again for a host's failed ports whenever that host's agent reports.

Status, as ML2: a bound port stays DOWN until the L2 agent on its host (`provnet agent`) sees its device up on
the bridge and reports it ACTIVE (`Registry.update_port_status`), and DOWN again when the device goes.
A failed binding is always DOWN with `binding:vif_type` "binding_failed" and a reason, in
`binding:failure_reason` and, for clients that show only Neutron's fields, in `binding:vif_details`.

A network without a provider:network_type is treated as a "local" segment (always bindable by type).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime

from provnet.model.resources import OVS_AGENT_TYPE, Agent, Network, Port

VIF_TYPE_OVS = "ovs"
VIF_TYPE_BINDING_FAILED = "binding_failed"
VIF_TYPE_UNBOUND = "unbound"
ALWAYS_SUPPORTED_TYPES = ("local", "flat", "vlan")
PHYSNET_TYPES = ("flat", "vlan")


@dataclass(frozen=True)
class Binding:
    """The outcome of one binding attempt: what goes into the port's binding:* fields and status."""

    vif_type: str
    vif_details: dict = field(default_factory=dict)  # ovs details; {"failure_reason": ...} on failure
    status: str = "DOWN"
    failure_reason: str | None = None
    agent_id: str | None = None

    @property
    def bound(self) -> bool:
        return self.vif_type == VIF_TYPE_OVS


def needs_binding(port: Port) -> bool:
    """ML2 binds when a host is named and the port is not bound yet (or its last attempt failed)."""
    return bool(port.binding_host_id) and port.binding_vif_type in (VIF_TYPE_UNBOUND, VIF_TYPE_BINDING_FAILED)


def ovs_vif_details(agent: Agent) -> dict:
    """The vif_details the openvswitch driver hands to Nova, from what the agent reported."""
    conf = agent.configurations
    return {
        "connectivity": "l2",
        "port_filter": True,
        "ovs_hybrid_plug": bool(conf.get("ovs_hybrid_plug", False)),
        "datapath_type": conf.get("datapath_type", "system"),
        "bridge_name": conf.get("integration_bridge", "br-int"),
        "bound_drivers": {"0": "openvswitch"},
    }


def _failed(reason: str) -> Binding:
    # Neutron leaves vif_details {} on failure; the reason is added there too so that clients that show only
    # Neutron's own fields (`openstack port show`: binding_vif_details) show it. Nova stops at the vif_type.
    return Binding(vif_type=VIF_TYPE_BINDING_FAILED, vif_details={"failure_reason": reason}, status="DOWN",
                   failure_reason=reason)


def bind_port(port: Port, network: Network, agents: list[Agent], *, agent_down_time: float,
              report_interval: float, now: datetime) -> Binding:
    """Bind `port` on its binding:host_id to an alive Open vSwitch agent there, or say why it cannot be done.

    `agents` may hold every agent; only those of type "Open vSwitch agent" on the port's host count.
    Checks, in order: a host is named; vnic_type normal; an agent on the host; enabled; alive; the segment
    type supported; for flat/vlan the physical network in the agent's bridge_mappings. With several agents
    on the host the first that passes binds; otherwise the reason of the last one tried is given.
    """
    host = port.binding_host_id
    if not host:
        return Binding(vif_type=VIF_TYPE_UNBOUND, vif_details={}, status="DOWN")
    if port.binding_vnic_type != "normal":
        return _failed(f"vnic_type {port.binding_vnic_type} is not supported by the openvswitch driver on host "
                       f"{host}: only normal ports bind")
    candidates = [a for a in agents if a.host == host and a.agent_type == OVS_AGENT_TYPE]
    if not candidates:
        return _failed(f"no agent on host {host}")
    reason = ""
    for agent in candidates:
        reason = _refusal(agent, network, host, agent_down_time=agent_down_time,
                          report_interval=report_interval, now=now)
        if not reason:  # up once the agent sees the device (update_port_status)
            return Binding(vif_type=VIF_TYPE_OVS, vif_details=ovs_vif_details(agent), status=port.status,
                           failure_reason=None, agent_id=agent.id)
    return _failed(reason)


def _refusal(agent: Agent, network: Network, host: str, *, agent_down_time: float, report_interval: float,
             now: datetime) -> str:
    """Why this agent cannot bind a port of `network` (empty string: it can)."""
    if not agent.admin_state_up:
        return (f"agent on host {host} is disabled (admin_state_up False): enable it with "
                f"`openstack network agent set --enable {agent.id}`")
    if not agent.is_alive(agent_down_time, now):
        age = agent.heartbeat_age(now)
        seen = "no heartbeat ever" if age is None else f"last heartbeat {age:.0f} s ago"
        return (f"agent on host {host} is dead: {seen}, agent_down_time {agent_down_time:g} s, "
                f"report_interval {report_interval:g} s")
    network_type = network.network_type or "local"
    tunnel_types = [str(t) for t in agent.configurations.get("tunnel_types") or []]
    supported = [*ALWAYS_SUPPORTED_TYPES, *tunnel_types]
    if network_type not in supported:
        return (f"network type {network_type} is not supported by the agent on host {host}: it supports "
                f"{', '.join(supported)} (add {network_type} to [agent] tunnel_types there)")
    if network_type in PHYSNET_TYPES:
        mappings = agent.configurations.get("bridge_mappings") or {}
        physnet = network.physical_network
        if not isinstance(mappings, dict) or physnet not in mappings:
            return (f"physical network {physnet} is not in the agent's bridge_mappings "
                    f"{json.dumps(mappings, sort_keys=True)}: "
                    f"set [ovs] bridge_mappings = {physnet}:<bridge> on host {host}")
    return ""


# The operator's fix for each reason above, found again from the stored reason text (ports keep only the reason):
# (pattern of the reason, fix). `{host}` and the pattern's groups are filled in; `{physnet}` is the port's network's
# physical network. Keep each entry beside the reason it answers when a reason changes.
_FIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"vnic_type (?P<vnic>\S+) is not supported by the openvswitch driver on host (?P<host>\S+)"),
     "make it a normal port: `provnet port-update PORT --vnic-type normal` (or `openstack port set --vnic-type "
     "normal PORT`); {vnic} ports need an SR-IOV or other mechanism driver provnet does not have"),
    (re.compile(r"no agent on host (?P<host>\S+)$"),
     "start `provnet agent` on {host} with `bridge_mappings = {physnet}:br-phy` in [ovs] of its configuration "
     "(the bridge that carries {physnet}; or neutron-openvswitch-agent with that line in openvswitch_agent.ini), "
     "and `host = {host}` in [DEFAULT] if the machine's own name differs; check that it reports with "
     "`provnet agent-list`"),
    (re.compile(r"agent on host (?P<host>\S+) is disabled .*?`(?P<command>[^`]+)`"),
     "enable the agent: `{command}` (or `provnet agent-update {host} --admin-state-up`)"),
    (re.compile(r"agent on host (?P<host>\S+) is dead: (?:no heartbeat ever|last heartbeat .*?), agent_down_time "
                r"(?P<down>[\d.]+) s, report_interval (?P<interval>[\d.]+) s"),
     "start or restart `provnet agent` on {host} and check that it reaches the registry (`provnet agent-list` "
     "shows it alive); if it runs, agent_down_time {down} s is too short for its reports: set "
     "`agent_down_time = 75` in [DEFAULT] (at least twice report_interval {interval} s)"),
    (re.compile(r"network type (?P<type>\S+) is not supported by the agent on host (?P<host>\S+)"),
     "on {host}, add {type} to the agent's tunnel types: `tunnel_types = {type}` in [agent] (with a local_ip in "
     "[ovs]), then restart the agent; or use a flat or vlan network there"),
    (re.compile(r"physical network (?P<physnet>\S+) is not in the agent's bridge_mappings .*? on host (?P<host>\S+)"),
     "on {host}, set `bridge_mappings = {physnet}:br-phy` in [ovs] of the agent's configuration (the bridge that "
     "carries {physnet}; provnet.conf for `provnet agent`, openvswitch_agent.ini for neutron-openvswitch-agent) "
     "and restart the agent"),
)


def failure_fix(reason: str, physical_network: str | None = None) -> str | None:
    """The fix for a binding failure reason written by this module (None for a reason it did not write)."""
    for pattern, fix in _FIXES:
        m = pattern.search(reason)
        if m:
            return fix.format(**{"physnet": physical_network or "<physical network>", **m.groupdict()})
    return None
