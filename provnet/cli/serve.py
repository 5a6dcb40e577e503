# `provnet serve` (all-in-one: every service in one process) and `provnet api` (the networking API alone).
from __future__ import annotations

import asyncio
import logging
import os
import re

import click

from provnet.config import Config, ConfigError
from provnet.registry.base import Registry
from provnet.services import Service, install_fast_loop, run_services

log = logging.getLogger("provnet.serve")


def all_in_one_services(config: Config, registry: Registry) -> list[Service]:
    """What `provnet serve` runs, one line per service, started in this order and stopped in reverse."""
    from provnet.api.app import ApiService
    from provnet.cli.metadata_cmd import metadata_agent_service, metadata_api_service
    from provnet.dhcp.service import dhcp_services

    return [
        ApiService.from_config(config, registry),  # networking API (neutron-server), bind_host:bind_port
        metadata_api_service(config, registry),  # nova-api-metadata, metadata_listen:8775
        metadata_agent_service(config, registry, local_api=True),  # neutron-metadata-agent, unix socket
        *dhcp_services(config, registry),  # DHCP server, only when [dhcp] interface is set
    ]


def api_services(config: Config, registry: Registry) -> list[Service]:
    from provnet.api.app import ApiService

    return [ApiService.from_config(config, registry)]


def prepare_state_dir(path: str) -> None:
    """Create the state directory (0700: it holds the store and sockets) if it is missing."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the state directory {path}: {exc.strerror}") from None


def mask_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def open_store(config: Config) -> Registry:
    """The local database as a Registry, or a one-line error (no traceback) naming the database."""
    from provnet.registry import registry_from_config

    try:
        return registry_from_config(config)
    except Exception as exc:  # driver errors differ per database; the operator needs the reason, not a trace
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("opening %s failed", mask_url(config.db_url), exc_info=True)
        raise click.ClickException(f"cannot open the database {mask_url(config.db_url)}: {reason}") from None


def run(app, build, overrides: dict) -> None:
    """Open the store, start the services, run until SIGTERM/SIGINT, stop cleanly."""
    if app.api_url:
        raise click.UsageError("--url names a remote API for client verbs; servers run on the local database "
                               "(--db / [database] connection)")
    try:
        config: Config = app.config.with_overrides(overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    prepare_state_dir(config.state_path)
    registry = open_store(config)
    install_fast_loop()
    try:
        asyncio.run(run_services(build(config, registry)))
    except OSError as exc:  # e.g. the port is in use; the service put the address in the message
        raise click.ClickException(exc.strerror or str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        registry.close()


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
    """Run everything in one process on the local store (like devstack).

    Starts the networking API (Neutron v2.0 subset on bind_host:bind_port, 9696) and the other services
    configured for this host; logs go to stderr; SIGTERM or Ctrl-C stops them cleanly.

    \b
    Example:
      provnet --state-path /tmp/pn serve --bind-port 9696
      openstack --os-auth-type none --os-endpoint http://127.0.0.1:9696 network list
    """
    run(app, all_in_one_services, {"bind_host": bind_host, "bind_port": bind_port})


@click.command("api")
@_with_bind_options
@click.pass_obj
def api(app, bind_host: str | None, bind_port: int | None) -> None:
    """Run only the networking API (neutron-server's part) on the local store.

    Serves the Neutron v2.0 subset (networks, subnets, ports, routers, agents, extensions) and
    /provnet/v1 (instances, passwords, agent reports, revision) with /healthz, /readyz and /metrics.
    There is no authentication yet: the project comes from X-Project-Id (default fake_project_id),
    so keep bind_host on a management network.

    \b
    Example:
      provnet --db postgresql://provnet:secret@db/provnet api --bind-host 0.0.0.0
      provnet --url http://HOST:9696 net-list       # clients and agents on other hosts
    """
    run(app, api_services, {"bind_host": bind_host, "bind_port": bind_port})


def register(group: click.Group) -> None:
    group.add_command(serve)
    group.add_command(api)
