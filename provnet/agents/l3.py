# `provnet l3-agent`: Neutron's L3 agent for provider networks. It hosts the routers the registry schedules to it
# (namespace, qr- devices on the mapped bridge, metadata rules, one metadata proxy each) and network mode's metadata
# namespaces (agents/metadata_ns.py), driven by the change feed.
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from provnet.agents.metadata_ns import MetadataNetworks
from provnet.agents.proxies import ProxyKeeper
from provnet.agents.report import StateReporter
from provnet.dataplane import arp, l3, metadata_ns, netns
from provnet.model.resources import L3_AGENT_TYPE, ROUTER_INTERFACE_OWNERS, Network, Port, Subnet
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed

log = logging.getLogger("provnet.l3_agent")
BINARY = "provnet-l3-agent"
MAX_UNIX_PATH = 107
RETRY = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before a router whose dataplane failed is tried again


class PlanError(ValueError):
    """What the registry asks for cannot be built on this host (no bridge mapping...); the message says why."""


@dataclass(frozen=True)
class RouterState:
    """What the registry says one hosted router needs: its interfaces, and the networks they are on."""

    router_id: str
    ports: tuple[Port, ...]
    networks: Mapping[str, Network]
    subnets: Mapping[str, Subnet]


def plan_router(state: RouterState, bridge_mappings: Mapping[str, str]) -> list[l3.RouterPort]:
    """The router's devices (pure): each interface port on the bridge its network's physical network maps to."""
    out = []
    for port in sorted(state.ports, key=lambda p: p.id):
        network = state.networks.get(port.network_id)
        if network is None:
            continue
        physnet = network.physical_network
        if network.network_type not in ("flat", "vlan") or not physnet:
            raise PlanError(f"network {network.id} is {network.network_type or 'not'} a provider network: "
                            "the L3 agent plugs routers into flat or vlan networks only")
        if network.network_type == "vlan":
            raise PlanError(f"network {network.id} is a VLAN network: not supported by provnet's L3 agent yet")
        bridge = bridge_mappings.get(physnet)
        if not bridge:
            raise PlanError(f"physical network {physnet} has no bridge on this host: set [ovs] bridge_mappings = "
                            f"{physnet}:<bridge>")
        addresses = []
        for fixed in port.fixed_ips:
            subnet = state.subnets.get(fixed.subnet_id)
            if subnet is None or subnet.ip_version != 4:
                continue
            plen = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
            addresses.append(f"{fixed.ip_address}/{plen}")
        out.append(l3.RouterPort(port.id, port.mac_address.lower(), tuple(addresses), bridge))
    return out


@dataclass
class _Hosted:
    namespace: str
    networks: frozenset[str] = frozenset()
    failures: int = 0
    error: str | None = None
    conflicts: dict[str, str] = field(default_factory=dict)  # IP -> what holds it too on the segment
    retry: asyncio.TimerHandle | None = field(default=None, repr=False)


class L3Agent:
    """A Service: reports itself, follows the feed, and keeps this host's routers as the registry says.

    Reconciliation is per router: a change to a router, to one of its interface ports, or to a network or subnet
    one of its ports is on, reconciles that router only. A full resync (which also repairs drift made by hand)
    runs at start, after the feed lost track, and every `resync_interval` seconds. While the registry cannot be
    read, nothing is removed: the dataplane stays as it is.
    """

    name = "L3 agent"

    def __init__(self, registry: Registry, *, host: str, bridge_mappings: Mapping[str, str], state_dir: str,
                 proxy_argv: ProxyArgv, metadata_port: int = l3.DEFAULT_METADATA_PORT,
                 namespace_suffix: str = "", report_interval: float = 30.0, resync_interval: float = 300.0,
                 proxy_env: dict[str, str] | None = None) -> None:
        self.registry = registry
        self.host = host
        self.bridge_mappings = dict(bridge_mappings)
        self.metadata_port = metadata_port
        self.suffix = namespace_suffix
        self.resync_interval = resync_interval
        self.proxy_argv = proxy_argv
        self.areg = AsyncRegistry(registry, timeout=10.0, threads=2, name="l3-agent")
        self.reporter = StateReporter(registry, host, L3_AGENT_TYPE, BINARY, self.configurations, report_interval)
        self.feed = ChangeFeed(registry, "l3-agent feed")
        self.proxies = ProxyKeeper(state_dir, env=proxy_env)
        self.hosted: dict[str, _Hosted] = {}
        self.problems: dict[str, str] = {}  # what is wrong, by router (reported in configurations)
        self.syncs = 0
        self.router_syncs = 0
        self._dirty: set[str] = set()
        self._full = True
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._timer: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._probes: set[asyncio.Task] = set()
        # ARP probes wait on the segment: threads of their own, so a burst's probes never queue its builds
        self._probe_pool = ThreadPoolExecutor(4, thread_name_prefix="arp-probe")
        self.networks = MetadataNetworks(registry, self.areg, self.proxies, host=host,
                                         bridge_mappings=lambda: self.bridge_mappings, suffix=namespace_suffix,
                                         proxy_argv=lambda net, bind: proxy_argv(net, network=True, bind=bind),
                                         kick=self._kick, report_soon=self.reporter.report_soon)

    # --- the service --------------------------------------------------------------------------------------------
    def configurations(self) -> dict[str, Any]:
        return {"agent_mode": "legacy", "routers": len(self.hosted), "router_ids": sorted(self.hosted),
                "metadata_networks": self.networks.serving(), "bridge_mappings": dict(self.bridge_mappings),
                "metadata_port": self.metadata_port, "namespace_suffix": self.suffix,
                "errors": dict(sorted({**self.problems, **self.networks.problems}.items()))}

    async def start(self) -> None:
        await self.reporter.start()
        self.feed.subscribe(self)
        await self.feed.start()
        self._worker = asyncio.create_task(self._work())
        self._timer = asyncio.create_task(self._resync_timer())
        log.info("L3 agent on host %s: bridges %s, metadata proxies on port %d%s", self.host,
                 ", ".join(f"{k}:{v}" for k, v in sorted(self.bridge_mappings.items())) or "none",
                 self.metadata_port, f", namespaces qrouter-<id>{self.suffix}" if self.suffix else "")

    async def stop(self) -> None:
        for task in (self._timer, self._worker, *self._probes):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        await self.feed.stop()
        await self.reporter.stop()
        for hosted in self.hosted.values():
            if hosted.retry is not None:
                hosted.retry.cancel()
        self.networks.close()
        self.proxies.close()  # the dataplane and the proxies stay: the next agent adopts them
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self.areg.close()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending (tests and the benchmark)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # --- the feed's subscriber ----------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind == "router":
                self._dirty.add(change.id)
            elif change.kind == "port":  # a router's interface port names the router (device_id, before and after)
                self._dirty.update(d for d in change.devices if d)
            elif change.kind in ("network", "subnet"):
                self._dirty.update(self._routers_on(change.network_id))
            self.networks.note(change)  # network mode: the network of a metadata port, or of a VM bound here
            # not "agent": this agent's own reports change its configurations (the routers it hosts), and a
            # router moved to or from it is a router change; a resync per report made a burst quadratic
        self._kick()

    def resync(self) -> None:
        self._full = True
        self._kick()

    def reload(self, config: Any) -> None:
        """SIGHUP: take [ovs] bridge_mappings and [l3_agent] resync_interval again, and resync now (what an
        operator does after fixing a host by hand, rather than wait for the timer)."""
        self.bridge_mappings = dict(config.get("ovs.bridge_mappings"))
        self.resync_interval = float(config.get("l3_agent.resync_interval"))
        log.info("SIGHUP: bridges %s; resyncing every router now",
                 ", ".join(f"{k}:{v}" for k, v in sorted(self.bridge_mappings.items())) or "none")
        self.resync()

    def _routers_on(self, network_id: str | None) -> list[str]:
        return [r for r, h in self.hosted.items() if network_id in h.networks] if network_id else []

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    # --- the work -----------------------------------------------------------------------------------------------
    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.resync_interval)
            self.resync()

    async def _work(self) -> None:
        while True:
            if not self._full and not self._dirty and not self.networks.dirty:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._full:
                self._full = False
                self._dirty.clear()
                await self._sync_all()
            else:
                if self._dirty:
                    batch, self._dirty = self._dirty, set()
                    await self._sync_some(batch)
                if self.networks.dirty:
                    await self.networks.sync_some(self.networks.take())

    async def _my_routers(self) -> set[str] | None:
        agent = self.reporter.agent
        if agent is None and not await self.reporter.report():
            return None
        agent = self.reporter.agent
        assert agent is not None
        try:
            return {r.id for r in await self.areg(self.registry.list_routers_on_l3_agent, agent.id)}
        except Exception as exc:  # noqa: BLE001 - unreachable registry: keep the dataplane as it is
            log.warning("cannot read the routers hosted here (%s); keeping the dataplane as it is", exc)
            self._full = True
            return None

    async def _sync_all(self) -> None:
        mine = await self._my_routers()
        if mine is None:
            await asyncio.sleep(1.0)  # the feed's own backoff will resync when the registry answers
            return
        self.syncs += 1
        local = set(await asyncio.to_thread(self._local_routers))
        for router_id in sorted(local | mine | set(self.hosted)):
            await self._sync_router(router_id, router_id in mine, repair=True)
        networks = await self.networks.sync_all(await asyncio.to_thread(self._local_networks))
        for key in self.proxies.orphans():
            if key not in mine and networks is not None and key not in networks:
                self.proxies.remove(key)
        self.reporter.report_soon()

    async def _sync_some(self, router_ids: Iterable[str]) -> None:
        ids = sorted(set(router_ids))
        mine = await self._my_routers()
        if mine is None:
            self._dirty.update(ids)
            await asyncio.sleep(1.0)
            return
        before = set(self.hosted)
        for router_id in ids:
            if router_id in mine or router_id in self.hosted:
                await self._sync_router(router_id, router_id in mine)
        if set(self.hosted) != before:
            self.reporter.report_soon()

    def _local_routers(self) -> list[str]:
        """Routers whose namespace exists here (this agent's suffix): the ones it may own."""
        out = []
        for name in netns.list_namespaces():
            if name.startswith(l3.NAMESPACE_PREFIX) and name.endswith(self.suffix):
                rid = name[len(l3.NAMESPACE_PREFIX):len(name) - len(self.suffix) if self.suffix else None]
                if rid and "@" not in rid:
                    out.append(rid)
        return out

    def _local_networks(self) -> list[str]:
        """Networks whose metadata namespace exists here (this agent's suffix)."""
        found = (metadata_ns.network_of(name, self.suffix) for name in netns.list_namespaces())
        return [n for n in found if n]

    async def _read_state(self, router_id: str) -> RouterState:
        ports = await self.areg(self.registry.list_ports, {"device_id": [router_id]})
        ports = [p for p in ports if p.device_owner in ROUTER_INTERFACE_OWNERS]
        networks: dict[str, Network] = {}
        subnets: dict[str, Subnet] = {}
        for port in ports:
            if port.network_id not in networks:
                networks[port.network_id] = await self.areg(self.registry.get_network, port.network_id)
            for fixed in port.fixed_ips:
                if fixed.subnet_id not in subnets:
                    subnets[fixed.subnet_id] = await self.areg(self.registry.get_subnet, fixed.subnet_id)
        return RouterState(router_id, tuple(ports), networks, subnets)

    async def _sync_router(self, router_id: str, wanted: bool, repair: bool = False) -> None:
        self.router_syncs += 1
        hosted = self.hosted.get(router_id)
        if not wanted:
            if hosted is not None and hosted.retry is not None:
                hosted.retry.cancel()
            self.hosted.pop(router_id, None)
            self.problems.pop(router_id, None)
            self.proxies.remove(router_id)
            await asyncio.to_thread(l3.remove_router, router_id, self.suffix)
            log.info("router %s is no longer hosted here: namespace and proxy removed", router_id)
            return
        try:
            state = await self._read_state(router_id)
        except Exception as exc:  # noqa: BLE001 - registry away: try this router again later, keep what is built
            log.warning("cannot read router %s (%s); keeping its dataplane, retrying", router_id, exc)
            self._retry_later(router_id, hosted)
            return
        ns = l3.router_namespace(router_id, self.suffix)
        if hosted is None:
            hosted = self.hosted[router_id] = _Hosted(ns)
        hosted.networks = frozenset(p.network_id for p in state.ports)
        try:
            plan = plan_router(state, self.bridge_mappings)
            synced = await asyncio.to_thread(l3.sync_router, router_id, plan, self.metadata_port, self.suffix)
        except Exception as exc:  # noqa: BLE001 - a missing bridge, a tool failing: said once, retried
            reason = str(exc) or type(exc).__name__
            if hosted.error != reason:
                log.error("router %s cannot be built on this host: %s", router_id, reason)
            hosted.error = reason
            self.problems[router_id] = reason
            self._retry_later(router_id, hosted)
            self.reporter.report_soon()
            return
        if hosted.error is not None:
            log.info("router %s is built now", router_id)
            hosted.error = None
            self._update_problem(router_id, hosted)
        hosted.failures = 0
        held = {ip for _device, _mac, ip in synced.addresses}
        if set(hosted.conflicts) - held:  # an address given up is in conflict no more
            hosted.conflicts = {ip: m for ip, m in hosted.conflicts.items() if ip in held}
            self._update_problem(router_id, hosted)
        targets = [a for a in synced.addresses if a[2] in synced.added or a[2] in hosted.conflicts]
        if targets:  # off the worker: building the next router does not wait for the segment's answers
            task = asyncio.create_task(self._probe(router_id, hosted, targets))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)
        created = synced.created
        if created:
            log.info("router %s: namespace %s with %d interface(s)", router_id, ns, len(plan))
        elif repair:
            log.debug("router %s checked", router_id)
        self.proxies.ensure(router_id, ns, self.proxy_argv(router_id))

    async def _probe(self, router_id: str, hosted: _Hosted, targets: Sequence[tuple[str, str, str]]) -> None:
        """An ARP probe per address the router took (or holds in conflict): another box on the segment answering
        for it is an address conflict, logged once and reported in configurations.errors until it is gone
        (probed again at each sync of the router, so a resync or SIGHUP clears it)."""
        for device, mac, ip in targets:
            try:
                holder = await asyncio.get_running_loop().run_in_executor(
                    self._probe_pool, arp.probe, hosted.namespace, device, mac, ip)
            except netns.DataplaneError as exc:
                log.warning("router %s: %s", router_id, exc)
                continue
            if holder:
                message = f"address {ip} of {device} is also held by {holder} on the segment (address conflict)"
                if hosted.conflicts.get(ip) != message:
                    log.error("router %s: %s", router_id, message)
                hosted.conflicts[ip] = message
            elif hosted.conflicts.pop(ip, None):
                log.info("router %s: address %s is no longer in conflict", router_id, ip)
        if self.hosted.get(router_id) is hosted:
            self._update_problem(router_id, hosted)

    def _update_problem(self, router_id: str, hosted: _Hosted) -> None:
        text = hosted.error or "; ".join(hosted.conflicts[ip] for ip in sorted(hosted.conflicts))
        if self.problems.get(router_id) == (text or None):
            return
        if text:
            self.problems[router_id] = text
        else:
            self.problems.pop(router_id, None)
        self.reporter.report_soon()

    def _retry_later(self, router_id: str, hosted: _Hosted | None) -> None:
        if hosted is None:
            hosted = self.hosted[router_id] = _Hosted(l3.router_namespace(router_id, self.suffix))
        if hosted.retry is not None:
            return
        delay = RETRY[min(hosted.failures, len(RETRY) - 1)]
        hosted.failures += 1

        def again() -> None:
            hosted.retry = None
            self._dirty.add(router_id)
            self._kick()

        hosted.retry = asyncio.get_running_loop().call_later(delay, again)


class ProxyArgv(Protocol):
    def __call__(self, key: str, network: bool = False, bind: str = "") -> list[str]: ...


def default_proxy_argv(state_path: str, socket_path: str, metadata_port: int, proxies_dir: str,
                       debug: bool = False) -> ProxyArgv:
    """The command line of router R's proxy (on `metadata_port`, behind the redirect), or of network N's (bound to
    `bind` port 80 itself): this interpreter's provnet, nothing but what the proxy needs (the proxy's own entry,
    not the CLI's: loading every verb cost ~1.1 CPU-s per proxy, 80 % of its start)."""
    def argv(key: str, network: bool = False, bind: str = "") -> list[str]:
        status = f"{proxies_dir}/{key[:13]}.sock"  # /metrics and /healthz, never reachable from VMs
        status_args = ["--status-socket", status] if len(status.encode()) <= MAX_UNIX_PATH else []
        who = ["--network-id", key, "--bind", bind, "--port", str(metadata_ns.METADATA_PORT)] if network else \
            ["--router-id", key, "--port", str(metadata_port)]
        return [sys.executable, "-m", "provnet.runtime.proxy_main", "--state-path", state_path,
                *(["--debug"] if debug else []), *who, "--socket", socket_path, *status_args]
    return argv


def l3_agent_from_config(config: Any, registry: Registry, host: str) -> L3Agent:
    """The agent as `provnet l3-agent` runs it: proxies reach this host's metadata agent socket, pid files and
    proxy logs under <state_path>/external, namespaces named with [l3_agent] namespace_suffix."""
    state_dir = f"{config.state_path}/external"
    port = config.metadata_port
    argv = default_proxy_argv(config.state_path, config.metadata_proxy_socket, port, state_dir, config.debug)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVNET_")}
    return L3Agent(registry, host=host, bridge_mappings=config.get("ovs.bridge_mappings"), state_dir=state_dir,
                   proxy_argv=argv, metadata_port=port, namespace_suffix=config.get("l3_agent.namespace_suffix"),
                   report_interval=float(config.get("agent.report_interval")),
                   resync_interval=float(config.get("l3_agent.resync_interval")), proxy_env=env)
