# Checks on agents and binding: heartbeat timing, dead agents, bridge_mappings, ports whose binding failed.
from __future__ import annotations

from collections.abc import Iterator

from provnet.binding import failure_fix
from provnet.doctor.findings import Finding
from provnet.doctor.ini import Location
from provnet.doctor.inputs import Inputs
from provnet.model.resources import OVS_AGENT_TYPE

AGENT_FILES = ("openvswitch_agent.ini", "dhcp_agent.ini", "l3_agent.ini", "metadata_agent.ini")


def _float(text: str, default: float) -> float:
    try:
        return float(text)
    except ValueError:
        return default


def agent_down_time(inputs: Inputs) -> float:
    """The registry's rule for `alive`: provnet's agent_down_time (75 s unless configured)."""
    return float(inputs.provnet.agent_down_time) if inputs.provnet else 75.0


def check_down_time(inputs: Inputs) -> Iterator[Finding]:
    if inputs.has("neutron.conf"):
        down_entry = inputs.entry("neutron.conf", "DEFAULT", "agent_down_time")
        down = _float(down_entry.value, 75.0) if down_entry else 75.0
        base = inputs.entry("neutron.conf", "agent", "report_interval")
        worst: tuple[float, Location | None, str] = (_float(base.value, 30.0) if base else 30.0,
                                                     base.where if base else None, "neutron.conf")
        for kind in AGENT_FILES:
            e = inputs.entry(kind, "agent", "report_interval")
            if e and _float(e.value, 30.0) > worst[0]:
                worst = (_float(e.value, 30.0), e.where, kind)
        interval, interval_where, kind = worst
        if down < 2 * interval:
            where = down_entry.where if down_entry else (interval_where or inputs.where("neutron.conf"))
            yield Finding(
                "error", "agent.down-time", where,
                f"agent_down_time {down:g} s is below twice report_interval {interval:g} s ({kind}): a heartbeat "
                f"can be late by up to one interval, so a live agent is judged dead",
                "ports bind with binding:vif_type binding_failed (\"agent on host X is dead\"); Nova reports "
                "\"Binding failed for port\"; agents flap between alive and dead",
                f"set `agent_down_time = {max(75, int(2 * interval + 15))}` in [DEFAULT] of neutron.conf (at least "
                f"2 x report_interval) and restart neutron-server")
    if inputs.provnet:
        down = float(inputs.provnet.agent_down_time)
        interval = float(inputs.provnet.get("agent.report_interval"))
        if down < 2 * interval:
            yield Finding(
                "error", "agent.down-time", inputs.provnet_where("agent_down_time"),
                f"provnet agent_down_time {down:g} s is below twice [agent] report_interval {interval:g} s",
                "ports bind with binding_failed \"agent on host X is dead\" between heartbeats",
                f"set `agent_down_time = {max(75, int(2 * interval + 15))}` in [DEFAULT] of provnet's "
                "configuration")


def check_dead_agents(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.snapshot:
        return
    down = agent_down_time(inputs)
    for agent in inputs.snapshot.agents:
        if agent.is_alive(down, inputs.now):
            continue
        age = agent.heartbeat_age(inputs.now)
        seen = "never reported" if age is None else f"last heartbeat {age:.0f} s ago"
        yield Finding(
            "error", "agent.dead", None,
            f"{agent.agent_type} on host {agent.host} ({agent.id}) is dead: {seen}, agent_down_time {down:g} s",
            f"ports with binding:host_id {agent.host} fail to bind (binding_failed)",
            f"start the agent on {agent.host} (`provnet agent`, or neutron-openvswitch-agent) and check it can "
            f"reach the registry; if it runs, raise agent_down_time above twice its report_interval")


def _agent_mappings(inputs: Inputs) -> tuple[set[str] | None, Location | None]:
    """Physical networks the OVS agent's configuration maps, and where (None: no agent configuration given)."""
    kind = "openvswitch_agent.ini" if inputs.has("openvswitch_agent.ini") else (
        "ml2_conf.ini" if inputs.has("ml2_conf.ini") else None)
    if kind is None:
        return None, None
    e = inputs.entry(kind, "ovs", "bridge_mappings")
    if e is None:
        return set(), inputs.where(kind, "ovs")
    physnets = {item.split(":", 1)[0].strip() for item in e.value.split(",") if ":" in item}
    return physnets, e.where


def _needed_physnets(inputs: Inputs) -> dict[str, str]:
    """Physical networks in use -> why: the registry's flat/vlan networks, else explicit ml2 options."""
    if inputs.snapshot:
        return {n.physical_network: f"network {n.name or n.id} ({n.network_type})"
                for n in inputs.snapshot.networks if n.network_type in ("flat", "vlan") and n.physical_network}
    out: dict[str, str] = {}
    flat = inputs.entry("ml2_conf.ini", "ml2_type_flat", "flat_networks")
    if flat:
        out.update({p: "flat_networks" for p in (x.strip() for x in flat.value.split(",")) if p and p != "*"})
    vlan = inputs.entry("ml2_conf.ini", "ml2_type_vlan", "network_vlan_ranges")
    if vlan:
        out.update({x.split(":")[0].strip(): "network_vlan_ranges" for x in vlan.value.split(",") if x.strip()})
    return out


def check_config_mappings(inputs: Inputs) -> Iterator[Finding]:
    mapped, where = _agent_mappings(inputs)
    if mapped is None:
        return
    legacy = inputs.entry("ml2_conf.ini", "ovs", "bridge_mappings")
    for physnet, why in sorted(_needed_physnets(inputs).items()):
        if physnet in mapped:
            continue
        if legacy and inputs.has("openvswitch_agent.ini") and physnet in legacy.value:
            yield Finding(
                "error", "agent.bridge-mappings", legacy.where,
                f"physical network {physnet} ({why}) is mapped in ml2_conf.ini [ovs], which "
                f"neutron-openvswitch-agent does not read: it reads openvswitch_agent.ini, where [ovs] "
                f"bridge_mappings does not name {physnet}",
                "VMs on the network fail to boot: port binding:vif_type binding_failed",
                f"move `bridge_mappings = {legacy.value}` to [ovs] in openvswitch_agent.ini and restart the agent")
        else:
            yield Finding(
                "error", "agent.bridge-mappings", where,
                f"physical network {physnet} ({why}) is not in the agent's [ovs] bridge_mappings",
                "VMs on the network fail to boot: port binding:vif_type binding_failed",
                f"set `bridge_mappings = {physnet}:br-phy` in [ovs] (the bridge that carries {physnet}) and "
                "restart the agent")


def check_provnet_mappings(inputs: Inputs) -> Iterator[Finding]:
    """provnet's own agent on this host: ports bound here need their network's physnet in [ovs] bridge_mappings."""
    if not (inputs.provnet and inputs.snapshot):
        return
    host = str(inputs.provnet.host)
    mapped = inputs.provnet.get("ovs.bridge_mappings") or {}
    missing: dict[str, list[str]] = {}
    for port in inputs.snapshot.ports:
        net = inputs.snapshot.network(port.network_id)
        if port.binding_host_id == host and net and net.network_type in ("flat", "vlan") \
                and net.physical_network not in mapped:
            missing.setdefault(str(net.physical_network), []).append(port.name or port.id)
    for physnet, ports in sorted(missing.items()):
        yield Finding(
            "error", "agent.bridge-mappings", inputs.provnet_where("ovs.bridge_mappings"),
            f"ports bound to this host ({host}) are on physical network {physnet}, which provnet's [ovs] "
            f"bridge_mappings {mapped or '(empty)'} does not map: {', '.join(ports[:5])}",
            "those ports end binding_failed once `provnet agent` reports from this host",
            f"add {physnet}:<bridge> to [ovs] bridge_mappings in provnet's configuration (e.g. "
            f"`bridge_mappings = {physnet}:br-phy`) and restart `provnet agent`")


def check_registry_mappings(inputs: Inputs) -> Iterator[Finding]:
    snap = inputs.snapshot
    if not (snap and snap.live):  # networks from an operator's commands come without the agents' reports
        return
    down = agent_down_time(inputs)
    alive = [a for a in snap.agents if a.agent_type == OVS_AGENT_TYPE and a.admin_state_up
             and a.is_alive(down, inputs.now)]
    for net in snap.networks:
        if net.network_type not in ("flat", "vlan"):
            continue
        if any(net.physical_network in (a.configurations.get("bridge_mappings") or {}) for a in alive):
            continue
        reported = "; ".join(f"{a.host}: {a.configurations.get('bridge_mappings') or {}}" for a in alive) \
            or "no alive agent at all"
        yield Finding(
            "error", "binding.physnet-unmapped", None,
            f"{net.network_type} network {snap.name(net.id)} uses physical network {net.physical_network}, which "
            f"no alive agent maps (reported bridge_mappings: {reported})",
            "every port on it ends binding:vif_type binding_failed; VMs fail to boot",
            f"set `bridge_mappings = {net.physical_network}:br-phy` in [ovs] of the compute hosts' agent (the "
            f"bridge that carries {net.physical_network}; provnet.conf for `provnet agent`, then restart it); failed "
            "ports bind again by themselves when the agent reports")


def check_failed_ports(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.snapshot:
        return
    for port in inputs.snapshot.ports:
        if port.binding_vif_type != "binding_failed":
            continue
        net = inputs.snapshot.network(port.network_id)
        reason = port.binding_failure_reason or ""
        fix = failure_fix(reason, net.physical_network if net else None) or (
            f"read the reason, fix it on host {port.binding_host_id}, then `provnet port-update {port.id}` to "
            "bind again")
        yield Finding(
            "error", "binding.port-failed", None,
            f"port {port.name or port.id} ({port.id}) on host {port.binding_host_id} failed to bind: "
            f"{reason or 'no reason recorded'}",
            "the VM using it does not boot (Nova: \"Binding failed for port\")",
            f"{fix}; the port binds again by itself when the host's agent reports, or on any update of the port")


CHECKS = (check_down_time, check_dead_agents, check_config_mappings, check_provnet_mappings, check_registry_mappings,
          check_failed_ports)
