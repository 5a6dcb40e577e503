# The DHCP server's I/O shell: UDP port 67 bound to one interface, the view reloaded on registry changes, the journal.
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from provnet.config import Config
from provnet.dhcp import server
from provnet.dhcp.journal import JOURNAL_NAME, LeaseJournal, LeaseRecord
from provnet.dhcp.metrics import register_counters, unregister_counters
from provnet.dhcp.view import Settings, View, build_view, collect, resolve_networks
from provnet.registry.base import Registry

log = logging.getLogger(__name__)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
MAX_BATCH = 256  # datagrams handled per wake-up before their journal lines are written and replies sent


def interface_addresses(ifname: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses on `ifname` (in the current network namespace). LookupError if there is no such link.

    Asks `ip -j` (iproute2) rather than a netlink library: it works from any thread under any event loop."""
    try:
        res = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], capture_output=True, text=True,
                             timeout=10)
    except FileNotFoundError:
        raise LookupError("the ip command (iproute2) is needed to read the interface's addresses") from None
    if res.returncode != 0:
        raise LookupError(f"no interface named {ifname!r} in this network namespace")
    return [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in json.loads(res.stdout or "[]") for a in link.get("addr_info", []) if a.get("family") == "inet"]


class ViewSource(Protocol):
    """Where views come from: `revision()` is cheap and polled; `build()` reads everything."""

    def revision(self) -> int: ...

    def build(self) -> View: ...


class RegistrySource:
    """Views of the networks served on `interface`, read through the Registry interface."""

    def __init__(self, registry: Registry, interface: str, network: str | None, settings: Settings,
                 addresses: Callable[[str], Sequence[ipaddress.IPv4Interface]] = interface_addresses) -> None:
        self.registry, self.interface, self.network, self.settings = registry, interface, network, settings
        self._addresses = addresses

    def revision(self) -> int:
        return self.registry.revision()

    def build(self) -> View:
        addrs = list(self._addresses(self.interface))
        if not addrs:
            raise LookupError(f"interface {self.interface} has no IPv4 address (needed for option 54 and replies)")
        networks = resolve_networks(self.registry, self.network, addrs)
        return build_view(collect(self.registry, networks), self.settings, addrs)


class StaticSource:
    """A fixed view (benchmarks, tests of the shell)."""

    def __init__(self, view: View) -> None:
        self.view = view

    def revision(self) -> int:
        return self.view.revision

    def build(self) -> View:
        return self.view


def open_socket(interface: str, port: int = server.SERVER_PORT) -> socket.socket:
    """UDP :67 on 0.0.0.0 (broadcasts arrive there) restricted to `interface` with SO_BINDTODEVICE. No SO_REUSEADDR:
    servers on different interfaces coexist, while a second DHCP server on the same one fails with EADDRINUSE."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode() + b"\0")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DhcpService:
    """`provnet dhcp` / part of `provnet serve`: answers on one interface from views of `source`."""

    name = "dhcp"

    def __init__(self, source: ViewSource, interface: str, journal_path: str | os.PathLike[str],
                 poll_interval: float = 0.25, sync_interval: float = 0.1, port: int = server.SERVER_PORT) -> None:
        self.source, self.interface, self.port = source, interface, port
        self.journal = LeaseJournal(journal_path)
        self.poll_interval, self.sync_interval = poll_interval, sync_interval
        self.counters: Counter = Counter()
        self.view: View | None = None
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        try:
            self.view = await asyncio.to_thread(self.source.build)
        except LookupError as exc:  # no such interface/network: one line for the operator, not a traceback
            raise OSError(f"DHCP on {self.interface}: {exc}") from None
        try:
            self._sock = open_socket(self.interface, self.port)
        except OSError as exc:
            raise OSError(exc.errno, f"DHCP on {self.interface}: cannot bind UDP {self.port}: {exc.strerror}") from None
        try:
            self.journal.open()
        except OSError:
            self._sock.close()
            raise
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock.fileno(), self._on_readable)
        register_counters(self.counters, self.interface)
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._sync_loop())]
        log.info("DHCP on %s: %d reservations (registry revision %s), journal %s", self.interface,
                 sum(len(r) for r in self.view.by_mac.values()), self.view.revision, self.journal.path)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.journal.close()
        unregister_counters(self.counters)

    # --- the hot path ----------------------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        sock, view = self._sock, self.view
        if sock is None or view is None:
            return
        now = time.time()
        replies: list[server.Reply] = []
        records: list[LeaseRecord] = []
        c = self.counters
        for _ in range(MAX_BATCH):
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("receive failed: %s", exc)
                break
            reply = server.handle(data, view, now, c)
            if reply is None:
                continue
            if reply.lease is not None:
                r = reply.lease.reservation
                if reply.lease.state == "decline":
                    log.warning("%s (port %s) declined %s: another host on the segment uses that address",
                                r.mac_text, r.port_id, r.ip_text)
                records.append(LeaseRecord(int(now), reply.lease.state, reply.lease.expires, r.ip_text, r.mac_text,
                                           r.port_id, r.hostname))
            if reply.data is not None:
                replies.append(reply)
        if records:
            try:
                self.journal.write(records)  # in the page cache before any ACK leaves
            except OSError:  # the journal logs one line per outage; the ACKs of this batch are withheld
                c["drop", "journal_error"] += len(replies)
                return
        for reply in replies:
            try:
                sock.sendto(reply.data, reply.dest)
            except OSError as exc:
                c["drop", "send_error"] += 1
                log.debug("send to %s failed: %s", reply.dest, exc)

    # --- background: follow the registry, make the journal durable ------------------------------------------------
    async def _follow(self) -> None:
        """Poll the cheap revision every poll_interval; rebuild the view when it moved (new/deleted ports)."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                rev = await asyncio.to_thread(self.source.revision)
                if self.view is None or rev != self.view.revision:
                    self.view = await asyncio.to_thread(self.source.build)
                    log.info("DHCP view reloaded at revision %s: %d reservations", self.view.revision,
                             sum(len(r) for r in self.view.by_mac.values()))
            except Exception as exc:  # keep serving the last good view
                log.warning("DHCP view reload failed (serving the previous one): %s", exc)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await asyncio.to_thread(self.journal.sync)
                if self.journal.needs_compaction():
                    self.journal.compact()
            except OSError as exc:
                log.error("lease journal sync failed: %s", exc)


def settings_from(config: Config) -> Settings:
    return Settings(lease_time=config.get("dhcp.lease_time"), dns_domain=config.get("dhcp.dns_domain"),
                    force_routes=config.get("dhcp.force_routes"))


def journal_path(config: Config) -> str:
    return os.path.join(config.state_path, JOURNAL_NAME)


def dhcp_service(config: Config, registry: Registry, interface: str, network: str | None) -> DhcpService:
    """The server on `interface` for `network` (None: the networks of the interface's addresses), with the
    [dhcp] reply settings and the lease journal under state_path."""
    source = RegistrySource(registry, interface, network, settings_from(config))
    return DhcpService(source, interface, journal_path(config))


def dhcp_services(config: Config, registry: Registry) -> list[DhcpService]:
    """For `provnet serve`: the DHCP service when [dhcp] interface is set, else nothing."""
    interface = config.get("dhcp.interface")
    return [dhcp_service(config, registry, interface, config.get("dhcp.network") or None)] if interface else []
