# The L3 agent's metadata rules for a qrouter- namespace (pure) and the router namespace's plumbing.
from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

from provnet.dataplane import iptables, netns, ovs
from provnet.dataplane.iptables import Chain, Jump, Ruleset

PREFIX = "provnet-l3-"
METADATA_CIDR = "169.254.169.254/32"
METADATA_V6_IP = "fe80::a9fe:a9fe"  # neutron-lib's METADATA_V6_IP: on every qr- device, /64 as the L3 agent adds it
METADATA_V6_CIDR = "fe80::a9fe:a9fe/128"
METADATA_ACCESS_MARK = 0x1
MARK_MASK = 0xFFFF  # neutron-lib ROUTER_MARK_MASK
DEFAULT_METADATA_PORT = 9697


NAMESPACE_PREFIX = "qrouter-"


def router_namespace(router_id: str, suffix: str = "") -> str:
    """`qrouter-<id>`; `suffix` (e.g. `@host1`) lets several agents share one machine, as in the lab."""
    return f"{NAMESPACE_PREFIX}{router_id}{suffix}"


def bridge_port_device(port_id: str) -> str:
    """The bridge-side end of a router port's veth: `tap` + 11 characters of the port id, as Neutron's Linux
    bridge agent names it (so the host's L2 agent sees it like any port)."""
    return f"tap{port_id[:11]}"


@dataclass(frozen=True)
class RouterPort:
    """One interface of a router as the dataplane needs it: its MAC, its addresses (`ip/prefixlen`) and the
    bridge of its network's physical network."""

    port_id: str
    mac: str
    addresses: tuple[str, ...]
    bridge: str


@dataclass(frozen=True)
class Synced:
    """What `sync_router` did: whether the namespace was created, and the addresses it holds (device, MAC, IP),
    with the IPs it had to add (the ones whose conflict on the segment is worth a probe)."""

    created: bool
    addresses: tuple[tuple[str, str, str], ...] = ()
    added: frozenset[str] = frozenset()


def sync_router(router_id: str, ports: Sequence[RouterPort], metadata_port: int = DEFAULT_METADATA_PORT,
                suffix: str = "", bridge_namespace: str | None = None) -> Synced:
    """Make `qrouter-<id><suffix>` hold exactly `ports` (qr- devices, MACs, addresses) and the metadata rules.

    Idempotent and adopting: an existing namespace is kept (never recreated), only what differs is changed.
    Bridges live in `bridge_namespace` (None: this process's own, as on a real host).
    """
    ns = router_namespace(router_id, suffix)
    created = not netns.namespace_exists(ns)
    netns.ensure_namespace(ns)
    if created:  # metadata only: L3 goes through the external router, so this namespace never forwards
        netns.set_sysctl(ns, "net.ipv4.ip_forward", "0")
        _no_ipv6_autoconf(ns)
    wanted = {router_port_device(p.port_id) for p in ports}
    gone = [name for name in netns.link_names(ns) if name.startswith("qr-") and name not in wanted]
    for name in gone:
        netns.delete_link(ns, name)  # its veth peer on the bridge goes with it
    ovs.unplug([f"tap{name[3:]}" for name in gone])  # and its record, if the bridge was Open vSwitch
    kinds: dict[str, bool] = {}
    addresses: list[tuple[str, str, str]] = []
    added: set[str] = set()
    for port in ports:
        device = router_port_device(port.port_id)
        if not netns.link_exists(bridge_namespace, port.bridge):
            raise netns.DataplaneError(f"bridge {port.bridge} does not exist on this host")
        if port.bridge not in kinds:
            kinds[port.bridge] = bridge_namespace is None and bridge_is_ovs(port.bridge)
        tap = bridge_port_device(port.port_id)
        netns.ensure_veth(bridge_namespace, tap, ns, device, mac=port.mac)
        if kinds[port.bridge]:
            ovs.plug(port.bridge, tap, port.port_id, port.mac)
        else:
            netns.attach_to_bridge(bridge_namespace, tap, port.bridge)
        added.update(netns.set_addresses(ns, device, port.addresses))
        addresses += [(device, port.mac, a.partition("/")[0]) for a in port.addresses]
        if ipv6_available():
            netns.ensure_address(ns, device, METADATA_V6_IP, 64)
    apply_metadata_rules(ns, metadata_port)
    return Synced(created, tuple(addresses), frozenset(added))


def bridge_is_ovs(bridge: str) -> bool:
    """A Linux bridge (False), an Open vSwitch bridge (True), or an error saying it is neither."""
    if netns.link_kind(None, bridge) == "bridge":
        return False
    if ovs.is_bridge(bridge):
        return True
    raise netns.DataplaneError(f"{bridge} is neither a Linux bridge nor an Open vSwitch bridge")


def ipv6_available() -> bool:
    """Whether this kernel has IPv6 (not booted with ipv6.disable=1): without it, router mode is IPv4 only."""
    return os.path.isdir("/proc/sys/net/ipv6")


def _no_ipv6_autoconf(ns: str) -> None:
    """qr- devices made from now on take no address or route from the segment's router advertisements (the
    namespace only answers metadata; fe80::a9fe:a9fe and the device's own link-local address are enough)."""
    if not ipv6_available():
        return
    netns.set_sysctl(ns, "net.ipv6.conf.default.accept_ra", "0")
    netns.set_sysctl(ns, "net.ipv6.conf.default.autoconf", "0")


def apply_metadata_rules(ns: str, metadata_port: int = DEFAULT_METADATA_PORT) -> None:
    """The metadata rules in iptables (169.254.169.254) and ip6tables (fe80::a9fe:a9fe); idempotent."""
    iptables.apply(ns, metadata_ruleset(metadata_port))
    if ipv6_available():
        iptables.apply(ns, metadata_ruleset(metadata_port, ipv6=True), ipv6=True)


def remove_router(router_id: str, suffix: str = "") -> None:
    """The router's namespace with its qr- devices (their bridge ends go with them, and their Open vSwitch
    records); a no-op when gone."""
    ns = router_namespace(router_id, suffix)
    devices = [f"tap{n[3:]}" for n in netns.link_names(ns) if n.startswith("qr-")] if netns.namespace_exists(ns) \
        else []
    netns.delete_namespace(ns)
    ovs.unplug(devices)


def router_port_device(port_id: str) -> str:
    """`qr-` + the first 11 characters of the port id, as the L3 agent names router interfaces."""
    return f"qr-{port_id[:11]}"


def metadata_ruleset(metadata_port: int = DEFAULT_METADATA_PORT, mark: int = METADATA_ACCESS_MARK,
                     mask: int = MARK_MASK, ipv6: bool = False) -> Ruleset:
    """The L3 agent's rules: redirect 169.254.169.254:80 arriving on qr-+ to the proxy, and let only those in.

    nat PREROUTING REDIRECTs to `metadata_port`; mangle PREROUTING marks the same packets; filter INPUT accepts
    the mark and then drops any other TCP to `metadata_port`, so a direct connection to the proxy never gets
    through; marked packets are never forwarded. With `ipv6`, the same for ip6tables and [fe80::a9fe:a9fe]:80
    (the proxy must listen on :: too).
    """
    if not 0 < metadata_port < 65536:
        raise ValueError(f"metadata_port must be 1..65535, got {metadata_port}")
    match = f"-d {METADATA_V6_CIDR if ipv6 else METADATA_CIDR} -i qr-+ -p tcp -m tcp --dport 80"
    xmark = f"{mark:#x}/{mask:#x}"
    chains = (
        Chain("nat", f"{PREFIX}PREROUTING", (f"{match} -j REDIRECT --to-ports {metadata_port}",)),
        Chain("mangle", f"{PREFIX}PREROUTING", (f"{match} -j MARK --set-xmark {xmark}",)),
        Chain("filter", f"{PREFIX}INPUT", (
            f"-m mark --mark {xmark} -j ACCEPT",
            f"-p tcp -m tcp --dport {metadata_port} -j DROP",
        )),
        Chain("filter", f"{PREFIX}scope", (f"-m mark --mark {xmark} -j DROP",)),
    )
    jumps = (
        Jump("nat", "PREROUTING", f"{PREFIX}PREROUTING"),
        Jump("mangle", "PREROUTING", f"{PREFIX}PREROUTING"),
        Jump("filter", "INPUT", f"{PREFIX}INPUT"),
        Jump("filter", "FORWARD", f"{PREFIX}scope"),
    )
    return Ruleset(PREFIX, chains, jumps)


def plug_router_port(router_id: str, port_id: str, mac: str, cidr: str, gateway_ip: str,
                     bridge_namespace: str, bridge: str, bridge_port: str,
                     metadata_port: int = DEFAULT_METADATA_PORT) -> str:
    """Create `qrouter-<router_id>` with `qr-<port>` (gateway_ip, MAC) on `bridge`, and its metadata rules.

    `bridge_port` names the bridge-side end of the veth (in `bridge_namespace`). Idempotent. Returns the
    namespace name.
    """
    ns = router_namespace(router_id)
    prefixlen = ipaddress.ip_network(cidr, strict=False).prefixlen
    created = not netns.namespace_exists(ns)
    netns.ensure_namespace(ns)
    if created:
        _no_ipv6_autoconf(ns)
    device = router_port_device(port_id)
    netns.ensure_veth(bridge_namespace, bridge_port, ns, device, mac=mac)
    netns.attach_to_bridge(bridge_namespace, bridge_port, bridge)
    netns.ensure_address(ns, device, gateway_ip, prefixlen)
    if ipv6_available():
        netns.ensure_address(ns, device, METADATA_V6_IP, 64)
    apply_metadata_rules(ns, metadata_port)
    return ns


def unplug_router(router_id: str) -> None:
    """Remove the router's rules and its namespace (with its qr- devices); a no-op when already gone."""
    ns = router_namespace(router_id)
    if netns.namespace_exists(ns):
        iptables.remove(ns, PREFIX)
        if ipv6_available():
            iptables.remove(ns, PREFIX, ipv6=True)
        netns.delete_namespace(ns)
