# The L3 agent's metadata rules for a qrouter- namespace (pure) and the router namespace's plumbing.
from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from provnet.dataplane import iptables, netns
from provnet.dataplane.iptables import Chain, Jump, Ruleset

PREFIX = "provnet-l3-"
METADATA_CIDR = "169.254.169.254/32"
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


def sync_router(router_id: str, ports: Sequence[RouterPort], metadata_port: int = DEFAULT_METADATA_PORT,
                suffix: str = "", bridge_namespace: str | None = None) -> bool:
    """Make `qrouter-<id><suffix>` hold exactly `ports` (qr- devices, MACs, addresses) and the metadata rules.

    Idempotent and adopting: an existing namespace is kept (never recreated), only what differs is changed.
    Bridges live in `bridge_namespace` (None: this process's own, as on a real host). True when the namespace
    had to be created.
    """
    ns = router_namespace(router_id, suffix)
    created = not netns.namespace_exists(ns)
    netns.ensure_namespace(ns)
    if created:  # metadata only: L3 goes through the external router, so this namespace never forwards
        netns.set_sysctl(ns, "net.ipv4.ip_forward", "0")
    wanted = {router_port_device(p.port_id) for p in ports}
    for name in netns.link_names(ns):
        if name.startswith("qr-") and name not in wanted:
            netns.delete_link(ns, name)  # its veth peer on the bridge goes with it
    for port in ports:
        device = router_port_device(port.port_id)
        if not netns.link_exists(bridge_namespace, port.bridge):
            raise netns.DataplaneError(f"bridge {port.bridge} does not exist on this host")
        netns.ensure_veth(bridge_namespace, bridge_port_device(port.port_id), ns, device, mac=port.mac)
        netns.attach_to_bridge(bridge_namespace, bridge_port_device(port.port_id), port.bridge)
        netns.set_addresses(ns, device, port.addresses)
    iptables.apply(ns, metadata_ruleset(metadata_port))
    return created


def remove_router(router_id: str, suffix: str = "") -> None:
    """The router's namespace with its qr- devices (their bridge ends go with them); a no-op when gone."""
    netns.delete_namespace(router_namespace(router_id, suffix))


def router_port_device(port_id: str) -> str:
    """`qr-` + the first 11 characters of the port id, as the L3 agent names router interfaces."""
    return f"qr-{port_id[:11]}"


def metadata_ruleset(metadata_port: int = DEFAULT_METADATA_PORT, mark: int = METADATA_ACCESS_MARK,
                     mask: int = MARK_MASK) -> Ruleset:
    """The L3 agent's rules: redirect 169.254.169.254:80 arriving on qr-+ to the proxy, and let only those in.

    nat PREROUTING REDIRECTs to `metadata_port`; mangle PREROUTING marks the same packets; filter INPUT accepts
    the mark and then drops any other TCP to `metadata_port`, so a direct connection to the proxy never gets
    through; marked packets are never forwarded.
    """
    if not 0 < metadata_port < 65536:
        raise ValueError(f"metadata_port must be 1..65535, got {metadata_port}")
    match = f"-d {METADATA_CIDR} -i qr-+ -p tcp -m tcp --dport 80"
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
    netns.ensure_namespace(ns)
    device = router_port_device(port_id)
    netns.ensure_veth(bridge_namespace, bridge_port, ns, device, mac=mac)
    netns.attach_to_bridge(bridge_namespace, bridge_port, bridge)
    netns.ensure_address(ns, device, gateway_ip, prefixlen)
    iptables.apply(ns, metadata_ruleset(metadata_port))
    return ns


def unplug_router(router_id: str) -> None:
    """Remove the router's rules and its namespace (with its qr- devices); a no-op when already gone."""
    ns = router_namespace(router_id)
    if netns.namespace_exists(ns):
        iptables.remove(ns, PREFIX)
        netns.delete_namespace(ns)
