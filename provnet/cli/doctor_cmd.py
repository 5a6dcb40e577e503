# `provnet doctor`: read an operator's OpenStack/devstack/dnsmasq configuration and the registry, name every trap.
from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from provnet.cli.output import echo_many, output_options
from provnet.doctor.findings import Finding, has_error, render_table, sort_key
from provnet.doctor.ini import Location
from provnet.doctor.inputs import Snapshot
from provnet.doctor.run import gather, run_checks

EPILOG = """\b
Examples:
  provnet doctor --config-dir /etc/neutron --config-dir /etc/nova
  provnet doctor --config-dir /etc/neutron --local-conf ~/devstack/local.conf
  provnet doctor --no-registry --dnsmasq-opts /home/demo/opts \\
      --dnsmasq-cmdline "dnsmasq -i br-phy --dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h --dhcp-optsfile=opts"
  provnet --url http://controller:9696 doctor -f json

\b
Each finding has a severity (error, warning, info), a check id, the file and line (or "registry"),
what is wrong, the symptom a user would see, and the exact fix. The exit status is 1 when there is
an error, 0 otherwise. Check ids: config.*, agent.*, binding.*, ml2.*, metadata.*, dhcp.*, firewall.*.
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
                  help="A dnsmasq command line as run or as `ps` shows it; @FILE reads every dnsmasq line of "
                       "FILE. Files it names (--dhcp-optsfile=...) are read too when present. Repeatable.")
    @click.option("--iptables-save", type=click.Path(), help="iptables-save output of the compute host, to check "
                  "that per-port rules let the external DHCP server's replies through.")
    @click.option("--dhcp-server", metavar="IP", help="Address of the external DHCP server on the VMs' segment "
                  "(for --iptables-save).")
    @click.option("--registry/--no-registry", default=True, show_default=True,
                  help="Also check the live registry (the local database, or the API given with --url).")
    @output_options
    @click.pass_obj
    def doctor(app, config_dirs: tuple[str, ...], local_conf: str | None, dnsmasq_files: tuple[str, ...],
               dnsmasq_cmdlines: tuple[str, ...], iptables_save: str | None, dhcp_server: str | None,
               registry: bool, fmt: str, columns: tuple[str, ...]) -> None:
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
        db_file = _sqlite_file(app.config.db_url)
        if registry and not app.api_url and db_file is not None and not Path(db_file).exists():
            registry = False  # reading must not create a database
            extra.append(Finding(
                "info", "registry.unreachable", Location(db_file), "no registry database here",
                "the registry checks (agents, bindings, leases) did not run",
                "pass --url http://HOST:9696, --db URL or --state-path DIR of the running provnet"))
        if registry:
            try:
                snapshot = Snapshot.from_registry(app.registry, source=app.api_url or "database")
            except Exception as exc:  # any failure to reach it is a finding, not a traceback
                extra.append(Finding(
                    "error", "registry.unreachable", Location(app.api_url or "database"),
                    f"cannot read the registry: {exc}", "the registry checks (agents, bindings, leases) did not run",
                    "start the API / fix --url or --db, or pass --no-registry to check the files only"))
        inputs = gather(config_dir=None, local_conf=local_conf, dnsmasq_files=dnsmasq_files,
                        dnsmasq_cmdlines=dnsmasq_cmdlines, iptables_save=iptables_save, dhcp_server=dhcp_server,
                        provnet=app.config, snapshot=snapshot)
        for directory in config_dirs:
            more = gather(config_dir=directory)
            inputs.files.update(more.files)
            inputs.problems.extend(more.problems)
        findings = extra + run_checks(inputs)
        if fmt == "table" and not columns:  # a block per finding: its fix is a command line, kept whole
            click.echo(render_table(findings))
        else:
            echo_many([f.to_dict() for f in sorted(findings, key=sort_key)], FINDING_COLUMNS, fmt, columns)
        if has_error(findings):
            raise SystemExit(1)
