# The attribution chain the metadata agent walks (router -> networks -> the port with the address -> device_id,
# and the MAC when known), one step at a time, so `metadata-explain` and the agent's 404 come from the same code.
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from provnet.model.resources import Port
from provnet.registry.base import Registry

RESULTS = ("no_interface", "not_found", "ambiguous", "unbound", "mac_mismatch", "no_mac")


@dataclass(frozen=True, slots=True)
class Identity:
    """What the agent signs for one (router or network, address): the port's instance and project."""

    instance_id: str
    tenant_id: str
    port_id: str = ""
    mac: str = ""


@dataclass(frozen=True, slots=True)
class Miss:
    """No single instance port answers for the address.

    `reason` is one line a guest may read (in the 404's body): it names only the router or network the request
    came through, the guest's own address and MAC, and counts, never another tenant's ports or MACs. `detail`
    (logged, and printed by metadata-explain) adds the ids an operator needs; `fix` says what to change.
    """

    reason: str
    result: str = "not_found"
    detail: str = ""
    fix: str = ""


Answer = Identity | Miss


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    text: str


@dataclass
class Walk:
    answer: Answer
    networks: list[str]
    steps: list[Step] = field(default_factory=list)


@functools.lru_cache(maxsize=65536)
def is_link_local(address: str) -> bool:
    """An IPv6 link-local source (fe80::/10): it names a VM only together with the segment, so by its MAC."""
    try:
        return ipaddress.ip_address(address.partition("%")[0]).is_link_local and ":" in address
    except ValueError:
        return False


@functools.lru_cache(maxsize=65536)
def mac_from_link_local(address: str) -> str | None:
    """The MAC inside a modified EUI-64 IPv6 link-local address (fe80::f816:3eff:fe12:3456 -> fa:16:3e:12:34:56:
    ff:fe in the middle, the universal/local bit flipped back). None for anything else: not IPv6 link-local, no
    ff:fe (stable-privacy, temporary or hand-made addresses), or a MAC no NIC sends from (multicast, all zeros)."""
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return None
    raw = ip.packed
    if not ip.is_link_local or raw[11:13] != b"\xff\xfe":
        return None
    mac = bytes((raw[8] ^ 0x02,)) + raw[9:11] + raw[13:16]
    if mac[0] & 0x01 or not any(mac):  # a group address (incl. broadcast), or none
        return None
    return ":".join(f"{b:02x}" for b in mac)


def instance_gone(instance_id: str) -> str:
    """The metadata API's 404 line when the port's device_id names no instance."""
    return f"Instance {instance_id} does not exist (the port's device_id names no instance)."


def project_mismatch(instance_id: str, tenant_id: str) -> str:
    """The metadata API's 404 line when the port's project does not own the instance."""
    return (f"Instance {instance_id} does not belong to project {tenant_id} (the port's project differs from the "
            "instance's).")


def not_found_text(kind: str, scope_id: str, reason: str) -> str:
    """The agent's 404 body line (Neutron's words, then why)."""
    return f"Instance was not found on {kind} {scope_id}: {reason}."


def walk(registry: Registry, kind: str, scope_id: str, address: str, networks: list[str] | None = None,
         mac: str | None = None) -> Walk:
    """The registry part of the chain (blocking: run it off the event loop). `networks`: the router's interface
    networks when the caller knows them already. An IPv6 link-local source is found by its MAC: `mac` (what the
    proxy read from its neighbour table) when given, else the one in its EUI-64 address."""
    steps: list[Step] = []
    where = f"on {kind} {scope_id}'s networks" if kind == "router" else f"on network {scope_id}"
    if kind == "router":
        if networks is None:
            networks = registry.router_network_ids(scope_id)
        steps.append(Step("router", bool(networks), f"router {scope_id}: interfaces on networks "
                          + (", ".join(networks) if networks else "(none)")))
    else:
        networks = [scope_id]
        steps.append(Step("network", True, f"network {scope_id}"))
    if not networks:
        miss = Miss(f"{kind} {scope_id} has no interface on any network", "no_interface",
                    f"router {scope_id} has no interface ports (or does not exist)",
                    f"provnet router-interface-add {scope_id} <subnet>")
        return Walk(miss, networks, steps)
    if is_link_local(address):  # fe80::/10 (asking fe80::a9fe:a9fe): the port is found by the VM's MAC
        eui = mac_from_link_local(address)
        if eui and (not mac or mac.lower() == eui):  # (the same words whether or not the proxy read it too)
            by = f"MAC {eui} (in the EUI-64 link-local address {address})"
        elif mac:
            by = f"MAC {mac.lower()} (the link-local address {address}'s, from the neighbour table)"
        else:
            steps.append(Step("mac", False, f"the link-local address {address} holds no MAC and the proxy sent none"))
            miss = Miss(f"the link-local address {address} is not EUI-64 (a stable-privacy or temporary address) and "
                        "the proxy could not read the MAC it came from, so no port can be found for it", "no_mac",
                        "the proxy sends X-Provnet-Source-MAC when its namespace's neighbour table has the source",
                        "ask from an address with a port (its IPv4 or global IPv6 fixed IP), or use an EUI-64 "
                        "link-local address (net.ipv6.conf.<dev>.addr_gen_mode=0); a Neutron haproxy in front "
                        "of the agent never sends the MAC")
            return Walk(miss, networks, steps)
        ports: list[Port] = registry.find_ports_by_mac((mac or eui or "").lower(), networks)
    else:
        ports = registry.find_ports_by_ip(address, networks)
        by = f"address {address}"
    steps.append(Step("ports", len(ports) == 1, f"ports with {by} {where}: "
                      + (", ".join(p.id for p in ports) if ports else "none")))
    if not ports:
        miss = Miss(f"no port has {by} {where}", "not_found",
                    f"searched networks {', '.join(networks)}",
                    "create the VM's port with that fixed IP (provnet port-create <network> --fixed-ip "
                    f"ip_address={address} --device-id <instance>), or make its DHCP server hand out the port's IP")
        return Walk(miss, networks, steps)
    if len(ports) > 1:
        miss = Miss(f"{len(ports)} ports have {by} {where}", "ambiguous",
                    "ports " + ", ".join(f"{p.id} (network {p.network_id})" for p in ports),
                    "remove the duplicate address: the agent cannot tell the VMs apart")
        return Walk(miss, networks, steps)
    port = ports[0]
    steps.append(Step("device_id", bool(port.device_id), f"port {port.id} (MAC {port.mac_address}): device_id "
                      + (port.device_id or "(empty)")))
    if not port.device_id:
        miss = Miss(f"the port with {by} has no device_id", "unbound", f"port {port.id}",
                    f"provnet port-update {port.id} --device-id <instance uuid>")
        return Walk(miss, networks, steps)
    return Walk(Identity(port.device_id, port.project_id, port.id, port.mac_address), networks, steps)


def check_mac(answer: Answer, mac: str | None, address: str) -> Answer:
    """When the request's MAC is known (the proxy read it), the port must have it, and an EUI-64 link-local
    source address must hold it (a guest on a neighbour's link-local address)."""
    if mac is None:
        return answer
    eui = mac_from_link_local(address)
    if eui is not None and eui != mac.lower():  # whether or not the sender's own MAC has a port
        return Miss(f"the link-local address {address} belongs to MAC {eui}, not to {mac.lower()} it came from",
                    "mac_mismatch", "the EUI-64 address names one MAC, the neighbour table another",
                    "the VM uses a neighbour's link-local address: check port security")
    if not isinstance(answer, Identity) or not answer.mac or answer.mac.lower() == mac.lower():
        return answer
    return Miss(f"the port with address {address} does not have MAC {mac.lower()}", "mac_mismatch",
                f"port {answer.port_id or 'with that address'} has MAC {answer.mac}",
                "the VM uses an address that is not its port's (spoofing, or a DHCP server that hands out the "
                "wrong address): check port security and the DHCP reservations")
