# Check that per-port ingress rules let the external DHCP server's replies reach the VMs.
from __future__ import annotations

from collections.abc import Iterator

from provnet.doctor.findings import Finding
from provnet.doctor.ini import Location
from provnet.doctor.inputs import Inputs
from provnet.doctor.iptables import evaluate, ingress_chains

BROADCAST = "255.255.255.255"


def _destinations(inputs: Inputs, suffix: str) -> list[str]:
    """Addresses a DHCP reply to this port may be sent to: broadcast, its fixed IPs, what dnsmasq offers it."""
    dsts = [BROADCAST]
    cfg = inputs.dnsmasq
    snap = inputs.snapshot
    port = next((p for p in snap.ports if p.id.startswith(suffix)), None) if snap else None
    if snap and port is not None:
        dsts += port.ips()
        hosts = [h.ip for h in cfg.hosts if h.ip and port.mac_address.lower() in h.macs]
        dsts += hosts
        if not hosts:  # a dynamic range on the port's subnet offers it some address of the range
            nets = [s.network for s in snap.subnets if s.network_id == port.network_id]
            dsts += [str(r.start) for r in cfg.ranges if r.dynamic and any(r.start in n for n in nets)]
    else:
        dsts += [h.ip for h in cfg.hosts if h.ip] + [str(r.start) for r in cfg.ranges if r.dynamic]
    return list(dict.fromkeys(dsts))


def check_dhcp_replies(inputs: Inputs) -> Iterator[Finding]:
    tables = inputs.iptables
    if tables is None:
        return
    server = inputs.dhcp_server_ip
    if not server:
        yield Finding("info", "firewall.dhcp-reply-dropped", Location(tables.path),
                      "iptables rules were given without the DHCP server's address", "nothing was checked",
                      "pass `--dhcp-server IP` (the external DHCP server's address on the VMs' segment)")
        return
    for chain, suffix in sorted(ingress_chains(tables).items()):
        for dst in _destinations(inputs, suffix):
            verdict = evaluate(tables, chain, server, dst)
            if verdict is None or verdict.allowed:
                continue
            rule = verdict.rule
            yield Finding(
                "error", "firewall.dhcp-reply-dropped", rule.where if rule else None,
                f"chain {chain} drops a DHCP reply from {server}:67 to {dst}:68 (rule: {rule.text if rule else '?'})",
                "the VM never gets its lease (udhcpc: \"Sending discover...\" forever) and boots without an "
                "address or metadata",
                f"accept replies before that rule: `iptables -I {chain} -s {server}/32 -p udp -m udp --sport 67 "
                f"--dport 68 -j RETURN` (or let the port's rules accept replies to its fixed IP and to "
                "255.255.255.255)")
            break


CHECKS = (check_dhcp_replies,)
