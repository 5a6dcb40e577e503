# `provnet agent`: this host's L2 agent. It reports its state, watches the mapped bridges for the tap devices Nova
# plugs, marks their ports ACTIVE or DOWN and keeps their firewall, driven by netlink link events and the change feed.
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provnet.agents.report import StateReporter, ovs_configurations
from provnet.dataplane import firewall, iptables, netns
from provnet.dataplane.netns import BridgePort
from provnet.model.errors import NotFound
from provnet.model.resources import OVS_AGENT_TYPE, Network, Port
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed

log = logging.getLogger("provnet.agent")
BINARY = "provnet-agent"
DEVICE_PREFIX = "tap"  # Nova's (and the L3 agent's) name for a port's device: tap + 11 characters of the port id
PORT_ID_CHARS = 11
TRUSTED_OWNER = "network:"  # router interfaces, DHCP and the like: wired, never filtered (Neutron's trusted owners)
DEFAULT_GROUP = "default"  # a port with no security group is in the project's default group
READ_CHUNK = 50  # port ids per list call (a GET's query string stays short)
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def device_name(port_id: str) -> str:
    """`tap` + the first 11 characters of the port id, as Nova's libvirt driver names a VM's device."""
    return f"{DEVICE_PREFIX}{port_id[:PORT_ID_CHARS]}"


@dataclass(frozen=True)
class HostPlan:
    """What this host must have, given its devices and the ports the registry knows (pure `plan_host`)."""

    status: Mapping[str, str]  # port id -> ACTIVE or DOWN, for the ports this host speaks for
    filters: tuple[firewall.PortFilter, ...]
    blocked: tuple[str, ...]  # devices on a mapped bridge that no port here may use
    wired: Mapping[str, str]  # device -> port id

    def ruleset(self) -> iptables.Ruleset:
        return firewall.firewall_ruleset(self.filters, self.blocked)


def _trusted(port: Port) -> bool:
    return port.device_owner.startswith(TRUSTED_OWNER)


def _ipv4(port: Port) -> tuple[str, ...]:
    out = []
    for ip in port.ips():
        try:
            if ipaddress.ip_address(ip).version == 4:
                out.append(ip)
        except ValueError:
            continue
    return tuple(out)


def _groups(port: Port) -> tuple[str, ...]:
    return tuple(port.security_groups) or (DEFAULT_GROUP,)


def _members(ports: Iterable[Port]) -> dict[tuple[str, str], tuple[str, ...]]:
    """The IPv4 addresses in each (network, security group): who may open connections to a member."""
    out: dict[tuple[str, str], list[str]] = {}
    for port in ports:
        if _trusted(port) or not port.port_security_enabled:
            continue
        for group in _groups(port):
            out.setdefault((port.network_id, group), []).extend(_ipv4(port))
    return {k: tuple(sorted(set(v), key=ipaddress.IPv4Address)) for k, v in out.items()}


def plan_host(devices: Mapping[str, BridgePort], ports: Mapping[str, Port], host: str,
              previously: Iterable[str] = ()) -> HostPlan:
    """This host's port statuses and firewall (pure).

    A tap device on a mapped bridge is wired to the port whose id it names when that port is bound to this host
    (Nova sets binding:host_id before it plugs), or is a network-owned port nobody bound (a router interface the
    L3 agent plugged here). A wired port is ACTIVE while its device is up, DOWN otherwise; it gets the firewall
    (anti-spoofing by MAC and fixed IPs, DHCP from the server allowed, DHCP serving dropped) unless it is
    network-owned. Any other tap on the bridge is blocked. A port bound here without a device, or wired here
    in the previous round (`previously`: port ids) and gone now, is DOWN.
    """
    by_prefix = {p.id[:PORT_ID_CHARS]: p for p in ports.values()}
    members = _members(ports.values())
    status: dict[str, str] = {}
    filters: list[firewall.PortFilter] = []
    blocked: list[str] = []
    wired: dict[str, str] = {}
    for name in sorted(devices):
        if not name.startswith(DEVICE_PREFIX):
            continue  # uplinks, other hosts' veths: not ports
        device = devices[name]
        port = by_prefix.get(name[len(DEVICE_PREFIX):])
        ours = port is not None and (port.binding_host_id == host or (not port.binding_host_id and _trusted(port)))
        if port is None or not ours or not port.admin_state_up:
            blocked.append(name)
            if port is not None and ours:
                status[port.id] = "DOWN"
            continue
        wired[name] = port.id
        status[port.id] = "ACTIVE" if device.up else "DOWN"
        if _trusted(port):
            continue
        remote = sorted({ip for g in _groups(port) for ip in members.get((port.network_id, g), ())},
                        key=ipaddress.IPv4Address)
        filters.append(firewall.PortFilter(name, port.mac_address.lower(), _ipv4(port), tuple(remote),
                                           port.port_security_enabled))
    earlier = set(previously)
    for port in ports.values():
        if port.id not in status and (port.binding_host_id == host or port.id in earlier):
            status[port.id] = "DOWN"
    return HostPlan(status, tuple(filters), tuple(blocked), wired)


@dataclass
class _Counters:
    syncs: int = 0
    scans: int = 0
    status_writes: int = 0
    firewall_applies: int = 0
    errors: dict[str, str] = field(default_factory=dict)


class L2Agent:
    """A Service: the state reports, a watch on the mapped bridges and a mirror of the ports on their networks.

    Work is done by one task, woken by link events (the kernel's rtnetlink notifications: a device added,
    removed, up or down), by the change feed (a port created, updated or deleted on a mapped network) and by a
    slow timer for a full resync (which also repairs rules changed by hand). Each round dumps the links once,
    plans, writes only the statuses that differ from the registry's, and applies the firewall only when it
    changed. While the registry cannot be read, the dataplane stays as it is.
    """

    name = "L2 agent"

    def __init__(self, registry: Registry, *, host: str, bridge_mappings: Mapping[str, str],
                 report_interval: float = 30.0, resync_interval: float = 300.0) -> None:
        self.registry = registry
        self.host = host
        self.bridge_mappings = dict(bridge_mappings)
        self.bridges = sorted(set(self.bridge_mappings.values()))
        self.resync_interval = resync_interval
        self.areg = AsyncRegistry(registry, timeout=10.0, threads=2, name="l2-agent")
        self.reporter = StateReporter(registry, host, OVS_AGENT_TYPE, BINARY, self.configurations, report_interval)
        self.feed = ChangeFeed(registry, "agent feed")
        self.ports: dict[str, Port] = {}  # every port on a network whose physical network is mapped here
        self.networks: dict[str, Network] = {}  # the mapped networks
        self.unmapped: set[str] = set()  # networks known not to be mapped here (their ports' changes are skipped)
        self.plan: HostPlan | None = None
        self.applied: iptables.Ruleset | None = None
        self.missing_bridges: list[str] = []
        self.counters = _Counters()
        self._dirty_ports: set[str] = set()
        self._dirty_networks: set[str] = set()
        self._links_changed = True
        self._full = True
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._events: socket.socket | None = None  # rtnetlink link events, while there are bridges to watch
        self._worker: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None

    # --- the service --------------------------------------------------------------------------------------------
    def configurations(self) -> dict[str, Any]:
        conf = ovs_configurations(self.bridge_mappings)
        conf["devices"] = len(self.plan.wired) if self.plan else 0
        if self.missing_bridges:
            conf["missing_bridges"] = list(self.missing_bridges)
        if self.counters.errors:
            conf["errors"] = dict(sorted(self.counters.errors.items()))
        return conf

    async def start(self) -> None:
        await self.reporter.start()
        self.feed.subscribe(self)
        await self.feed.start()
        if self.bridges:
            self._events = netns.link_events()
            asyncio.get_running_loop().add_reader(self._events.fileno(), self._on_link_event)
        self._worker = asyncio.create_task(self._work())
        self._timer = asyncio.create_task(self._resync_timer())
        log.info("L2 agent on host %s: watching %s for %s<port id> devices", self.host,
                 ", ".join(f"{k}:{v}" for k, v in sorted(self.bridge_mappings.items())) or "no bridge",
                 DEVICE_PREFIX)

    async def stop(self) -> None:
        if self._events is not None:
            asyncio.get_running_loop().remove_reader(self._events.fileno())
            self._events.close()
            self._events = None
        for task in (self._timer, self._worker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self.feed.stop()
        await self.reporter.stop()  # statuses and rules stay: the VMs keep their network while the agent is away
        self.areg.close()

    async def settled(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._idle.wait(), timeout)

    # --- what wakes the worker ----------------------------------------------------------------------------------
    def _on_link_event(self) -> None:
        assert self._events is not None
        if netns.drain(self._events):
            self._links_changed = True
            self._kick()

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            # a port on a network not known yet is read too: the network's own change may be in this very batch,
            # or still being read, and its ports must not be lost meanwhile
            if change.kind == "port" and (change.network_id not in self.unmapped or change.id in self.ports):
                self._dirty_ports.add(change.id)
            elif change.kind == "network":
                self._dirty_networks.add(change.id)
            # not "agent": this agent's own reports (its device count) are changes too; nothing to redo for them
        if self._dirty_ports or self._dirty_networks or self._full:
            self._kick()

    def resync(self) -> None:
        self._full = True
        self._kick()

    def reload(self, config: Any) -> None:
        """SIGHUP: resync now (every port's status and rules checked against the registry and the devices)."""
        log.info("SIGHUP: resyncing every port now")
        self.resync()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval)
            self.resync()

    # --- the work -----------------------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            if not (self._full or self._dirty_ports or self._dirty_networks or self._links_changed):
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            full, self._full = self._full, False
            try:
                if full:
                    self._dirty_ports.clear()
                    self._dirty_networks.clear()
                    await self._read_all()
                else:
                    await self._read_changed()
            except Exception as exc:  # noqa: BLE001 - registry away: keep the dataplane, try again
                self._failed("registry", f"cannot read the registry ({exc}); keeping the dataplane as it is")
                self._full = True
                await asyncio.sleep(1.0)
                continue
            self.counters.errors.pop("registry", None)
            await self._reconcile(repair=full)

    def _failed(self, what: str, message: str) -> None:
        if self.counters.errors.get(what) != message:
            log.warning("%s", message)
            self.counters.errors[what] = message
            self.reporter.report_soon()

    async def _read_all(self) -> None:
        self.counters.syncs += 1
        networks = await self.areg(self.registry.list_networks)
        physnets = set(self.bridge_mappings)
        self.networks = {n.id: n for n in networks if n.physical_network in physnets}
        self.unmapped = {n.id for n in networks if n.id not in self.networks}
        ports: dict[str, Port] = {}
        if self.networks:
            for port in await self.areg(self.registry.list_ports, {"network_id": sorted(self.networks)}):
                ports[port.id] = port
        self.ports = ports
        self._links_changed = True

    async def _read_changed(self) -> None:
        networks, self._dirty_networks = self._dirty_networks, set()
        for network_id in sorted(networks):
            try:
                network = await self.areg(self.registry.get_network, network_id)
            except NotFound:
                self.networks.pop(network_id, None)
                self.unmapped.discard(network_id)
                continue
            if network.physical_network in self.bridge_mappings:
                self.networks[network.id] = network
                self.unmapped.discard(network.id)
            else:
                self.networks.pop(network.id, None)
                self.unmapped.add(network.id)
        ids, self._dirty_ports = sorted(self._dirty_ports), set()
        for i in range(0, len(ids), READ_CHUNK):
            chunk = ids[i:i + READ_CHUNK]
            found = {p.id: p for p in await self.areg(self.registry.list_ports, {"id": chunk})}
            for port_id in chunk:
                port = found.get(port_id)
                if port is not None and port.network_id in self.networks:
                    self.ports[port_id] = port
                else:
                    self.ports.pop(port_id, None)

    async def _reconcile(self, repair: bool) -> None:
        devices: dict[str, BridgePort] = {}
        if self.bridges:
            self._links_changed = False
            self.counters.scans += 1
            try:
                devices, missing = await asyncio.to_thread(netns.bridge_ports, None, self.bridges)
            except Exception as exc:  # noqa: BLE001 - netlink failing: said once, tried again at the next event
                self._failed("links", f"cannot list the bridges' devices: {exc}")
                return
            self.counters.errors.pop("links", None)
            if missing != self.missing_bridges:
                if missing:
                    log.error("bridge(s) %s of [ovs] bridge_mappings do not exist on this host: no port on them "
                              "can be wired until they do", ", ".join(missing))
                else:
                    log.info("every mapped bridge exists now")
                self.missing_bridges = missing
                self.reporter.report_soon()
        previous = self.plan
        # "previously": the ports wired here last round (not every port given a status: a port that left this
        # host is reported DOWN once, never again, or two hosts would overwrite each other's report forever)
        plan = plan_host(devices, self.ports, self.host, previous.wired.values() if previous else ())
        self.plan = plan
        await self._firewall(plan, repair)
        await self._statuses(plan)
        if previous is None or len(previous.wired) != len(plan.wired):
            self.reporter.report_soon()
        for device, port_id in plan.wired.items():
            if previous is None or previous.wired.get(device) != port_id:
                log.info("device %s is port %s: %s", device, port_id, plan.status[port_id])
        for device in set(previous.wired if previous else ()) - set(plan.wired):
            log.info("device %s is no longer wired here", device)

    async def _firewall(self, plan: HostPlan, repair: bool) -> None:
        ruleset = plan.ruleset()
        if ruleset == self.applied and not repair:
            return
        try:
            if plan.filters or plan.blocked:
                if self.applied is None or repair:
                    await asyncio.to_thread(_enable_bridge_netfilter)
                await asyncio.to_thread(iptables.apply, None, ruleset)
            else:  # nothing to filter: touch the tables only if rules of ours are left
                await asyncio.to_thread(iptables.remove, None, firewall.PREFIX)
        except Exception as exc:  # noqa: BLE001 - iptables failing: said once, retried at the next round
            self._failed("firewall", f"cannot apply the port firewall: {exc}")
            self.applied = None
            return
        self.counters.errors.pop("firewall", None)
        self.counters.firewall_applies += 1
        self.applied = ruleset

    async def _statuses(self, plan: HostPlan) -> None:
        for port_id, status in sorted(plan.status.items()):
            port = self.ports.get(port_id)
            if port is None or port.status == status:
                continue
            try:
                updated = await self.areg(self.registry.update_port_status, port_id, status, self.host)
            except NotFound:
                self.ports.pop(port_id, None)
                continue
            except Exception as exc:  # noqa: BLE001 - tried again at the next round
                self._failed("status", f"cannot report port {port_id} {status}: {exc}")
                self._dirty_ports.add(port_id)
                continue
            self.counters.errors.pop("status", None)
            self.counters.status_writes += 1
            self.ports[port_id] = updated


def _enable_bridge_netfilter() -> None:
    """Bridged traffic must pass iptables for the port firewall to see it (per network namespace)."""
    try:
        with open(BRIDGE_NF) as fh:
            if fh.read().strip() == "1":
                return
        with open(BRIDGE_NF, "w") as fh:
            fh.write("1\n")
    except FileNotFoundError:
        raise netns.DataplaneError(f"{BRIDGE_NF} is missing: load the br_netfilter module "
                                   "(modprobe br_netfilter) so the port firewall sees bridged traffic") from None


def l2_agent_from_config(config: Any, registry: Registry, host: str) -> L2Agent:
    return L2Agent(registry, host=host, bridge_mappings=config.get("ovs.bridge_mappings"),
                   report_interval=float(config.get("agent.report_interval")),
                   resync_interval=float(config.get("agent.resync_interval")))
