# Per-port rules as Neutron's iptables firewall (pure), applied where VM ports meet the bridge (physdev).
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from provnet.dataplane.iptables import Chain, Jump, Ruleset

PREFIX = "provnet-fw-"
SG_CHAIN = f"{PREFIX}sg-chain"
FALLBACK = f"{PREFIX}sg-fallback"


@dataclass(frozen=True)
class PortFilter:
    """One VM port as the firewall sees it.

    `device` is the bridge-side interface of the port (where physdev matches it); `remote_ips` are the
    addresses allowed to open connections to it (the members of its default security group). With
    `port_security` off the port gets no chains, only an accept rule.
    """

    device: str
    mac: str
    ips: tuple[str, ...]
    remote_ips: tuple[str, ...] = field(default=())
    port_security: bool = True

    def __post_init__(self) -> None:
        if len(self.device) < 4:
            raise ValueError(f"device name {self.device!r} is too short to name a chain")
        for ip in (*self.ips, *self.remote_ips):
            ipaddress.IPv4Address(ip)  # raises ValueError on a bad address


def device_chain_suffix(device: str) -> str:
    """Neutron's rule: the device name without its 3-character prefix, cut to 10 characters."""
    return device[3:13]


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def _physdev(direction: str, device: str) -> str:
    return f"-m physdev --physdev-{direction} {device} --physdev-is-bridged"


def port_chains(port: PortFilter) -> list[Chain]:
    """The ingress (i), egress (o) and anti-spoofing (s) chains of one port, in Neutron's rule order."""
    sfx = device_chain_suffix(port.device)
    i, o, s = f"{PREFIX}i{sfx}", f"{PREFIX}o{sfx}", f"{PREFIX}s{sfx}"
    dhcp_reply = "-p udp -m udp --sport 67 --dport 68"
    ingress = [
        *(f"-d {ip}/32 {dhcp_reply} -j RETURN" for ip in port.ips),
        f"-d 255.255.255.255/32 {dhcp_reply} -j RETURN",
        "-m state --state RELATED,ESTABLISHED -j RETURN",
        *(f"-s {ip}/32 -j RETURN" for ip in port.remote_ips if ip not in port.ips),
        "-m state --state INVALID -j DROP",
        f"-j {FALLBACK}",
    ]
    egress = [
        f"-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 "
        f"{_comment('Allow DHCP client traffic.')} -j RETURN",
        f"-j {s}",
        "-p udp -m udp --sport 68 --dport 67 -j RETURN",
        f"-p udp -m udp --sport 67 --dport 68 {_comment('Prevent DHCP Spoofing by VM.')} -j DROP",
        "-m state --state RELATED,ESTABLISHED -j RETURN",
        "-j RETURN",  # the default security group: all egress
        "-m state --state INVALID -j DROP",
        f"-j {FALLBACK}",
    ]
    spoof = [
        *(f"-s {ip}/32 -m mac --mac-source {port.mac.upper()} -j RETURN" for ip in port.ips),
        f"{_comment('Drop traffic without an IP/MAC allow rule.')} -j DROP",
    ]
    return [Chain("filter", i, tuple(ingress)), Chain("filter", o, tuple(egress)), Chain("filter", s, tuple(spoof))]


def firewall_ruleset(ports: Sequence[PortFilter], blocked: Sequence[str] = ()) -> Ruleset:
    """The whole bridge's rule set for `ports` (a full sync: ports not listed lose their chains on apply).

    `blocked` devices are on the bridge but wired to no port here (no port yet, bound elsewhere, disabled):
    everything to and from them is dropped, as Neutron's agent parks such a device on its dead VLAN.
    """
    devices = [p.device for p in ports]
    if set(devices) & set(blocked):
        raise ValueError("a device is both filtered and blocked")
    if len(set(devices)) != len(devices):
        raise ValueError("a device is listed twice")
    suffixes = [device_chain_suffix(d) for d in devices]
    if len(set(suffixes)) != len(suffixes):
        raise ValueError("two devices share the first 10 characters after their prefix")
    forward: list[str] = []
    inbound: list[str] = []
    sg: list[str] = []
    chains: list[Chain] = []
    for device in sorted(set(blocked)):
        forward.append(f"{_physdev('out', device)} {_comment('No port is wired to this device here.')} -j DROP")
        forward.append(f"{_physdev('in', device)} -j DROP")
        inbound.append(f"{_physdev('in', device)} -j DROP")
    for port in ports:
        if not port.port_security:
            forward.append(f"{_physdev('out', port.device)} "
                           f"{_comment('Accept all packets when port security is disabled.')} -j ACCEPT")
            forward.append(f"{_physdev('in', port.device)} -j ACCEPT")
            continue
        sfx = device_chain_suffix(port.device)
        forward.append(f"{_physdev('out', port.device)} -j {SG_CHAIN}")
        forward.append(f"{_physdev('in', port.device)} -j {SG_CHAIN}")
        inbound.append(f"{_physdev('in', port.device)} -j {PREFIX}o{sfx}")
        sg.append(f"{_physdev('out', port.device)} -j {PREFIX}i{sfx}")
        sg.append(f"{_physdev('in', port.device)} -j {PREFIX}o{sfx}")
        chains.extend(port_chains(port))
    sg.append("-j ACCEPT")
    base = [
        Chain("filter", f"{PREFIX}FORWARD", tuple(forward)),
        Chain("filter", f"{PREFIX}INPUT", tuple(inbound)),
        Chain("filter", SG_CHAIN, tuple(sg)),
        Chain("filter", FALLBACK, (f"{_comment('Default drop rule for unmatched traffic.')} -j DROP",)),
    ]
    jumps = (Jump("filter", "FORWARD", f"{PREFIX}FORWARD"), Jump("filter", "INPUT", f"{PREFIX}INPUT"))
    return Ruleset(PREFIX, tuple(base + chains), jumps)
