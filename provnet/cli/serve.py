# `provnet serve` (all-in-one: every service from one command) and `provnet api` (the networking API alone).
from __future__ import annotations

import asyncio
import logging
import os
import re

import click

from provnet.config import Config, ConfigError
from provnet.forked import ForkedService
from provnet.registry.base import Registry
from provnet.services import Service, install_fast_loop, run_services

log = logging.getLogger("provnet.serve")


def all_in_one_services(config: Config, registry: Registry) -> list[Service]:
    """What `provnet serve` runs in its own process, one line per service, started in this order and stopped in
    reverse. The metadata API runs beside it in a child process (metadata_api_child)."""
    from provnet.api.app import ApiService
    from provnet.cli.metadata_cmd import metadata_agent_service
    from provnet.dhcp.service import dhcp_services

    return [
        ApiService.from_config(config, registry),  # networking API (neutron-server), bind_host:bind_port
        metadata_agent_service(config, registry, local_api=True),  # neutron-metadata-agent, unix socket
        *dhcp_services(config, registry),  # DHCP server, only when [dhcp] interface is set
    ]


def metadata_api_child(config: Config) -> ForkedService:
    """nova-api-metadata (metadata_listen:metadata_listen_port) in a child process with its own store connection:
    in a boot storm the agent and the API each get a core, as when they run as separate commands."""
    from provnet.cli.metadata_cmd import metadata_api_options, metadata_api_service

    options = metadata_api_options(config)  # a bad setting stops serve here, before anything starts
    return child_on_store("metadata API", config, lambda c, registry: [metadata_api_service(c, registry, options)])


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


def run(app, build, overrides: dict, *, children=None, remote_ok: bool = False, needs_store: bool = True) -> None:
    """Every server verb's life: apply `overrides` to the configuration, open the registry (the local store, or
    the API given with --url when `remote_ok`), start `build(config, registry)`'s services, run until
    SIGTERM/SIGINT, stop them cleanly. `children(config)` are ForkedServices forked first (each opens its own
    store); if one exits, everything stops, with status 1 when it failed."""
    if app.api_url and not remote_ok:
        raise click.UsageError("--url names a remote API for client verbs; servers run on the local database "
                               "(--db / [database] connection)")
    try:
        config: Config = app.config.with_overrides(overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not app.api_url:
        prepare_state_dir(config.state_path)
    install_fast_loop()
    forked: list[ForkedService] = children(config) if children else []
    stop = asyncio.Event()
    for child in forked:
        child.on_exit = stop.set
        child.fork()
    registry = None
    try:
        if needs_store:
            from provnet.registry import open_registry

            registry = open_registry(None, app.api_url) if app.api_url else open_store(config)
            log.info("registry: %s", app.api_url or mask_url(config.db_url))
        asyncio.run(run_services([*forked, *build(config, registry)], stop))
    except OSError as exc:  # e.g. the port is in use; the service put the address in the message
        raise click.ClickException(exc.strerror or str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        for child in forked:
            child.terminate()  # only does something if the loop never watched it (e.g. the store failed to open)
        if registry is not None:
            registry.close()
    for child in forked:
        if child.failed:
            raise click.ClickException(f"the {child.name} (process {child.pid}) exited with status "
                                       f"{child.exit_status}; see the log above")


def child_on_store(name: str, config: Config, build) -> ForkedService:
    """A ForkedService that opens its own store and runs `build(config, registry)`'s services until SIGTERM."""

    def body() -> int:
        try:
            registry = open_store(config)
        except click.ClickException as exc:
            log.error("%s", exc.format_message())
            return 1
        try:
            asyncio.run(run_services(build(config, registry)))
        except OSError as exc:
            log.error("%s", exc.strerror or exc)
            return 1
        finally:
            registry.close()
        return 0

    return ForkedService(name, body)


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

    Starts the networking API (Neutron v2.0 subset on bind_host:bind_port, 9696), the metadata agent
    (metadata_proxy_socket), the DHCP server when [dhcp] interface is set, and the metadata API
    (metadata_listen:metadata_listen_port, 8775) in a child process of its own, so that a boot storm
    gets two cores. Logs go to stderr; SIGTERM or Ctrl-C stops them all cleanly; if the child dies,
    serve stops too (exit status 1) rather than run half a metadata service.

    \b
    Example:
      provnet --state-path /tmp/pn serve --bind-port 9696
      openstack --os-auth-type none --os-endpoint http://127.0.0.1:9696 network list
    """
    run(app, all_in_one_services, {"bind_host": bind_host, "bind_port": bind_port},
        children=lambda config: [metadata_api_child(config)])


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
