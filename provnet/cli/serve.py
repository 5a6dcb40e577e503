# `provnet serve` (all-in-one: the networking API here, the rest in supervised children) and `provnet api`.
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import click

from provnet.config import Config, ConfigError
from provnet.runtime import compose
from provnet.runtime.process import Build, StoreError, run_server
from provnet.runtime.supervise import ChildSpec, StartupError

log = logging.getLogger("provnet.serve")


def effective_config(app, overrides: dict) -> Config:
    try:
        return app.config.with_overrides(overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def rereader(app, overrides: dict, then: Callable[[Config], Config] = lambda c: c) -> Callable[[], Config]:
    """How a server reads its configuration again on SIGHUP: as at start, with the verb's options on top."""
    return lambda: then(app.reread().with_overrides(overrides))


def run(config: Config, build: Build, *, api_url: str | None = None, client=None, needs_store: bool = True,
        children: Sequence[ChildSpec] = (), reconfigure: Callable[[], Config] | None = None) -> None:
    """Every server verb's life (runtime.process.run_server), its failures mapped to one line and exit 1.
    `client` (provnet.identity.clouds.ClientIdentity): credentials and CA for a remote registry."""
    try:
        run_server(config, build, api_url=api_url, client=client, needs_store=needs_store, children=children,
                   reconfigure=reconfigure)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    except (StoreError, StartupError) as exc:
        raise click.ClickException(str(exc)) from None
    except PermissionError as exc:
        raise click.ClickException(f"{exc.strerror} (needs root, or CAP_NET_BIND_SERVICE and CAP_NET_RAW)") \
            from None


def refuse_url(app) -> None:
    if app.api_url:
        raise click.UsageError("--url names a remote API for client verbs; this server runs on the local database "
                               "(--db / [database] connection)")


_bind_options = [
    click.option("--bind-host", default=None, help="Address the networking API listens on (config bind_host, "
                                                   "default 127.0.0.1)."),
    click.option("--bind-port", type=int, default=None, help="Port of the networking API (config bind_port, "
                                                            "default 9696)."),
]


def _with_bind_options(fn):
    for opt in reversed(_bind_options):
        fn = opt(fn)
    return fn


@click.command("serve")
@_with_bind_options
@click.pass_obj
def serve(app, bind_host: str | None, bind_port: int | None) -> None:
    """Run everything from one command on the local store (like devstack).

    This process serves the networking API (Neutron v2.0 subset on bind_host:bind_port, 9696) and
    supervises, each in a process of its own: the metadata API (metadata_listen:metadata_listen_port,
    8775), the metadata agent (metadata_proxy_socket) and, when [dhcp] interface is set, the DHCP server.
    A child that dies, or whose event loop stops answering, is restarted (0.5 s, 1 s, 2 s ... 30 s
    apart; counted in /metrics as provnet_child_restarts); one that cannot start at all (a port in use,
    a bad setting) stops serve with its reason. Under systemd, serve reports READY and feeds the
    watchdog (contrib/systemd/provnet-serve.service). SIGTERM or Ctrl-C stops them all cleanly.

    \b
    Example:
      provnet --state-path /tmp/pn serve --bind-port 9696
      openstack --os-auth-type none --os-endpoint http://127.0.0.1:9696 network list
    """
    refuse_url(app)
    overrides = {"bind_host": bind_host, "bind_port": bind_port}
    config = effective_config(app, overrides)
    try:
        children_config = compose.serve_config(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _check_children_config(children_config)
    with compose.child_config(children_config, "serve") as path:
        # SIGHUP: the children's file rewritten from the configuration read again, then SIGHUP to each child
        run(config, compose.api_services, children=compose.serve_children(config, path),
            reconfigure=rereader(app, overrides, lambda new: compose.rewrite_child_config(
                new, path, compose.serve_config(new))))


def _check_children_config(config: Config) -> None:
    """The children's settings, checked before anything starts (they would fail the same way, later)."""
    from provnet.metadata.api import load_vendor_data

    try:
        load_vendor_data(config.get("api.vendordata_jsonfile_path"))
    except ValueError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


@click.command("api")
@_with_bind_options
@click.pass_obj
def api(app, bind_host: str | None, bind_port: int | None) -> None:
    """Run only the networking API (neutron-server's part) on the local store.

    Serves the Neutron v2.0 subset (networks, subnets, ports, routers, agents, extensions) and
    /provnet/v1 (instances, passwords, agent reports, the change feed) with /healthz, /readyz and
    /metrics. With [DEFAULT] auth_strategy = keystone every request carries a Keystone token and Neutron's
    policy applies; with noauth (the default) every caller is admin and the project comes from X-Project-Id, so
    noauth listens only on a loopback address unless noauth_allow_remote says otherwise.

    \b
    Example:
      provnet --config-file /etc/provnet/provnet.conf api --bind-host 0.0.0.0   # auth_strategy = keystone
      provnet --url http://HOST:9696 net-list       # clients and agents on other hosts
    """
    refuse_url(app)
    run(effective_config(app, {"bind_host": bind_host, "bind_port": bind_port}), compose.api_services)


def register(group: click.Group) -> None:
    group.add_command(serve)
    group.add_command(api)
