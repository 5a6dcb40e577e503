# Run every doctor check over the gathered inputs; collect the inputs from paths, config and a registry.
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from provnet.config import Config
from provnet.doctor import checks_agents, checks_config, checks_dhcp, checks_firewall, checks_metadata, checks_ml2
from provnet.doctor import dnsmasq as dm
from provnet.doctor.commands import read_commands
from provnet.doctor.findings import Finding, sort_key
from provnet.doctor.ini import Location, read_ini
from provnet.doctor.inputs import (
    CONFIG_FILES,
    PROVNET_ENV_LABEL,
    Inputs,
    Snapshot,
    Source,
    load_config_dir,
    provnet_is_configured,
)
from provnet.doctor.iptables import read_iptables_save
from provnet.doctor.localconf import LOCALRC_OPTIONS, POST_CONFIG_TARGETS, read_local_conf
from provnet.model.metadata_mode import DEFAULT_MODE, network_mode_applies

ALL_CHECKS = (*checks_config.CHECKS, *checks_agents.CHECKS, *checks_ml2.CHECKS, *checks_metadata.CHECKS,
              *checks_dhcp.CHECKS, *checks_firewall.CHECKS)
# reading a file is not checking it: parse errors are findings, but they do not count as a check run on it
NOT_COUNTED = (checks_config.check_parse,)


def check_name(check) -> str:
    """`checks_dhcp.check_routes` -> "dhcp.routes"."""
    return f"{check.__module__.rsplit('.', 1)[-1].removeprefix('checks_')}.{check.__name__.removeprefix('check_')}"


def run_checks(inputs: Inputs) -> list[Finding]:
    """Every check's findings, then one for each input no check ran on (it is named, with why)."""
    findings: list[Finding] = []
    for check in ALL_CHECKS:
        inputs.current_check = "" if check in NOT_COUNTED else check_name(check)
        try:
            findings.extend(check(inputs))
        finally:
            inputs.current_check = ""
    _credit_references(inputs)
    findings.extend(unchecked(inputs))
    return sorted(findings, key=sort_key)


def _credit_references(inputs: Inputs) -> None:
    """A command line that only names its files (`--conf-file=...`) was checked through them."""
    changed = True
    while changed:
        changed = False
        for source in inputs.sources.values():
            for name in source.names:
                prefix = name.rstrip("/") + "/"
                for other in inputs.sources.values():
                    if other is not source and (other.label == name or other.label.startswith(prefix)) \
                            and not other.checks <= source.checks:
                        source.checks |= other.checks
                        changed = True


def _why_unchecked(inputs: Inputs, source: Source) -> str:
    if source.kind.startswith("dnsmasq") and inputs.snapshot is None:
        return (f"it holds {source.held or 'no DHCP setting'}; dhcp-host entries and ranges are compared with the "
                "ports and subnets, which come from the registry (drop --no-registry, or give --url/--db), or from "
                "the commands that created the network (--commands FILE)")
    if source.kind == "network commands" and inputs.snapshot is not None and inputs.snapshot.source != source.label:
        return "the live registry was read instead; the commands are used only with --no-registry"
    return f"no check applies to what it holds ({source.held or 'nothing'}) with the other inputs given"


def unchecked(inputs: Inputs) -> list[Finding]:
    """A finding per input that no check ran on: never pass in silence over something that was not read."""
    out = []
    for source in inputs.sources.values():
        if source.checks or source.failed:
            continue
        if source.unread:
            out.append(Finding(
                "warning", "input.not-understood", Location(source.label),
                f"{source.title}: {source.unread}", "nothing in it was checked",
                "give the input in a form doctor reads (see `provnet doctor --help`)"))
        else:
            out.append(Finding(
                "info", "input.not-checked", Location(source.label),
                f"{source.title} was read, but no check ran on it: {_why_unchecked(inputs, source)}",
                "problems in it would go unreported", "give doctor the inputs named above"))
    return out


def _dnsmasq_source(inputs: Inputs, label: str, kind: str, cfg: dm.DnsmasqConfig) -> None:
    held = cfg.summary(label)
    failed = any(where.file == label for where, _ in cfg.problems) and not held
    unread = next((why for where, why in cfg.remarks if where.file == label), "") if not held else ""
    if not held and not unread and not failed:
        unread = "no dhcp-range, dhcp-host or dhcp-option in it"
    names = [path.split(",")[0] if kind_ == "conf-dir" else path
             for kind_, path, where in cfg.referenced if where.file == label]
    inputs.add_source(Source(label, kind, held, unread, failed, names=names))


def gather(*, config_dirs: Sequence[str] = (), local_conf: str | None = None, dnsmasq_files: Sequence[str] = (),
           dnsmasq_cmdlines: Sequence[str] = (), iptables_save: str | None = None, dhcp_server: str | None = None,
           provnet: Config | None = None, snapshot: Snapshot | None = None, registry_label: str = "",
           commands: Sequence[str] = ()) -> Inputs:
    """Read every input named, recording each as a Source; unreadable ones become config.parse findings, not
    exceptions. A `dnsmasq_cmdlines` item is a command line, or `@FILE` for every dnsmasq line in FILE (at its
    line). `registry_label` names a registry that was not read (why), for the list of inputs."""
    inputs = Inputs(snapshot=snapshot, dhcp_server_ip=dhcp_server)
    if snapshot is not None:
        mode = str(provnet.get("metadata.mode")) if provnet is not None else DEFAULT_MODE
        in_network_mode = {s.network_id for s in snapshot.subnets
                           if network_mode_applies(mode, s, snapshot.ports)}
        inputs.add_source(Source(snapshot.source, "live registry",
                                 f"{len(snapshot.networks)} networks ({len(in_network_mode)} in network mode, "
                                 f"[metadata] mode = {mode}), {len(snapshot.ports)} ports, "
                                 f"{len(snapshot.agents)} agents"))
    for directory in config_dirs:
        if not Path(directory).is_dir():
            inputs.problems.append((Location(directory), "config directory not found"))
            inputs.add_source(Source(directory, "config directory", unread="not found", failed=True))
            continue
        found = load_config_dir(directory)
        if not found:
            inputs.add_source(Source(directory, "config directory",
                                     unread=f"none of {', '.join(CONFIG_FILES)} is in it or below it"))
        for kind, ini in found.items():
            inputs.files.setdefault(kind, ini)
            failed = any("cannot read" in why for _, why in ini.problems)
            inputs.add_source(Source(ini.path, kind, f"{len(ini.entries)} options", failed=failed))
    if local_conf:
        conf = inputs.local_conf = read_local_conf(local_conf)
        known = [v for v in conf.variables if v in LOCALRC_OPTIONS]
        held = ", ".join(x for x in (f"{len(known)} variables" if known else "",
                                     f"post-config for {', '.join(conf.post_config)}" if conf.post_config else "") if x)
        unread = "" if held else (
            f"no variable doctor reads ({', '.join(LOCALRC_OPTIONS)}) and no [[post-config|...]] block for "
            f"{', '.join(dict.fromkeys(f'${t}' for t in POST_CONFIG_TARGETS))}")
        failed = any("cannot read" in why for _, why in conf.problems)
        inputs.add_source(Source(conf.path, "devstack local.conf", held, unread, failed))
    for path in dnsmasq_files:
        cfg = dm.read_file(path)
        inputs.dnsmasq.extend(cfg)
        kind = ("dnsmasq hosts file" if cfg.hosts and not cfg.options and not cfg.ranges else
                "dnsmasq conf file" if cfg.ranges or cfg.referenced else "dnsmasq options file")
        _dnsmasq_source(inputs, str(path), kind, cfg)
    for number, cmdline in enumerate(dnsmasq_cmdlines, start=1):
        if cmdline.startswith("@"):
            cfg = dm.read_cmdline_file(cmdline[1:])
            label = cmdline[1:]
        else:
            label = f"dnsmasq command line {number}"
            cfg = dm.parse_cmdline(cmdline, Location(label))
        inputs.dnsmasq.extend(cfg)
        _dnsmasq_source(inputs, label, "dnsmasq command line", cfg)
    named = dm.resolve_references(inputs.dnsmasq, dnsmasq_files)
    inputs.dnsmasq.extend(named)
    for label in dict.fromkeys(named.sources):
        _dnsmasq_source(inputs, label, "dnsmasq file named by the command line", named)
    if iptables_save:
        tables = inputs.iptables = read_iptables_save(iptables_save)
        failed = any("cannot read" in why for _, why in tables.problems)
        inputs.add_source(Source(tables.path, "iptables-save output", f"{len(tables.rules)} chains",
                                 "" if tables.rules or failed else "no chain in it", failed))
    if provnet is not None and provnet_is_configured(provnet):
        inputs.provnet = provnet
        files = {s.source for _, s in provnet.items() if Path(s.source).is_file()}
        inputs.provnet_files = [read_ini(f) for f in sorted(files)]
        for ini in inputs.provnet_files:
            inputs.add_source(Source(ini.path, "provnet configuration", f"{len(ini.entries)} options"))
        if any(s.source.startswith("env ") for _, s in provnet.items()):
            inputs.add_source(Source(PROVNET_ENV_LABEL, "provnet configuration", "PROVNET_* variables"))
    for path in commands:
        declared = read_commands(path)
        inputs.problems.extend(declared.problems)
        failed = any("cannot read" in why for _, why in declared.problems)
        unread = "" if declared.applied or failed else (
            "no command in it creates a network, subnet or router interface (neutron net-create/subnet-create/"
            "router-interface-add, openstack network/subnet create, router add subnet, or provnet's verbs)")
        inputs.add_source(Source(str(path), "network commands", declared.summary(), unread, failed))
        if inputs.snapshot is None and declared.applied:
            nets = list({n.id: n for n in declared.networks.values()}.values())
            subs = list({s.id: s for s in declared.subnets.values()}.values())
            inputs.snapshot = Snapshot(nets, subs, declared.ports, list(declared.routers.values()), [],
                                       source=str(path), live=False)
    if registry_label:
        inputs.add_source(Source("registry", "live registry", unread=registry_label, failed=True))
    return inputs
