# `provnet l3-agent`: Neutron's L3 agent for provider networks. It hosts the routers the registry schedules to it
# (namespace, qr- devices on the mapped bridge, metadata rules, one metadata proxy each), driven by the change feed.
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provnet.agents.proxies import ProxyKeeper
from provnet.agents.report import StateReporter
from provnet.dataplane import l3, netns
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
                 proxy_argv: Callable[[str], list[str]], metadata_port: int = l3.DEFAULT_METADATA_PORT,
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

    # --- the service --------------------------------------------------------------------------------------------
    def configurations(self) -> dict[str, Any]:
        return {"agent_mode": "legacy", "routers": len(self.hosted), "router_ids": sorted(self.hosted),
                "bridge_mappings": dict(self.bridge_mappings), "metadata_port": self.metadata_port,
                "namespace_suffix": self.suffix, "errors": dict(sorted(self.problems.items()))}

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
        for task in (self._timer, self._worker):
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
        self.proxies.close()  # the dataplane and the proxies stay: the next agent adopts them
        self.areg.close()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending (tests and the benchmark)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # --- the feed's subscriber ----------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind == "router":
                self._dirty.add(change.id)
            elif change.kind == "port":
                self._dirty.update(d for d in change.devices if d)
                self._dirty.update(self._routers_on(change.network_id))
            elif change.kind in ("network", "subnet"):
                self._dirty.update(self._routers_on(change.network_id))
            elif change.kind == "agent" and self.reporter.agent is not None and change.id == self.reporter.agent.id:
                self._full = True
        self._kick()

    def resync(self) -> None:
        self._full = True
        self._kick()

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
            if not self._full and not self._dirty:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            if self._full:
                self._full = False
                self._dirty.clear()
                await self._sync_all()
            elif self._dirty:
                batch, self._dirty = self._dirty, set()
                await self._sync_some(batch)

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
        for key in self.proxies.orphans():
            if key not in mine:
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
            created = await asyncio.to_thread(l3.sync_router, router_id, plan, self.metadata_port, self.suffix)
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
            self.problems.pop(router_id, None)
            self.reporter.report_soon()
        hosted.error, hosted.failures = None, 0
        if created:
            log.info("router %s: namespace %s with %d interface(s)", router_id, ns, len(plan))
        elif repair:
            log.debug("router %s checked", router_id)
        self.proxies.ensure(router_id, ns, self.proxy_argv(router_id))

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


def default_proxy_argv(state_path: str, socket_path: str, metadata_port: int, proxies_dir: str,
                       debug: bool = False) -> Callable[[str], list[str]]:
    """The command line of router R's proxy: this interpreter's provnet, nothing but what the proxy needs."""
    def argv(router_id: str) -> list[str]:
        status = f"{proxies_dir}/{router_id[:13]}.sock"  # /metrics and /healthz, never reachable from VMs
        return [sys.executable, "-m", "provnet.cli", "--state-path", state_path, *(["--debug"] if debug else []),
                "metadata-proxy", "--router-id", router_id, "--port", str(metadata_port), "--socket", socket_path,
                *(["--status-socket", status] if len(status.encode()) <= MAX_UNIX_PATH else [])]
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
