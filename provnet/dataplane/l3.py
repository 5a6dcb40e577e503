# The L3 agent's metadata rules for a qrouter- namespace (pure) and the router namespace's plumbing.
from __future__ import annotations

import ipaddress

from provnet.dataplane import iptables, netns
from provnet.dataplane.iptables import Chain, Jump, Ruleset

PREFIX = "provnet-l3-"
METADATA_CIDR = "169.254.169.254/32"
METADATA_ACCESS_MARK = 0x1
MARK_MASK = 0xFFFF  # neutron-lib ROUTER_MARK_MASK
DEFAULT_METADATA_PORT = 9697


def router_namespace(router_id: str) -> str:
    return f"qrouter-{router_id}"


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
