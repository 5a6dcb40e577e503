# `provnet doctor`: read an operator's OpenStack/devstack/dnsmasq configuration and the registry, name every trap.
from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from provnet.cli.output import echo_many, output_options
from provnet.doctor.findings import Finding, has_error, render_json, render_table, sort_key
from provnet.doctor.ini import Location
from provnet.doctor.inputs import Snapshot
from provnet.doctor.run import gather, run_checks

EPILOG = """\b
Examples:
  provnet doctor --config-dir /etc/neutron --config-dir /etc/nova
  provnet doctor --config-dir /etc/neutron --local-conf ~/devstack/local.conf
  provnet doctor --no-registry --dnsmasq-opts /home/demo/opts \\
      --dnsmasq-cmdline "dnsmasq -i br-phy --dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h --dhcp-optsfile=opts"
  provnet doctor --dnsmasq-cmdline @/proc/$(pidof -s dnsmasq)/cmdline
  provnet doctor --dnsmasq-cmdline @/etc/systemd/system/dnsmasq-provider.service
  provnet doctor --no-registry --dnsmasq-opts /home/demo/opts --commands ~/neutron-commands.sh
  provnet --url http://controller:9696 doctor -f json

\b
A dnsmasq command line may come with or without the program name: as `ps` shows it, a systemd unit's ExecStart=,
a script, bare arguments, or /proc/PID/cmdline itself (@FILE). Each finding has a severity (error, warning,
info), a check id, the file and line (or "registry"), what is wrong, the symptom a user would see, and the exact
fix. Every input is either checked or named in an input.not-understood or input.not-checked finding, and the
output ends with the inputs read and how many checks ran on each. The exit status is 1 when there is an error, 0
otherwise. Check ids: config.*, agent.*, binding.*, ml2.*, metadata.*, dhcp.*, firewall.*, input.*, registry.*.
"""


FINDING_COLUMNS = ("severity", "check", "location", "file", "line", "problem", "symptom", "fix")


def _sqlite_file(db_url: str) -> str | None:
    prefix = "sqlite:///"
    return db_url[len(prefix):] if db_url.startswith(prefix) else None


def register(group: click.Group) -> None:
    @group.command("doctor", epilog=EPILOG)
    @click.option("--config-dir", "config_dirs", multiple=True, type=click.Path(),
                  help="Directory holding neutron.conf, ml2_conf.ini, openvswitch_agent.ini, dhcp_agent.ini, "
                       "l3_agent.ini, metadata_agent.ini and/or nova.conf (searched recursively, e.g. "
                       "/etc/neutron). Repeat for /etc/nova.")
    @click.option("--local-conf", type=click.Path(), help="A devstack local.conf: its [[local|localrc]] "
                  "variables and [[post-config|...]] blocks (they win over the config directory).")
    @click.option("--dnsmasq-opts", "dnsmasq_files", multiple=True, type=click.Path(),
                  help="A dnsmasq options file (--dhcp-optsfile), hosts file (--dhcp-hostsfile) or dnsmasq.conf. "
                       "Repeatable.")
    @click.option("--dnsmasq-cmdline", "dnsmasq_cmdlines", multiple=True,
                  help="A dnsmasq command line, with or without the program name (as run, as `ps` shows it, or "
                       "just its arguments); @FILE reads every dnsmasq command in FILE: a script, `ps` output, a "
                       "systemd unit's ExecStart=, or /proc/PID/cmdline. Files it names (--conf-file, --conf-dir, "
                       "--dhcp-optsfile, --dhcp-hostsfile) are read too when present. Repeatable.")
    @click.option("--iptables-save", type=click.Path(), help="iptables-save output of the compute host, to check "
                  "that per-port rules let the external DHCP server's replies through.")
    @click.option("--dhcp-server", metavar="IP", help="Address of the external DHCP server on the VMs' segment "
                  "(for --iptables-save).")
    @click.option("--commands", "commands", multiple=True, type=click.Path(), metavar="FILE",
                  help="A file of the commands that created the networks (neutron net-create/subnet-create/"
                       "router-interface-add, openstack network/subnet create, provnet's verbs): a script, notes "
                       "or shell history. Without a registry, doctor takes subnets, allocation pools, host routes "
                       "and router interfaces from it. Repeatable.")
    @click.option("--registry/--no-registry", default=True, show_default=True,
                  help="Also check the live registry (the local database, the API given with --url, or with "
                       "--os-cloud alone the cloud's own Neutron).")
    @output_options
    @click.pass_obj
    def doctor(app, config_dirs: tuple[str, ...], local_conf: str | None, dnsmasq_files: tuple[str, ...],
               dnsmasq_cmdlines: tuple[str, ...], iptables_save: str | None, dhcp_server: str | None,
               commands: tuple[str, ...], registry: bool, fmt: str, columns: tuple[str, ...]) -> None:
        """Find the misconfigurations that make ports fail to bind or VMs miss their metadata.

        Reads, as given: OpenStack INI files (oslo's dialect: repeated keys, comments, continuation lines),
        a devstack local.conf, dnsmasq options/hosts files and command lines, iptables rules, provnet's own
        configuration (when one is set), and the live registry. Checks bridge_mappings against the networks
        in use, agent_down_time against report_interval and dead agents, ML2's type and mechanism drivers,
        the dhcp-agent and l3-agent metadata recipes, the metadata shared secret, DHCP options 121/249/3,
        external DHCP leases against ports' fixed IPs, two DHCP servers on one segment, and firewall rules
        that drop DHCP replies.
        """
        if dhcp_server:
            try:
                ipaddress.IPv4Address(dhcp_server)
            except ValueError:
                raise click.BadParameter(f"{dhcp_server!r} is not an IPv4 address",
                                         param_hint="--dhcp-server") from None
        extra: list[Finding] = []
        snapshot = None
        not_read = ""
        db_file = _sqlite_file(app.config.db_url)
        if not registry:
            not_read = "--no-registry"
        elif not app.api_url and not app.companion and db_file is not None and not Path(db_file).exists():
            registry = False  # reading must not create a database
            not_read = f"no database at {db_file}"
            extra.append(Finding(
                "info", "registry.unreachable", Location(db_file), "no registry database here",
                "the registry checks (agents, bindings, leases) did not run",
                "pass `--url http://HOST:9696`, `--db URL` or `--state-path DIR` of the running provnet"))
        if registry:
            remote = app.api_url or app.companion
            label = f"registry {app.store}" if remote else "registry (database)"
            try:
                snapshot = Snapshot.from_registry(app.registry, source=label)
                snapshot.provnet = not app.companion
            except Exception as exc:  # any failure to reach it is a finding, not a traceback
                not_read = "unreachable"
                extra.append(Finding(
                    "error", "registry.unreachable", Location(app.store if remote else "database"),
                    f"cannot read the registry: {exc}", "the registry checks (agents, bindings, leases) did not run",
                    "start the API / fix --url or --db, or pass --no-registry to check the files only"))
        inputs = gather(config_dirs=config_dirs, local_conf=local_conf, dnsmasq_files=dnsmasq_files,
                        dnsmasq_cmdlines=dnsmasq_cmdlines, iptables_save=iptables_save, dhcp_server=dhcp_server,
                        provnet=app.config, snapshot=snapshot, registry_label=not_read, commands=commands)
        findings = extra + run_checks(inputs)
        sources = list(inputs.sources.values())
        if fmt == "table" and not columns:  # a block per finding: its fix is a command line, kept whole
            click.echo(render_table(findings, sources))
        elif fmt == "json" and not columns:  # the findings and what was read
            click.echo(render_json(findings, sources))
        else:
            echo_many([f.to_dict() for f in sorted(findings, key=sort_key)], FINDING_COLUMNS, fmt, columns)
        if has_error(findings):
            raise SystemExit(1)
