# `provnet metadata-api`, `metadata-agent` and `metadata-proxy`: the three hops of the metadata path as processes.
from __future__ import annotations

import logging
import os

import click

from provnet.cli.serve import effective_config, rereader, run
from provnet.config import Config, ConfigError
from provnet.runtime import compose

log = logging.getLogger("provnet.metadata")


@click.command("metadata-api")
@click.option("--host", default=None, help="Listen address (config metadata_listen, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (config metadata_listen_port, default 8775).")
@click.pass_obj
def metadata_api(app, host: str | None, port: int | None) -> None:
    """Run the metadata API (nova-api-metadata's part) on the store.

    Serves the EC2 tree (/1.0 ... /2009-04-04, /latest) and the OpenStack tree (/openstack/<version>/
    meta_data.json, user_data, vendor_data.json, vendor_data2.json, network_data.json, password) to
    requests signed by the metadata agent: X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature =
    hex HMAC-SHA256(metadata_proxy_shared_secret, instance id). Missing or duplicated headers: 400;
    a bad signature: 403; an unknown instance or a tenant mismatch: 404.

    Direct mode (no proxy, no agent) is off unless [api] metadata_trusted_networks lists CIDRs: a
    request from such an address without the headers is answered for the port holding that address.
    /healthz, /readyz and /metrics answer requests that carry no instance headers.

    \b
    Example:
      provnet --config-file /etc/provnet/provnet.conf metadata-api --host 127.0.0.1 --port 8775
    """
    overrides = {"metadata_listen": host, "metadata_listen_port": port}
    config = effective_config(app, overrides)
    run(config, compose.metadata_api_services, api_url=app.api_url, client=app.client,
        reconfigure=rereader(app, overrides))


@click.command("metadata-agent")
@click.option("--config-file", "neutron_files", multiple=True, type=click.Path(dir_okay=False),
              help="A Neutron metadata_agent.ini or neutron.conf (repeatable). The agent's options are "
                   "taken from it; Neutron's other options are listed in the log and ignored.")
@click.option("--socket", "socket_path", default=None,
              help="Unix socket to listen on (config metadata_proxy_socket, default <state_path>/metadata_proxy).")
@click.pass_obj
def metadata_agent(app, neutron_files: tuple[str, ...], socket_path: str | None) -> None:
    """Run the metadata agent (neutron-metadata-agent's part) on a unix socket.

    Each request from a namespace proxy carries X-Forwarded-For (the VM's address) and one of
    X-Neutron-Router-ID / X-Neutron-Network-ID. The agent finds the one port with that fixed IP on the
    router's interface networks (or on the network), signs its device_id and forwards the request to
    nova_metadata_protocol://nova_metadata_host:nova_metadata_port with exactly X-Forwarded-For,
    X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature (plus X-Openstack-Request-Id for the logs).
    No single port: 404. API unreachable: 503. Too many requests from one address, when
    [metadata_rate_limiting] rate_limit_enabled: 429 with Retry-After. Lookups are cached until the
    registry changes. metadata_workers > 1 runs that many agent processes on the one socket.
    /healthz, /readyz and /metrics answer requests without proxy headers (curl --unix-socket PATH).

    \b
    Example (an existing Neutron configuration works unchanged):
      provnet metadata-agent --config-file /etc/neutron/neutron.conf \\
                             --config-file /etc/neutron/metadata_agent.ini
    """
    from provnet.metadata.neutron_conf import read_neutron_ini

    def with_neutron_files(config: Config, quiet: bool = True) -> Config:
        for path in neutron_files:
            found, ignored = read_neutron_ini(path)
            config = config.with_overrides(found, source=str(path))
            if ignored and not quiet:
                log.info("%s: ignoring options provnet does not use: %s", path, ", ".join(ignored))
        return config

    try:
        app.config = with_neutron_files(app.config, quiet=False)
    except ConfigError as exc:  # a configuration error: exit 1, no usage banner
        raise click.ClickException(str(exc)) from None
    overrides = {"metadata_proxy_socket": socket_path}
    config = effective_config(app, overrides)
    reconfigure = rereader(app, overrides)
    if neutron_files:
        reconfigure = rereader(app, {}, lambda new: with_neutron_files(new).with_overrides(overrides))
    if config.metadata_workers > 1 and not os.environ.get(compose.LISTEN_FD):
        _agent_workers(app, config, reconfigure)
    else:
        run(config, compose.metadata_agent_services, api_url=app.api_url, client=app.client, reconfigure=reconfigure)


def _agent_workers(app, config: Config, reconfigure) -> None:
    """metadata_workers > 1: bind the socket here and supervise that many agents serving it (each with its own
    registry connection, lookup cache, rate-limit table and /metrics; a /metrics request reaches one of them)."""
    if app.api_url or app.companion:
        raise click.UsageError("metadata_workers > 1 runs on the local database, not with --url or --os-cloud")
    try:
        sock = compose.bind_agent_socket(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    log.info("metadata agent: %d workers on %s", config.metadata_workers, config.metadata_proxy_socket)
    try:
        with compose.child_config(config, "metadata-agent") as path:
            run(config, compose.no_services, needs_store=False, children=compose.agent_workers(config, path, sock),
                reconfigure=lambda: compose.rewrite_child_config(reconfigure(), path))
    finally:
        sock.close()
        if os.path.exists(config.metadata_proxy_socket):
            os.unlink(config.metadata_proxy_socket)


@click.command("metadata-proxy")
@click.option("--router-id", default=None, help="Serve this router's VMs (sets X-Neutron-Router-ID).")
@click.option("--network-id", default=None, help="Serve this network's VMs (sets X-Neutron-Network-ID).")
@click.option("--bind", default="0.0.0.0,::", show_default=True,
              help="Address(es) to listen on, comma-separated: 0.0.0.0,:: also takes IPv6; a link-local one names its "
                   "device: 169.254.169.254,fe80::a9fe:a9fe%tap1234 (network mode, no redirect).")
@click.option("--port", type=int, default=None, help="Port to listen on (config metadata_port, default 9697).")
@click.option("--socket", "socket_path", default=None,
              help="The agent's unix socket (config metadata_proxy_socket, default <state_path>/metadata_proxy).")
@click.option("--status-socket", default=None,
              help="Unix socket for /healthz, /readyz and /metrics (default <state_path>/metadata-proxy/<id>.sock;"
                   " kept off the VM-facing port on purpose).")
@click.pass_obj
def metadata_proxy(app, router_id: str | None, network_id: str | None, bind: str, port: int | None,
                   socket_path: str | None, status_socket: str | None) -> None:
    """Run one namespace metadata proxy (what Neutron runs haproxy for), normally inside qrouter-<id>.

    Takes VM requests (redirected from 169.254.169.254:80 by iptables, [fe80::a9fe:a9fe]:80 by
    ip6tables), reads each connection's MAC from the namespace's neighbour table (netlink), drops
    every client-sent X-Neutron-*, X-Instance-*, X-Tenant-*, X-Forwarded-For, X-Metadata-Provider*
    and X-Provnet-Source-MAC header, sets X-Forwarded-For to the TCP source address,
    X-Neutron-Router-ID (or -Network-ID) and X-Provnet-Source-MAC (when the MAC is known), and
    forwards over the agent's unix socket. While the agent is down VMs get 502 (504 when it is too
    slow); it reconnects by itself. Malformed requests: 400 (431 for heads over 8 KiB, 413 for bodies
    over 64 KiB, 501/505 for what it does not speak) and the connection closed; requests slower than
    [metadata_proxy] header_timeout: 408.

    Fair share ([metadata_proxy] options; a VM is its MAC, IPv4 and IPv6 together, else its
    address): one VM holds at most max_connections_per_source (64) connections, more are refused at
    once with 429, and opens at most max_connection_rate_per_source (100) a second, more are reset;
    all VMs together at most max_connections (4096, within the open files limit, which the proxy
    raises to its hard limit at start). When full, the VM holding the most connections loses its
    longest-idle one, and the head and idle timeouts shrink towards 1 s. Counters:
    provnet_metadata_proxy_connection_events_total in /metrics.

    \b
    Example:
      ip netns exec qrouter-$ROUTER provnet metadata-proxy --router-id $ROUTER --port 9697
    """
    from provnet.metadata.proxy import MetadataProxy
    from provnet.metadata.serving import parse_bind

    if bool(router_id) == bool(network_id):
        raise click.UsageError("give exactly one of --router-id or --network-id")
    try:
        parse_bind(bind)
    except ValueError as exc:
        raise click.UsageError(f"--bind: {exc} (give IP addresses, comma-separated: 0.0.0.0,:: or "
                               "169.254.169.254,fe80::a9fe:a9fe%<device>)") from None
    config = effective_config(app, {"metadata_proxy_socket": socket_path, "metadata_port": port})
    scope = router_id or network_id
    status_socket = status_socket or os.path.join(config.state_path, "metadata-proxy", f"{scope}.sock")
    proxy = MetadataProxy(socket_path=config.metadata_proxy_socket, router_id=router_id, network_id=network_id,
                          bind=bind, port=config.metadata_port, status_socket=status_socket,
                          max_connections=config.get("metadata_proxy.max_connections"),
                          max_per_source=config.get("metadata_proxy.max_connections_per_source"),
                          max_rate_per_source=config.get("metadata_proxy.max_connection_rate_per_source"),
                          header_timeout=config.get("metadata_proxy.header_timeout"),
                          idle_timeout=config.get("metadata_proxy.idle_timeout"))
    run(config, lambda c, registry: [proxy], needs_store=False)


def register(group: click.Group) -> None:
    """Add this module's verbs to the `provnet` group."""
    group.add_command(metadata_api)
    group.add_command(metadata_agent)
    group.add_command(metadata_proxy)
