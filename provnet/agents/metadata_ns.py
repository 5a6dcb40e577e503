# The L3 agent's network mode: for each network with a metadata port and a VM bound to this host, the namespace
# `provnet-meta-<network>` with the port's device on the provider bridge and one proxy bound to 169.254.169.254:80.
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from provnet.agents.proxies import ProxyKeeper
from provnet.dataplane import l3, localport, metadata_ns
from provnet.model.errors import NotFound
from provnet.model.resources import METADATA_PORT_OWNER, Network, Port, Subnet, metadata_device_id
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change

log = logging.getLogger("provnet.l3_agent")
RETRY = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before a network whose namespace failed is tried again
VM_OWNER_PREFIX = "compute:"  # Nova's ports (compute:nova, compute:<zone>)
KERNEL_IPV6 = os.path.exists("/proc/sys/net/ipv6")  # absent when booted with ipv6.disable=1


class PlanError(ValueError):
    """The network's namespace cannot be built on this host (no bridge mapping...); the message says why."""


@dataclass(frozen=True)
class NetworkState:
    """What the registry says about one network, as far as this host's metadata namespace goes."""

    network: Network
    metadata_ports: tuple[Port, ...]
    subnets: Mapping[str, Subnet]
    vms_here: int


def is_metadata_port(port: Port) -> bool:
    """The registry's metadata port of its network: its owner and the device_id naming the network. Another
    port a user gave that owner is not one: it makes no host answer for its address."""
    return port.device_owner == METADATA_PORT_OWNER and port.device_id == metadata_device_id(port.network_id)


def metadata_port_of(state: NetworkState) -> Port | None:
    """The network's metadata port (the first by id, should there be several), or None (pure)."""
    ports = sorted((p for p in state.metadata_ports if is_metadata_port(p)), key=lambda p: p.id)
    return ports[0] if ports else None


def plan_network(state: NetworkState, bridge_mappings: Mapping[str, str],
                 ipv6: bool = True) -> metadata_ns.MetadataDevice | None:
    """The namespace's device (pure), or None when this host needs none (no metadata port, no VM bound here).
    `ipv6`: whether the kernel has IPv6 (a host booted with ipv6.disable=1 still serves IPv4)."""
    port = metadata_port_of(state)
    if port is None or state.vms_here == 0:
        return None
    network = state.network
    physnet = network.physical_network
    if network.network_type not in ("flat", "vlan") or not physnet:
        raise PlanError(f"network {network.id} is {network.network_type or 'not'} a provider network: network "
                        "mode serves flat networks only")
    if network.network_type == "vlan":
        raise PlanError(f"network {network.id} is a VLAN network: not supported by provnet's L3 agent yet")
    bridge = bridge_mappings.get(physnet)
    if not bridge:
        raise PlanError(f"physical network {physnet} has no bridge on this host: set [ovs] bridge_mappings = "
                        f"{physnet}:<bridge>")
    addresses = []
    for fixed in port.fixed_ips:
        subnet = state.subnets.get(fixed.subnet_id)
        if subnet is not None and subnet.ip_version == 4:
            plen = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
            addresses.append(f"{fixed.ip_address}/{plen}")
    addresses.append(f"{metadata_ns.METADATA_IPV4}/32")
    with_v6 = ipv6 and any(s.ip_version == 6 for s in state.subnets.values())
    return metadata_ns.MetadataDevice(port.id, port.mac_address.lower(), tuple(addresses), with_v6, bridge)


def proxy_bind(want: metadata_ns.MetadataDevice) -> str:
    """The proxy's addresses: 169.254.169.254, and fe80::a9fe:a9fe scoped to the device when it holds it."""
    if want.ipv6:
        return f"{metadata_ns.METADATA_IPV4},{metadata_ns.METADATA_IPV6}%{want.device}"
    return metadata_ns.METADATA_IPV4


@dataclass
class _Served:
    namespace: str
    failures: int = 0
    error: str | None = None
    local: tuple[str, str] | None = None  # (bridge device, MAC) kept to this host by ebtables (Linux bridges)
    built: bool = False
    retry: asyncio.TimerHandle | None = field(default=None, repr=False)


class MetadataNetworks:
    """Keeps this host's metadata namespaces as the registry says; the L3 agent feeds it changes and runs it.

    A change to a network, a subnet or a port reconciles that network only, and only if it may concern this host:
    a network known to have a metadata port, one served here, or the metadata port itself (its device_id names
    the network). Nothing is removed while the registry cannot be read.
    """

    def __init__(self, registry: Registry, areg: AsyncRegistry, proxies: ProxyKeeper, *, host: str,
                 bridge_mappings: Callable[[], Mapping[str, str]], suffix: str,
                 proxy_argv: Callable[[str, str], list[str]], kick: Callable[[], None],
                 report_soon: Callable[[], None]) -> None:
        self.registry = registry
        self.areg = areg
        self.proxies = proxies
        self.host = host
        self.bridge_mappings = bridge_mappings
        self.suffix = suffix
        self.proxy_argv = proxy_argv
        self.kick = kick
        self.report_soon = report_soon
        self.served: dict[str, _Served] = {}
        self.problems: dict[str, str] = {}
        self.known: set[str] = set()  # networks with a metadata port, as last read
        self.dirty: set[str] = set()
        self.syncs = 0
        self._local: list[tuple[str, str]] | None = None  # the localport rules as last applied

    def note(self, change: Change) -> None:
        """A change from the feed: mark the network it touches when it may concern this host."""
        nid = change.network_id
        if not nid or change.kind not in ("network", "subnet", "port"):
            return
        if nid in self.served or nid in self.known or metadata_device_id(nid) in change.devices:
            self.dirty.add(nid)

    def serving(self) -> list[str]:
        """The networks whose namespace is built here (reported in configurations.metadata_networks)."""
        return sorted(n for n, s in self.served.items() if s.built and s.error is None)

    def take(self) -> list[str]:
        batch, self.dirty = sorted(self.dirty), set()
        return batch

    def close(self) -> None:
        for served in self.served.values():
            if served.retry is not None:
                served.retry.cancel()

    # --- reading ------------------------------------------------------------------------------------------------
    async def _wanted(self) -> set[str]:
        """Networks this host serves: a metadata port, and a VM port bound here."""
        meta = await self.areg(self.registry.list_ports, {"device_owner": [METADATA_PORT_OWNER]})
        here = await self.areg(self.registry.list_ports, {"binding:host_id": [self.host]})
        self.known = {p.network_id for p in meta if is_metadata_port(p)}
        return self.known & {p.network_id for p in here if p.device_owner.startswith(VM_OWNER_PREFIX)}

    async def _read(self, network_id: str) -> NetworkState | None:
        meta = await self.areg(self.registry.list_ports, {"network_id": [network_id],
                                                          "device_owner": [METADATA_PORT_OWNER]})
        if not any(is_metadata_port(p) for p in meta):
            self.known.discard(network_id)
            return None
        self.known.add(network_id)
        here = await self.areg(self.registry.list_ports, {"network_id": [network_id],
                                                          "binding:host_id": [self.host]})
        vms = sum(1 for p in here if p.device_owner.startswith(VM_OWNER_PREFIX))
        if not vms:
            return None
        try:
            network = await self.areg(self.registry.get_network, network_id)
        except NotFound:  # deleted meanwhile: its ports go with it
            return None
        subnets = await self.areg(self.registry.list_subnets, {"network_id": [network_id]})
        return NetworkState(network, tuple(meta), {s.id: s for s in subnets}, vms)

    # --- reconciling --------------------------------------------------------------------------------------------
    async def sync_all(self, local: Iterable[str]) -> set[str] | None:
        """Every network served here, those whose namespace exists and those served before (repairing drift);
        the networks served, or None when the registry could not be read (then nothing was changed)."""
        try:
            wanted = await self._wanted()
        except Exception as exc:  # noqa: BLE001 - unreachable registry: keep the dataplane as it is
            log.warning("cannot read the networks served here (%s); keeping their namespaces as they are", exc)
            return None
        self.syncs += 1
        self.dirty -= wanted | set(local) | set(self.served)
        for network_id in sorted(wanted | set(local) | set(self.served)):
            await self.sync(network_id, repair=True)
        await self._keep_local(force=True)
        return wanted

    async def sync_some(self, network_ids: Sequence[str]) -> None:
        before = set(self.served)
        for network_id in network_ids:
            await self.sync(network_id)
        await self._keep_local()
        if set(self.served) != before:
            self.report_soon()

    async def sync(self, network_id: str, repair: bool = False) -> None:
        served = self.served.get(network_id)
        try:
            state = await self._read(network_id)
        except Exception as exc:  # noqa: BLE001 - registry away: try again later, keep what is built
            log.warning("cannot read network %s (%s); keeping its metadata namespace, retrying", network_id, exc)
            self._retry_later(network_id, served)
            return
        try:
            want = plan_network(state, self.bridge_mappings(), KERNEL_IPV6) if state is not None else None
        except PlanError as exc:
            self._failed(network_id, served, str(exc))
            return
        if want is None:
            if served is not None or repair:
                await self._remove(network_id, served)
            return
        ns = metadata_ns.metadata_namespace(network_id, self.suffix)
        if served is None:
            served = self.served[network_id] = _Served(ns)
        local = (l3.bridge_port_device(want.port_id), want.mac)
        if served.local != local:  # kept to this host before it is plugged: its first frames never leave either
            served.local = local
            await self._keep_local()
        try:
            synced = await asyncio.to_thread(metadata_ns.sync_network, network_id, want, self.suffix)
        except Exception as exc:  # noqa: BLE001 - a missing bridge, a tool failing: said once, retried
            self._failed(network_id, served, str(exc) or type(exc).__name__)
            return
        if served.error is not None:
            log.info("network %s: metadata namespace built now", network_id)
            served.error = None
            self.problems.pop(network_id, None)
            self.report_soon()
        served.failures = 0
        if not served.built:
            served.built = True
            self.report_soon()
        if synced.ovs:  # Open vSwitch does not pass through ebtables (its flows would have to do it: not yet)
            served.local = None
        if synced.created:
            log.info("network %s: namespace %s, device %s (%s)", network_id, ns, want.device,
                     ", ".join(want.addresses) + (f", {metadata_ns.METADATA_IPV6}/64" if want.ipv6 else ""))
        elif synced.device_created:  # a proxy bound to an address of the old device would serve nothing
            log.warning("network %s: device %s was gone and is made again; restarting its proxy", network_id,
                        want.device)
            await self.proxies.stop(network_id)
        self.proxies.ensure(network_id, ns, self.proxy_argv(network_id, proxy_bind(want)))

    async def _keep_local(self, force: bool = False) -> None:
        """Every served device on a Linux bridge kept to this host (localport rules), when they changed or on a
        full resync (which repairs rules removed by hand). A failure is reported under `localport`."""
        devices = sorted(s.local for s in self.served.values() if s.local)
        if devices == self._local and not force:
            return
        try:
            if not await asyncio.to_thread(localport.apply, devices) and devices:
                raise RuntimeError("ebtables is not installed: with several hosts on the segment, their metadata "
                                   "namespaces answer each other's VMs")
        except Exception as exc:  # noqa: BLE001 - said, reported, tried again at the next change or resync
            reason = str(exc) or type(exc).__name__
            if self.problems.get("localport") != reason:
                log.error("metadata namespaces cannot be kept to this host: %s", reason)
                self.problems["localport"] = reason
                self.report_soon()
            self._local = None
            return
        self._local = devices
        if self.problems.pop("localport", None) is not None:
            self.report_soon()

    async def _remove(self, network_id: str, served: _Served | None) -> None:
        if served is not None and served.retry is not None:
            served.retry.cancel()
        self.served.pop(network_id, None)
        if self.problems.pop(network_id, None) is not None:
            self.report_soon()
        ns = metadata_ns.metadata_namespace(network_id, self.suffix)
        self.proxies.remove(network_id)
        existed = await asyncio.to_thread(metadata_ns.remove_network, network_id, self.suffix)
        if existed:
            log.info("network %s is no longer served here: namespace %s and its proxy removed", network_id, ns)

    def _failed(self, network_id: str, served: _Served | None, reason: str) -> None:
        if served is None:
            served = self.served[network_id] = _Served(metadata_ns.metadata_namespace(network_id, self.suffix))
        if served.error != reason:
            log.error("network %s: metadata namespace cannot be built on this host: %s", network_id, reason)
        served.error = reason
        self.problems[network_id] = reason
        self._retry_later(network_id, served)
        self.report_soon()

    def _retry_later(self, network_id: str, served: _Served | None) -> None:
        if served is None:
            served = self.served[network_id] = _Served(metadata_ns.metadata_namespace(network_id, self.suffix))
        if served.retry is not None:
            return
        delay = RETRY[min(served.failures, len(RETRY) - 1)]
        served.failures += 1

        def again() -> None:
            served.retry = None
            self.dirty.add(network_id)
            self.kick()

        served.retry = asyncio.get_running_loop().call_later(delay, again)
