# One server process's life: the store opened, its services (and supervised children) started, run until a
# signal, stopped cleanly; failures raised as errors the CLI maps to one line and an exit status.
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence

from provnet.config import Config, ConfigError
from provnet.metrics import CHILD_RESTARTS
from provnet.registry import registry_from_config
from provnet.registry.base import Registry
from provnet.runtime.service import Service, install_fast_loop, run_services
from provnet.runtime.supervise import DIE_WITH_PARENT, ChildSpec, StartupError, Supervisor

log = logging.getLogger("provnet.runtime")
PR_SET_PDEATHSIG = 1
Build = Callable[[Config, Registry | None], Sequence[Service]]


class StoreError(Exception):
    """The store (database or remote API) cannot be opened; the message names it, without its password."""


def mask_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


_supervised = False  # this process is a supervised child (its parent already said what it runs on)


def die_with_parent() -> None:
    """In a supervised child (DIE_WITH_PARENT in its environment): ask the kernel to SIGTERM this process when
    the supervisor dies, even by SIGKILL, so no child outlives `provnet serve`; exit at once if it already did."""
    global _supervised
    parent = os.environ.pop(DIE_WITH_PARENT, "")
    if not parent.isdigit():
        return
    _supervised = True
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's stop is the only guard
        return
    if os.getppid() != int(parent):
        sys.exit(1)


def prepare_state_dir(path: str) -> None:
    """Create the state directory (0700: it holds the store and sockets) if it is missing."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {path}: {exc.strerror}") from None


def open_store(config: Config, api_url: str | None = None, client=None) -> Registry:
    """The local database (or the API at `api_url`, or in companion mode the cloud's Neutron) as a Registry, or a
    StoreError naming it. `client`: provnet.identity.clouds.ClientIdentity (credentials, CA bundle)."""
    companion = client is not None and client.companion
    where = api_url or (client.describe() if companion else mask_url(config.db_url))
    try:
        registry = registry_from_config(config, api_url, client)
    except Exception as exc:  # driver errors differ per database; the operator needs the reason, not a trace
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("opening %s failed", where, exc_info=True)
        kind = "API" if api_url or companion else "database"
        raise StoreError(f"cannot open the {kind} {where}: {reason}") from None
    log.log(logging.DEBUG if _supervised else logging.INFO, "registry: %s", where)
    return registry


def run_server(config: Config, build: Build, *, api_url: str | None = None, client=None, needs_store: bool = True,
               children: Sequence[ChildSpec] = (), reconfigure: Callable[[], Config] | None = None) -> None:
    """Open the store, start `children` (supervised) then `build(config, registry)`'s services, run until
    SIGTERM/SIGINT, stop everything in reverse; on SIGHUP, `reconfigure()` and the services' `reload`.

    Raises ConfigError, StoreError, or StartupError (a service could not start: its address in use, a child that
    exited before it was ready); a clean stop returns.
    """
    if not api_url:
        prepare_state_dir(config.state_path)
    install_fast_loop()
    registry = open_store(config, api_url, client) if needs_store else None
    try:
        asyncio.run(_main(config, build, registry, children, reconfigure))
    except KeyboardInterrupt:
        pass
    finally:
        if registry is not None:
            registry.close()


async def _main(config: Config, build: Build, registry: Registry | None, children: Sequence[ChildSpec],
                reconfigure: Callable[[], Config] | None = None) -> None:
    stop = asyncio.Event()
    services: list[Service] = []
    supervisor = None
    if children:
        supervisor = Supervisor(children, watchdog=config.get("watchdog_timeout"))
        supervisor.on_fatal = stop.set
        supervisor.on_restart = lambda name: CHILD_RESTARTS.labels(name).inc()
        services.append(supervisor)
    try:
        services.extend(build(config, registry))
    except ConfigError:
        raise
    try:
        await run_services(services, stop, systemd=True, reconfigure=reconfigure)
    except OSError as exc:  # e.g. an address in use; the service put the address in the message
        raise StartupError(exc.strerror or str(exc)) from None
    if supervisor is not None and supervisor.failed is not None:
        raise supervisor.failed
