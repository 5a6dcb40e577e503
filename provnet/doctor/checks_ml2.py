# Checks on ML2's options against the networks in use: type drivers, tenant types, mechanisms, physnets, VLANs.
from __future__ import annotations

from collections.abc import Iterator

from provnet.doctor.findings import Finding
from provnet.doctor.inputs import Inputs

ML2 = "ml2_conf.ini"
DEFAULT_TYPE_DRIVERS = "local,flat,vlan,gre,vxlan,geneve"
TUNNEL_RANGES = {"gre": ("ml2_type_gre", "tunnel_id_ranges"), "vxlan": ("ml2_type_vxlan", "vni_ranges"),
                 "geneve": ("ml2_type_geneve", "vni_ranges")}


def parse_vlan_ranges(items: list[str]) -> dict[str, list[tuple[int, int]]] | str:
    """`physnet[:min:max]` entries -> {physnet: [(min, max)]} (a bare name allows no tenant range)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) == 1:
            out.setdefault(parts[0], [])
        elif len(parts) == 3:
            try:
                low, high = int(parts[1]), int(parts[2])
            except ValueError:
                return f"{item!r}: VLAN ids must be numbers"
            if not 1 <= low <= high <= 4094:
                return f"{item!r}: a range is min:max within 1..4094"
            out.setdefault(parts[0], []).append((low, high))
        else:
            return f"{item!r} is neither physnet nor physnet:min:max"
    return out


def _networks(inputs: Inputs):
    return inputs.snapshot.networks if inputs.snapshot else []


def check_type_drivers(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.has(ML2):
        return
    drivers = inputs.list_value(ML2, "ml2", "type_drivers", DEFAULT_TYPE_DRIVERS)
    for net in _networks(inputs):
        if net.network_type and net.network_type not in drivers:
            yield Finding(
                "error", "ml2.type-drivers", inputs.where(ML2, "ml2", "type_drivers"),
                f"network {net.name or net.id} is of type {net.network_type}, not in type_drivers "
                f"{','.join(drivers)}", "neutron-server cannot load the network's segment: its ports never bind",
                f"add {net.network_type} to [ml2] type_drivers in ml2_conf.ini")
    for tenant in inputs.list_value(ML2, "ml2", "tenant_network_types", "local"):
        if tenant not in drivers:
            yield Finding(
                "error", "ml2.tenant-network-types", inputs.where(ML2, "ml2", "tenant_network_types"),
                f"tenant network type {tenant} has no type driver (type_drivers = {','.join(drivers)})",
                "neutron-server exits at start: \"No type driver for tenant network_type\"",
                f"add {tenant} to [ml2] type_drivers or remove it from tenant_network_types")


def check_tenant_types(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.has(ML2):
        return
    tenant = inputs.list_value(ML2, "ml2", "tenant_network_types", "local")
    ranges = parse_vlan_ranges(inputs.list_value(ML2, "ml2_type_vlan", "network_vlan_ranges", ""))
    dead: list[str] = []
    for kind in tenant:
        if kind == "flat":
            dead.append("flat (a flat network is one per physical network: never allocated to a project)")
        elif kind == "vlan" and not (isinstance(ranges, dict) and any(ranges.values())):
            dead.append("vlan (no physnet:min:max in [ml2_type_vlan] network_vlan_ranges)")
        elif kind in TUNNEL_RANGES and not inputs.value(ML2, *TUNNEL_RANGES[kind], ""):
            section, key = TUNNEL_RANGES[kind]
            dead.append(f"{kind} (no [{section}] {key})")
    if not dead:
        return
    usable = len(dead) < len(tenant)
    entry = inputs.entry(ML2, "ml2", "tenant_network_types")
    others = [e.where for e in inputs.entries(ML2, "ml2", "tenant_network_types")[:-1]]
    also = f" (also set at {', '.join(map(str, others))})" if others else ""
    yield Finding(
        "warning" if usable else "error", "ml2.tenant-network-types",
        entry.where if entry else inputs.where(ML2, "ml2"),
        f"tenant_network_types {','.join(tenant)} lists types that cannot allocate a project network: "
        f"{'; '.join(dead)}{also}",
        "`openstack network create NAME` without provider attributes fails: \"Unable to create the network. "
        "No tenant network is available for allocation.\"" if not usable else
        "those types are skipped when a project network is created",
        "list only allocatable types, e.g. `tenant_network_types = vlan` with `[ml2_type_vlan] "
        "network_vlan_ranges = physnet1:100:199` (or vxlan with [ml2_type_vxlan] vni_ranges and the agents' "
        "[agent] tunnel_types); provider networks need no tenant type")


def check_mechanism_drivers(inputs: Inputs) -> Iterator[Finding]:
    if not inputs.has(ML2):
        return
    mechs = inputs.list_value(ML2, "ml2", "mechanism_drivers", "")
    where = inputs.where(ML2, "ml2", "mechanism_drivers")
    if not mechs:
        yield Finding("error", "ml2.mechanism-drivers", where, "[ml2] mechanism_drivers is empty",
                      "no driver binds ports: every port ends binding_failed",
                      "set `mechanism_drivers = openvswitch` in [ml2] of ml2_conf.ini")
    elif "openvswitch" not in mechs and any(n.network_type in ("flat", "vlan") for n in _networks(inputs)):
        yield Finding("warning", "ml2.mechanism-drivers", where,
                      f"mechanism_drivers {','.join(mechs)} has no openvswitch, the driver the seed's "
                      "bridge_mappings and provnet's binding assume",
                      "ports on flat/vlan networks bind only if another driver's agent handles the physnet",
                      "add openvswitch to [ml2] mechanism_drivers")


def _physnet_checks(inputs: Inputs, flat_allowed: list[str], flat_where, vlan_items: list[str], vlan_where,
                    owner: str) -> Iterator[Finding]:
    ranges = parse_vlan_ranges(vlan_items)
    if isinstance(ranges, str):
        yield Finding("error", "config.bad-value", vlan_where, f"network_vlan_ranges: {ranges}",
                      "the service exits at start", "write physnet or physnet:min:max entries, comma-separated")
        ranges = {}
    for net in _networks(inputs):
        if net.network_type == "flat" and "*" not in flat_allowed and net.physical_network not in flat_allowed:
            yield Finding(
                "error", "ml2.flat-networks", flat_where,
                f"flat network {net.name or net.id} uses physical network {net.physical_network}, not in "
                f"{owner} flat_networks {','.join(flat_allowed) or '(empty: no flat networks)'}",
                "creating such a network fails: \"physical_network '...' unknown for flat provider network\"",
                f"add {net.physical_network} to [ml2_type_flat] flat_networks (or use *)")
        if net.network_type == "vlan" and vlan_items and net.physical_network not in ranges:
            yield Finding(
                "error", "ml2.vlan-ranges", vlan_where,
                f"vlan network {net.name or net.id} uses physical network {net.physical_network}, not in "
                f"{owner} network_vlan_ranges {','.join(vlan_items)}",
                "creating such a network fails: \"physical_network '...' unknown for VLAN provider network\"",
                f"add {net.physical_network} (or {net.physical_network}:min:max) to [ml2_type_vlan] "
                f"network_vlan_ranges")
        if net.network_type == "vlan" and not vlan_items and owner == "ml2_conf.ini":
            yield Finding(
                "error", "ml2.vlan-ranges", vlan_where,
                f"vlan network {net.name or net.id} uses physical network {net.physical_network}, but "
                "network_vlan_ranges is empty", "creating VLAN networks fails: physical network unknown",
                f"set `network_vlan_ranges = {net.physical_network}` in [ml2_type_vlan]")


def check_physnets(inputs: Inputs) -> Iterator[Finding]:
    if inputs.has(ML2):
        yield from _physnet_checks(
            inputs, inputs.list_value(ML2, "ml2_type_flat", "flat_networks", "*"),
            inputs.where(ML2, "ml2_type_flat", "flat_networks"),
            inputs.list_value(ML2, "ml2_type_vlan", "network_vlan_ranges", ""),
            inputs.where(ML2, "ml2_type_vlan", "network_vlan_ranges"), "ml2_conf.ini")
    if inputs.provnet:
        yield from _physnet_checks(
            inputs, list(inputs.provnet.get("ml2_type_flat.flat_networks")),
            inputs.provnet_where("ml2_type_flat.flat_networks"),
            list(inputs.provnet.get("ml2_type_vlan.network_vlan_ranges")),
            inputs.provnet_where("ml2_type_vlan.network_vlan_ranges"), "provnet's")


CHECKS = (check_type_drivers, check_tenant_types, check_mechanism_drivers, check_physnets)
