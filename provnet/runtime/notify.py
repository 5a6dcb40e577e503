# systemd's notify protocol (sd_notify): READY, WATCHDOG, STOPPING and STATUS datagrams to $NOTIFY_SOCKET.
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=serving") to the service manager; False when not under one.

    Never raises: a missing or broken socket must not stop a service that runs fine without systemd.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address  # "@name": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), target)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when systemd does not watch us."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
