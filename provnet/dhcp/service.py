# The DHCP server's I/O shell: UDP port 67 bound to one interface, the view kept by the change feed, the journal.
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
from typing import Protocol, TypeVar

from provnet.config import Config, ConfigError
from provnet.dhcp import server
from provnet.dhcp.journal import JOURNAL_NAME, LeaseJournal, LeaseRecord
from provnet.dhcp.metrics import register_counters, unregister_counters
from provnet.dhcp.view import Host, Settings, View, build_view, collect, replace_port, resolve_networks, row_hosts
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed

log = logging.getLogger(__name__)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
REBUILD_TIMEOUT = 300.0  # seconds a whole read of the served networks may take before it counts as failed
MAX_BATCH = 256  # datagrams handled per wake-up before their journal lines are written and replies sent
T = TypeVar("T")


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
    """Where views come from. `build()` reads everything (blocking: called in a thread). A source that follows a
    registry also has `registry` (its change feed drives the view) and `port_hosts(port_ids)`."""

    def build(self) -> View: ...


class RegistrySource:
    """Views of the networks served on `interface`, read through the Registry interface."""

    def __init__(self, registry: Registry, interface: str, network: str | None, settings: Settings,
                 addresses: Callable[[str], Sequence[ipaddress.IPv4Interface]] = interface_addresses) -> None:
        self.registry, self.interface, self.network, self.settings = registry, interface, network, settings
        self._addresses = addresses

    def build(self) -> View:
        addrs = list(self._addresses(self.interface))
        if not addrs:
            raise LookupError(f"interface {self.interface} has no IPv4 address (needed for option 54 and replies)")
        networks = resolve_networks(self.registry, self.network, addrs)
        return build_view(collect(self.registry, networks, self.settings.metadata_mode), self.settings, addrs)

    def port_hosts(self, view: View, port_ids: Sequence[str]) -> dict[str, list[Host]]:
        """The reservations `port_ids` hold now on the view's subnets ([] for a port gone or not served): one
        lean registry read however many ports."""
        rows = self.registry.reservation_rows(sorted(view.networks), list(port_ids)) if port_ids else []
        found: dict[str, list[Host]] = {port_id: [] for port_id in port_ids}
        for host in row_hosts(rows, view.subnet_objects):
            found[host.port_id].append(host)
        return found


class StaticSource:
    """A fixed view (benchmarks, tests of the shell)."""

    def __init__(self, view: View) -> None:
        self.view = view

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
    """`provnet dhcp` (also serve's DHCP child): answers on one interface from an in-memory view.

    The view is built at start (off the loop), then kept current by the change feed: a port's create, update or
    delete re-reads that port and replaces its reservations (counted in `port_updates`); a subnet or network
    change, a gap in the feed, or the `resync_interval` timer rebuilds it whole, off the loop (`rebuilds`). The
    serving loop never reads the registry: while the database is down or hung, known reservations keep being
    answered from the view.
    """

    name = "DHCP server"

    def __init__(self, source: ViewSource, interface: str, journal_path: str | os.PathLike[str],
                 sync_interval: float = 0.1, port: int = server.SERVER_PORT, resync_interval: float = 600.0,
                 metrics_port: int | None = None) -> None:
        self.source, self.interface, self.port = source, interface, port
        self.journal = LeaseJournal(journal_path)
        self.sync_interval, self.resync_interval = sync_interval, resync_interval
        self.metrics_port = metrics_port
        self.counters: Counter[tuple[str, str]] = Counter()
        self.view: View | None = None
        self.rebuilds = 0
        self.port_updates = 0
        registry = getattr(source, "registry", None)
        self.feed = ChangeFeed(registry, "DHCP feed") if registry is not None else None
        # reads of the registry (a rebuild takes a while at 100,000 ports: a generous deadline), never on the loop
        self.areg = AsyncRegistry(registry, timeout=REBUILD_TIMEOUT, threads=2, name="dhcp") if registry else None
        if self.feed is not None:
            self.feed.subscribe(self)
        self._sock: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty_ports: set[str] = set()
        self._rebuild_wanted = False
        self._work = asyncio.Event()

    @classmethod
    def from_config(cls, config: Config, registry: Registry, interface: str | None, network: str | None,
                    metrics_port: int | None = None) -> DhcpService:
        """The server on `interface` for `network` (None: the networks of the interface's addresses), with the
        [dhcp] settings and the lease journal under state_path. Checked now, as ConfigErrors: the interface
        exists and has an IPv4 address, and the network is known."""
        if not interface:
            raise ConfigError("no interface: give --interface IF or set [dhcp] interface")
        try:
            addrs = interface_addresses(interface)
        except LookupError as exc:
            raise ConfigError(f"[dhcp] interface: {exc}") from None
        if not addrs:
            raise ConfigError(f"interface {interface} has no IPv4 address; the DHCP server needs one for option "
                              "54 and to send replies")
        try:
            resolve_networks(registry, network, addrs)
        except LookupError as exc:
            raise ConfigError(f"[dhcp] network: {exc}") from None
        source = RegistrySource(registry, interface, network, settings_from(config))
        return cls(source, interface, journal_path(config), resync_interval=config.get("dhcp.resync_interval"),
                   metrics_port=metrics_port)

    async def start(self) -> None:
        if self.feed is not None:
            await self.feed.start()  # its position is read first: nothing committed after the build is missed
        try:
            self.view = await self._read(self.source.build)
        except LookupError as exc:  # no such interface/network: one line for the operator, not a traceback
            raise OSError(f"DHCP on {self.interface}: {exc}") from None
        self.rebuilds += 1
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
        if self.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_port, addr="127.0.0.1")
        self._tasks = [asyncio.create_task(self._sync_loop())]
        if self.feed is not None:
            self._tasks += [asyncio.create_task(self._follow()), asyncio.create_task(self._resync_timer())]
        log.info("DHCP on %s: %d reservations, journal %s", self.interface, self.view.reservations,
                 self.journal.path)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.feed is not None:
            await self.feed.stop()
        if self.areg is not None:
            self.areg.close()
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
        sends: list[tuple[bytes, tuple[str, int]]] = []  # the replies' datagrams and destinations
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
                sends.append((reply.data, reply.dest))
        if records:
            try:
                self.journal.write(records)  # in the page cache before any ACK leaves
            except OSError:  # the journal logs one line per outage; the ACKs of this batch are withheld
                c["drop", "journal_error"] += len(sends)
                return
        for data, dest in sends:
            try:
                sock.sendto(data, dest)
            except OSError as exc:
                c["drop", "send_error"] += 1
                log.debug("send to %s failed: %s", dest, exc)

    # --- the change feed (subscriber) and the work it asks for, off the serving path ------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        view = self.view
        if view is None:
            return
        for change in changes:
            if change.kind == "port":
                if change.network_id in view.networks or change.id in view.by_port:
                    self._dirty_ports.add(change.id)
            elif change.kind == "instance":  # its hostname may have changed: option 12 of its ports
                self._dirty_ports.update(port_id for port_id, res in view.by_port.items()
                                         if res and res[0].device_id == change.id)
            elif change.kind in ("subnet", "network"):
                if change.network_id in view.networks or not getattr(self.source, "network", None):
                    self._rebuild_wanted = True  # rare: the subnets' options (or the networks served) change
        if self._dirty_ports or self._rebuild_wanted:
            self._work.set()

    def resync(self) -> None:
        self._rebuild_wanted = True
        self._work.set()

    async def _follow(self) -> None:
        """Do what the feed asked for, one round at a time; changes arriving during a round make the next."""
        while True:
            await self._work.wait()
            self._work.clear()
            try:
                if self._rebuild_wanted:
                    self._rebuild_wanted = False
                    self._dirty_ports.clear()
                    await self._rebuild()
                elif self._dirty_ports:
                    await self._update_ports()
            except Exception as exc:  # keep serving the last good view; the next change or timer tries again
                log.warning("DHCP view update failed (serving the previous one): %s", exc)
                self._rebuild_wanted = True
                await asyncio.sleep(1.0)
                self._work.set()

    async def _update_ports(self) -> None:
        ids, self._dirty_ports = sorted(self._dirty_ports), set()
        view = self.view
        source = self.source
        assert view is not None and isinstance(source, RegistrySource)  # only a registry's source has a feed
        found = await self._read(source.port_hosts, view, ids)
        if self.view is not view:  # rebuilt meanwhile: the new view already holds these ports as they are
            return
        for port_id, hosts in found.items():
            if replace_port(view, port_id, hosts):
                self.port_updates += 1

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        """A registry read off the loop, with its deadline."""
        if self.areg is None:
            return await asyncio.to_thread(fn, *args)
        return await self.areg(fn, *args)

    async def _rebuild(self) -> None:
        view = await self._read(self.source.build)
        self.view = view
        self.rebuilds += 1
        log.info("DHCP view rebuilt: %d reservations", view.reservations)

    async def _resync_timer(self) -> None:
        """A whole rebuild now and then catches drift (a change the feed could not have named)."""
        while True:
            await asyncio.sleep(self.resync_interval)
            self._rebuild_wanted = True
            self._work.set()

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
                    force_routes=config.get("dhcp.force_routes"), metadata_mode=config.get("metadata.mode"))


def journal_path(config: Config) -> str:
    return os.path.join(config.state_path, JOURNAL_NAME)


