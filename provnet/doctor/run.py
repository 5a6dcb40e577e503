# Run every doctor check over the gathered inputs; collect the inputs from paths, config and a registry.
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from provnet.config import Config
from provnet.doctor import checks_agents, checks_config, checks_dhcp, checks_firewall, checks_metadata, checks_ml2
from provnet.doctor import dnsmasq as dm
from provnet.doctor.findings import Finding, sort_key
from provnet.doctor.ini import Location, read_ini
from provnet.doctor.inputs import Inputs, Snapshot, load_config_dir, provnet_is_configured
from provnet.doctor.iptables import read_iptables_save
from provnet.doctor.localconf import read_local_conf

ALL_CHECKS = (*checks_config.CHECKS, *checks_agents.CHECKS, *checks_ml2.CHECKS, *checks_metadata.CHECKS,
              *checks_dhcp.CHECKS, *checks_firewall.CHECKS)


def run_checks(inputs: Inputs) -> list[Finding]:
    findings: list[Finding] = []
    for check in ALL_CHECKS:
        findings.extend(check(inputs))
    return sorted(findings, key=sort_key)


def gather(*, config_dir: str | None = None, local_conf: str | None = None, dnsmasq_files: Sequence[str] = (),
           dnsmasq_cmdlines: Sequence[str] = (), iptables_save: str | None = None, dhcp_server: str | None = None,
           provnet: Config | None = None, snapshot: Snapshot | None = None) -> Inputs:
    """Read every input named; unreadable ones become config.parse findings, not exceptions.

    A `dnsmasq_cmdlines` item is a command line, or `@FILE` for every dnsmasq line in FILE (at its line).
    """
    inputs = Inputs(snapshot=snapshot, iptables=read_iptables_save(iptables_save) if iptables_save else None,
                    dhcp_server_ip=dhcp_server)
    if config_dir:
        if not Path(config_dir).is_dir():
            inputs.problems.append((Location(config_dir), "config directory not found"))
        inputs.files = load_config_dir(config_dir)
    if local_conf:
        inputs.local_conf = read_local_conf(local_conf)
    for path in dnsmasq_files:
        inputs.dnsmasq.extend(dm.read_file(path))
    for number, cmdline in enumerate(dnsmasq_cmdlines, start=1):
        if cmdline.startswith("@"):
            inputs.dnsmasq.extend(dm.read_cmdline_file(cmdline[1:]))
        else:
            inputs.dnsmasq.extend(dm.parse_cmdline(cmdline, Location(f"dnsmasq command line {number}")))
    inputs.dnsmasq.extend(dm.resolve_references(inputs.dnsmasq, dnsmasq_files))
    if provnet is not None and provnet_is_configured(provnet):
        inputs.provnet = provnet
        files = {s.source for _, s in provnet.items() if Path(s.source).is_file()}
        inputs.provnet_files = [read_ini(f) for f in sorted(files)]
    return inputs
