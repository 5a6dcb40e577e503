# `provnet metadata-explain`: why a VM gets (or does not get) its metadata, step by step, with the fix.
from __future__ import annotations

import ipaddress
import re

import click

from provnet.cli.lookup import find_id
from provnet.cli.output import echo_one, output_options
from provnet.metadata.explain import explain, http_probe
from provnet.model.errors import NeutronError

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


@click.command("metadata-explain")
@click.option("--router", "router", default=None, help="The router (name or id) whose proxy the VM's request goes "
              "through (X-Neutron-Router-ID).")
@click.option("--network", "network", default=None, help="The network (name or id) of a network-mode proxy "
              "(X-Neutron-Network-ID).")
@click.option("--ip", "ip", required=True, help="The VM's source address (what the proxy puts in X-Forwarded-For).")
@click.option("--mac", default=None, help="The VM's MAC, when the proxy passes it: the port must have it.")
@click.option("--no-probe", is_flag=True, help="Do not ask the metadata API (nova_metadata_host:port) whether it "
              "accepts this host's metadata_proxy_shared_secret.")
@output_options
@click.pass_obj
def metadata_explain(app, router: str | None, network: str | None, ip: str, mac: str | None, no_probe: bool,
                     fmt: str, columns: tuple[str, ...]) -> None:
    """Walk the metadata agent's attribution chain for one VM and say where and why it fails.

    The same steps, by the same code, as the agent: the router's interface networks, the one port with the
    VM's address on them (by MAC for an IPv6 link-local address), its device_id, the MAC when given; then
    what the metadata API checks: the instance exists, the port's project owns it, and (unless --no-probe)
    a signed request with this host's metadata_proxy_shared_secret is accepted. A failure prints the line
    the VM's 404 (or 403) carries, the details an operator needs, and the fix. Exit status 1 when the VM
    would not get its metadata. The table is the steps and the verdict as lines; the other formats give
    the fields ok, status, reason, detail, fix, instance_id, steps (-c picks them). The networking API
    answers the same at GET /provnet/v1/metadata/explain?router_id=R&ip=IP[&mac=MAC].

    \b
    Examples:
      provnet metadata-explain --router router1 --ip 172.16.1.103
      provnet metadata-explain --network phy_net --ip 172.16.1.103 --mac fa:16:3e:12:34:56 -f json
    """
    if bool(router) == bool(network):
        raise click.UsageError("give exactly one of --router or --network")
    try:
        address = str(ipaddress.ip_address(ip))
    except ValueError:
        raise click.UsageError(f"--ip {ip!r} is not an IP address") from None
    if mac is not None and not _MAC.match(mac):
        raise click.UsageError(f"--mac {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    app.verb, app.may_create = "metadata-explain", False
    registry = app.registry
    config = app.config
    try:
        if router:
            kind, scope = "router", find_id(registry, "router", router)
        else:
            assert network is not None  # exactly one of the two (checked above)
            kind, scope = "network", find_id(registry, "network", network)
    except NeutronError as exc:
        raise click.ClickException(exc.message) from None
    probe = None if no_probe else http_probe(config.nova_metadata_host, config.nova_metadata_port,
                                             config.metadata_proxy_shared_secret)
    result = explain(registry, kind, scope, address, mac, probe)
    if fmt == "table" and not columns:
        click.echo("\n".join(result.lines()))
    else:
        record = result.to_api()
        if fmt not in ("json", "yaml"):
            record["steps"] = [f"{'ok' if s['ok'] else 'FAIL'} {s['step']}: {s['text']}" for s in record["steps"]]
        echo_one(record, fmt, columns)
    if not result.ok:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(metadata_explain)
