# What a long-running piece is (a Service), and running several in one process until a signal stops them.
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from provnet.runtime import notify

log = logging.getLogger(__name__)


class Service(Protocol):
    """A piece that listens somewhere. `start` returns once it is serving; `stop` releases everything it holds."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def install_fast_loop() -> None:
    """Use uvloop's event loop for every server: about twice the throughput of asyncio's own."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def run_services(services: Sequence[Service], stop: asyncio.Event | None = None,
                       on_ready: Callable[[], None] | None = None, systemd: bool = False,
                       reconfigure: Callable[[], object] | None = None) -> None:
    """Start every service in order, run until SIGTERM/SIGINT (or `stop` is set), then stop them in reverse.

    `reconfigure`: on SIGHUP, read the configuration again and hand it to every service that has `reload(config)`
    (the metadata API and agent take their secrets and keys from it; a supervisor passes the signal on). A
    configuration that cannot be read is logged, and everything keeps running as it was.

    `on_ready` is called once all started. `systemd`: tell the service manager READY, keep its watchdog fed from
    this loop (a wedged loop stops the pings, and systemd restarts us), and STOPPING at the end.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    if reconfigure is not None:
        try:
            loop.add_signal_handler(signal.SIGHUP, _reload, services, reconfigure)
        except (NotImplementedError, RuntimeError):
            pass
    started: list[Service] = []
    watchdog: asyncio.Task | None = None
    try:
        for service in services:
            await service.start()
            started.append(service)
            log.debug("%s started", service.name)  # each service logs its own start line: what it serves, where
        if on_ready is not None:
            on_ready()
        if systemd:
            notify.notify("READY=1", "STATUS=" + ", ".join(s.name for s in started))
            interval = notify.watchdog_interval()
            if interval:
                watchdog = asyncio.create_task(_feed_watchdog(interval))
        await stop.wait()
        log.info("shutting down")
    finally:
        if systemd:
            notify.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        for service in reversed(started):
            try:
                await service.stop()
                log.debug("%s stopped", service.name)
            except Exception:  # keep stopping the others
                log.exception("%s failed to stop cleanly", service.name)


def _reload(services: Sequence[Service], reconfigure: Callable[[], object]) -> None:
    try:
        config = reconfigure()
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop a running service
        log.error("SIGHUP: the configuration cannot be read again, nothing reloaded: %s", exc)
        return
    for service in services:
        reload = getattr(service, "reload", None)
        if reload is not None:
            try:
                reload(config)
            except Exception:
                log.exception("%s failed to reload", service.name)


async def _feed_watchdog(interval: float) -> None:
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
