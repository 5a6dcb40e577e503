# Checks on who serves metadata: the dhcp-agent and l3-agent recipes, isolation, notifications, the shared secret.
from __future__ import annotations

from collections.abc import Iterator

from provnet.doctor.findings import Finding
from provnet.doctor.ini import Location
from provnet.doctor.inputs import DHCP_AGENT_TYPE, Inputs
from provnet.model.metadata_mode import network_mode_applies
from provnet.model.resources import Network

DHCP, L3, META, NOVA, NEUTRON = "dhcp_agent.ini", "l3_agent.ini", "metadata_agent.ini", "nova.conf", "neutron.conf"


def _isolated(inputs: Inputs, net: Network) -> bool:
    """Neutron's rule: a subnet is isolated unless a router port holds its gateway IP."""
    snap = inputs.snapshot
    assert snap is not None
    subnets = snap.subnets_of(net.id)
    return any(s.gateway_ip not in snap.router_ips(s) for s in subnets) or not subnets


def _has_router(inputs: Inputs, net: Network) -> bool:
    snap = inputs.snapshot
    assert snap is not None
    return any(p.is_router_interface and p.network_id == net.id for p in snap.ports)


def _neutron_agents(inputs: Inputs) -> bool:
    """Neutron's own DHCP or L3 agent is configured here: its metadata recipes serve the networks, not provnet's
    network mode."""
    return inputs.has(DHCP) or inputs.has(L3)


def check_modes(inputs: Inputs) -> Iterator[Finding]:
    isolated = inputs.flag(DHCP, "DEFAULT", "enable_isolated_metadata", False)
    metadata_network = inputs.flag(DHCP, "DEFAULT", "enable_metadata_network", False)
    if inputs.has(DHCP) and metadata_network and not isolated:
        yield Finding(
            "error", "metadata.modes", inputs.where(DHCP, "DEFAULT", "enable_metadata_network"),
            "enable_metadata_network = True has no effect while enable_isolated_metadata is False",
            "the dhcp-agent recipe serves no metadata: cloud-init times out on 169.254.169.254",
            "set `enable_isolated_metadata = True` in dhcp_agent.ini (the dhcp-agent recipe), or turn "
            "enable_metadata_network off and use the l3-agent recipe")
    if inputs.has(DHCP) and inputs.has(L3) and metadata_network \
            and inputs.flag(L3, "DEFAULT", "enable_metadata_proxy", True):
        yield Finding(
            "warning", "metadata.modes", inputs.where(DHCP, "DEFAULT", "enable_metadata_network"),
            "both recipes are on: dhcp_agent.ini enable_metadata_network = True and l3_agent.ini "
            f"enable_metadata_proxy = True ({inputs.where(L3, 'DEFAULT', 'enable_metadata_proxy')})",
            "two proxies answer for routed networks; which one a VM reaches depends on its routes",
            "pick one: dhcp-agent (`enable_metadata_network = True`, `enable_metadata_proxy = False`) or l3-agent "
            "(`enable_metadata_network = False`, `enable_metadata_proxy = True`)")


def check_isolated_with_router(inputs: Inputs) -> Iterator[Finding]:
    if not (inputs.snapshot and inputs.has(DHCP)):
        return
    if not inputs.flag(DHCP, "DEFAULT", "enable_isolated_metadata", False) \
            or inputs.flag(DHCP, "DEFAULT", "force_metadata", False):
        return
    snap = inputs.snapshot
    for net in snap.networks:
        held = [s for s in snap.subnets_of(net.id) if s.gateway_ip and s.gateway_ip in snap.router_ips(s)]
        if held:
            s = held[0]
            yield Finding(
                "warning", "metadata.isolated-with-router", inputs.where(DHCP, "DEFAULT", "enable_isolated_metadata"),
                f"enable_isolated_metadata = True, but network {snap.name(net.id)} is not isolated: a router port "
                f"holds its subnet {s.cidr} gateway {s.gateway_ip}", "the dhcp agent serves no metadata there; "
                "only the router's proxy can", "rely on the l3-agent (`enable_metadata_proxy = True`) for this "
                "network, or set `force_metadata = True` in dhcp_agent.ini if the dhcp agent must serve it")


def check_no_server(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.snapshot:
        return
    snap = inputs.snapshot
    proxy = inputs.flag(L3, "DEFAULT", "enable_metadata_proxy", True)
    isolated_md = inputs.flag(DHCP, "DEFAULT", "enable_isolated_metadata", False)
    force = inputs.flag(DHCP, "DEFAULT", "force_metadata", False)
    for net in snap.networks:
        if not snap.vm_ports() or not any(p.network_id == net.id for p in snap.vm_ports()):
            continue
        dhcp_on = any(s.enable_dhcp for s in snap.subnets_of(net.id))
        v4 = [x for x in snap.subnets_of(net.id) if x.ip_version == 4]
        hops = snap.metadata_hops(inputs.metadata_mode)
        if v4 and all(x.id in hops for x in v4):
            continue  # network mode: the L3 agents' provnet-meta- namespaces serve it (metadata.network-mode)
        if snap.provnet and not _neutron_agents(inputs) and any(
                network_mode_applies(inputs.metadata_mode, x, snap.ports) for x in v4):
            continue  # provnet's network mode without its port: metadata.port-missing says what to do
        by_router = _has_router(inputs, net) and proxy
        by_dhcp = inputs.has(DHCP) and dhcp_on and (force or (isolated_md and _isolated(inputs, net)))
        if by_router or by_dhcp:
            continue
        reasons = []
        if _has_router(inputs, net):
            reasons.append(f"l3_agent.ini enable_metadata_proxy = False ({inputs.where(L3, 'DEFAULT', 'enable_metadata_proxy')})")  # noqa: E501
        else:
            reasons.append("no router interface on it (the l3-agent recipe and provnet's proxy serve routers)")
        if inputs.has(DHCP):
            if not dhcp_on:
                reasons.append("its subnets have enable_dhcp = False, so no dhcp agent hosts it")
            elif not (isolated_md or force):
                reasons.append("enable_isolated_metadata = False")
            else:
                reasons.append("it is not isolated (a router port holds the gateway)")
        where: Location | None = inputs.where(L3, "DEFAULT", "enable_metadata_proxy") if _has_router(inputs, net) \
            and inputs.has(L3) else None
        # provnet alone: a network-mode proxy (`provnet metadata-proxy --network-id`) may serve it unseen
        provnet_only = not (inputs.has(L3) or inputs.has(DHCP))
        if provnet_only:
            reasons.append("unless a `provnet metadata-proxy --network-id` runs for it")
        yield Finding(
            "warning" if provnet_only else "error", "metadata.no-server", where,
            f"no one serves metadata on network {snap.name(net.id)}: {'; '.join(reasons)}",
            "cloud-init waits on http://169.254.169.254 and boots without SSH keys or user data",
            "add a router interface on the subnet's gateway IP and keep `enable_metadata_proxy = True` "
            "(`openstack router add subnet ROUTER SUBNET`; provnet runs the proxy in its qrouter namespace)")


def check_network_mode(inputs: Inputs) -> Iterator[Finding]:
    """provnet's [metadata] mode per subnet: what it is (info), and a network-mode subnet whose network has no
    metadata port with an address on it (error: nothing answers its VMs' route)."""
    snap = inputs.snapshot
    if not (snap and snap.live and snap.provnet) or _neutron_agents(inputs):
        return  # commands declare no ports; a cloud's Neutron makes none; Neutron's agents' recipes are judged above
    mode = inputs.metadata_mode
    where = inputs.provnet_where("metadata.mode") if inputs.provnet is not None else None
    hops = snap.metadata_hops(mode)
    for net in snap.networks:
        subnets = snap.subnets_of(net.id)
        if not subnets:
            continue
        port = snap.metadata_port(net.id)
        parts = []
        if not any(network_mode_applies(mode, x, snap.ports) for x in subnets):
            continue  # router mode throughout: the seed's case, nothing to say
        for subnet in subnets:
            label = f"{subnet.name or subnet.id} ({subnet.cidr})"
            if not network_mode_applies(mode, subnet, snap.ports):
                held = sorted(snap.router_ips(subnet))
                parts.append(f"{label}: router mode (a router interface holds the gateway {subnet.gateway_ip})"
                             if held else f"{label}: router mode")
                continue
            if subnet.ip_version != 4:
                parts.append(f"{label}: network mode (fe80::a9fe:a9fe on the metadata port's device)")
                continue
            if subnet.id in hops:
                parts.append(f"{label}: network mode, 169.254.169.254/32 via the metadata port {hops[subnet.id]}")
                continue
            parts.append(f"{label}: network mode, NO metadata port address")
            missing = "has no metadata port" if port is None else \
                f"has a metadata port ({port.id}) without an address on this subnet"
            yield Finding(
                "error", "metadata.port-missing", where,
                f"subnet {label} of network {snap.name(net.id)} is in network mode ([metadata] mode = {mode}), "
                f"but the network {missing}",
                "its VMs get no route to a metadata server on their network: cloud-init times out on "
                "169.254.169.254",
                f"make the registry run with [metadata] mode = {mode} (the networking API's configuration) and "
                f"update the subnet (`provnet subnet-update {subnet.name or subnet.id} --description "
                "\"...\"`: any update makes it add the port), or add a router interface on its gateway")
        yield Finding(
            "info", "metadata.network-mode", where,
            f"network {snap.name(net.id)}, [metadata] mode = {mode}: " + "; ".join(parts),
            "where its VMs send 169.254.169.254", "nothing to fix")


def check_dhcp_notification(inputs: Inputs) -> Iterator[Finding]:
    if not (inputs.snapshot and inputs.snapshot.live and inputs.has(NEUTRON)):  # agents come only from a registry
        return
    if not inputs.flag(NEUTRON, "DEFAULT", "dhcp_agent_notification", True):
        return
    if any(a.agent_type == DHCP_AGENT_TYPE for a in inputs.snapshot.agents):
        return
    yield Finding(
        "warning", "metadata.dhcp-notification", inputs.where(NEUTRON, "DEFAULT", "dhcp_agent_notification"),
        "dhcp_agent_notification is on (the default) but no DHCP agent is registered",
        "every network, subnet and port change is cast to a dhcp_agent topic nobody consumes; messages pile up "
        "in the message queue", "set `dhcp_agent_notification = False` in [DEFAULT] of neutron.conf (the seed's "
        "l3-agent recipe with an external DHCP server)")


def _secrets(inputs: Inputs) -> list[tuple[str, str, Location]]:
    """(who, value, where) for every configured party that signs or checks the instance-id signature."""
    out = []
    if inputs.has(META):
        e = inputs.entry(META, "DEFAULT", "metadata_proxy_shared_secret")
        out.append(("neutron-metadata-agent (signs)", e.value if e else "",
                    e.where if e else inputs.where(META)))
    if inputs.has(NOVA) and inputs.flag(NOVA, "neutron", "service_metadata_proxy", False):
        e = inputs.entry(NOVA, "neutron", "metadata_proxy_shared_secret")
        out.append(("nova metadata API (checks)", e.value if e else "",
                    e.where if e else inputs.where(NOVA, "neutron")))
    if inputs.provnet:
        out.append(("provnet metadata agent and API", str(inputs.provnet.metadata_proxy_shared_secret),
                    inputs.provnet_where("metadata_proxy_shared_secret")))
    return out


def check_secret(inputs: Inputs) -> Iterator[Finding]:
    parties = _secrets(inputs)
    for who, value, where in parties:
        if not value:
            yield Finding(
                "error", "metadata.secret-empty", where,
                f"metadata_proxy_shared_secret is empty for the {who}",
                "the instance-id signature uses an empty key: anyone who can reach the metadata API can read any "
                "instance's metadata (user data, keys, passwords) by forging X-Instance-ID",
                "set the same long random metadata_proxy_shared_secret in metadata_agent.ini [DEFAULT], nova.conf "
                "[neutron] and provnet's [DEFAULT] (e.g. `openssl rand -hex 32`)")
    values = {value for _, value, _ in parties if value}
    if len(values) > 1:
        first_who, first_value, first_where = next(p for p in parties if p[1])
        for who, value, where in parties:
            if value and value != first_value:
                yield Finding(
                    "error", "metadata.secret-mismatch", where,
                    f"metadata_proxy_shared_secret of the {who} differs from the {first_who}'s ({first_where})",
                    "every metadata request gets 403 \"Invalid proxy request signature\"; cloud-init gets no "
                    "metadata", "copy one value to every metadata_proxy_shared_secret and restart the metadata "
                    "agent and API")


CHECKS = (check_modes, check_isolated_with_router, check_no_server, check_network_mode, check_dhcp_notification,
          check_secret)
