# `provnet dhcp` (the server), `provnet dhcp-leases` (the lease journal) and `provnet dhcp-config` (exports).
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from provnet.cli.output import echo_many, output_options
from provnet.cli.serve import run
from provnet.cli.store import lab_hint
from provnet.config import Config
from provnet.runtime import compose

LEASE_COLUMNS = ("ip_address", "mac_address", "hostname", "state", "expires", "port_id")


@click.command("dhcp")
@click.option("--interface", "-i", default=None, metavar="IF",
              help="Interface to serve (config [dhcp] interface). The server binds UDP 67 on it and uses its "
                   "IPv4 address as server identifier (option 54).")
@click.option("--network", default=None, metavar="NAME",
              help="Network (name or id) whose ports are served (config [dhcp] network). Default: every network "
                   "with a subnet containing an address of the interface.")
@click.option("--metrics-port", type=int, default=None, metavar="PORT",
              help="Serve Prometheus metrics on 127.0.0.1:PORT (packets by type, replies, drops, unknown clients).")
@click.pass_obj
def dhcp(app, interface: str | None, network: str | None, metrics_port: int | None) -> None:
    """Run the DHCP server: each port's MAC gets exactly the port's fixed IP.

    Replies carry mask, router (3), DNS, hostname (the instance's), domain, MTU, broadcast, lease time and the
    classless static routes 121 and 249 computed like network_data.json (for the seed: 169.254.169.254/32 via
    the gateway 172.16.1.2, default via the external router 172.16.1.1; in network mode, [metadata] mode,
    169.254.169.254/32 via the network's metadata port). MACs without a port get no answer.
    Registry changes are followed within a second; leases are journaled to <state_path>/dhcp-leases.journal
    (`provnet dhcp-leases` shows them). Relayed requests (giaddr) are answered to the relay on port 67.

    \b
    Example (the seed's server, on the bridge that carries the VMs):
      provnet dhcp --interface br-phy --network phy_net
    """
    config: Config = app.config
    app.watch_network = network or config.get("dhcp.network") or None  # companion mode follows only this network
    run(config, lambda c, registry: compose.dhcp_services(c, registry, interface or "", network or "", metrics_port),
        api_url=app.api_url, client=app.client)


@click.command("dhcp-leases")
@click.option("--all", "show_all", is_flag=True, help="Also show expired, released and declined leases.")
@output_options
@click.option("--journal", type=click.Path(dir_okay=False), default=None,
              help="Journal file (default <state_path>/dhcp-leases.journal).")
@click.pass_obj
def dhcp_leases(app, show_all: bool, fmt: str, columns: tuple[str, ...], journal: str | None) -> None:
    """Show the DHCP server's leases from its journal (who holds which address until when).

    Reads the journal the server appends to before each ACK; safe to run while the server runs. Records that are
    torn (a crash or a full disk mid-write) or damaged are skipped and said so on stderr; every whole record is
    shown. Journals in the format before version 2 are read too.
    """
    from provnet.dhcp.journal import read_journal
    from provnet.dhcp.service import journal_path

    path = Path(journal or journal_path(app.config))
    if not path.exists():
        raise click.ClickException(f"no lease journal at {path} (has `provnet dhcp` run with this state path?)"
                                   f"{lab_hint(app.config.state_path, 'dhcp-leases')}")
    try:
        found = read_journal(path)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if found.size and not found.records:
        raise click.ClickException(f"{path} is not a lease journal: no record in `provnet dhcp`'s format")
    if found.damaged:
        click.echo(f"warning: {path}: {found.damage_note()}", err=True)
    leases = found.leases()
    now = time.time()
    rows = []
    for rec in sorted(leases.values(), key=lambda r: tuple(int(x) for x in r.ip.split("."))):
        state = rec.state if rec.state != "ack" else ("active" if rec.expires > now else "expired")
        if show_all or state == "active":
            rows.append({"ip_address": rec.ip, "mac_address": rec.mac, "hostname": rec.hostname,
                         "port_id": rec.port_id, "state": state,
                         "expires": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.expires))})
    echo_many(rows, LEASE_COLUMNS, fmt, columns)


@click.command("dhcp-config")
@click.option("-f", "--format", "fmt", type=click.Choice(["dnsmasq", "kea", "isc"]), required=True,
              help="dnsmasq: options file + hosts file + command line; kea: Kea 2.2 kea-dhcp4.json; "
                   "isc: dhcpd.conf.")
@click.option("--network", required=True, metavar="NAME", help="Network (name or id) to export.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="Write the files here (created if missing); without it they are printed.")
@click.option("--interface", "-i", default=None, metavar="IF",
              help="Interface the exported server listens on (config [dhcp] interface). Unset: Kea listens on *, "
                   "dnsmasq on every interface with an address in the network's subnets.")
@click.pass_obj
def dhcp_config(app, fmt: str, network: str, output_dir: str | None, interface: str | None) -> None:
    """Write the configuration for another DHCP server: one host entry per port, routes 121/249 inside.

    For operators who keep their DHCP server: the same reservations (MAC -> fixed IP, hostname) and the same
    routes our server hands out. dnsmasq gets the seed's form (`tag:tag0,option:classless-static-route,...` and
    `tag:tag0,249,...`) plus a hosts file and the command line to start it; Kea 2.2 gets 121/249 as raw hex
    (2.2 has no definition for them); ISC dhcpd gets the rfc3442-classless-static-routes option definition.

    \b
    Examples:
      provnet dhcp-config --format dnsmasq --network phy_net --output-dir dnsmasq-phy_net
      provnet dhcp-config --format dnsmasq --network phy_net --interface br-phy
      provnet dhcp-config --format kea --network phy_net > kea-dhcp4.json && kea-dhcp4 -t kea-dhcp4.json
    """
    from provnet.dhcp import export
    from provnet.dhcp.service import settings_from
    from provnet.dhcp.view import collect, resolve_networks

    config: Config = app.config
    app.may_create = False  # an export reads the store, never creates one
    interface = interface or config.get("dhcp.interface") or ("*" if fmt == "kea" else "")
    try:
        snap = collect(app.registry, resolve_networks(app.registry, network), config.get("metadata.mode"))
    except LookupError as exc:
        raise click.UsageError(str(exc)) from None
    directory = str(Path(output_dir).resolve()) if output_dir else str(Path(config.state_path) / f"dhcp-{fmt}")
    files = export.render(fmt, snap, settings_from(config), interface, directory)
    if fmt == "dnsmasq" and not interface:
        cidrs = ", ".join(s.cidr for s in snap.subnets if s.ip_version == 4) or "its subnets"
        click.echo(f"note: no --interface: the dnsmasq command line answers DHCP on every interface with an address "
                   f"in {cidrs}; give --interface IF (or set [dhcp] interface) to pin it to one", err=True)
    if output_dir:
        try:
            os.makedirs(directory, exist_ok=True)
            for name, text in files.items():
                (Path(directory) / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write to {directory}: {exc.strerror}") from None
        for name in files:
            click.echo(str(Path(directory) / name))
        return
    if len(files) == 1:
        sys.stdout.write(next(iter(files.values())))
        return
    for name, text in files.items():
        sys.stdout.write(f"# ==> {name} <==\n{text}")


def register(group: click.Group) -> None:
    """Add this module's verbs to the `provnet` group."""
    group.add_command(dhcp)
    group.add_command(dhcp_leases)
    group.add_command(dhcp_config)
