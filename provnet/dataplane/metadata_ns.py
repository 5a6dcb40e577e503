# Network mode's metadata namespace, `provnet-meta-<network>`: one device on the provider bridge holding the network's
# metadata port (its MAC, its fixed IPv4 addresses, 169.254.169.254/32, fe80::a9fe:a9fe/64); no rules, no forwarding.
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

from provnet.dataplane import l3, netns, ovs

log = logging.getLogger("provnet.l3_agent")
NAMESPACE_PREFIX = "provnet-meta-"
DEVICE_PREFIX = "ns-"  # the namespace's end, as Neutron's interface driver names a DHCP namespace's device
METADATA_IPV4 = "169.254.169.254"
METADATA_IPV6 = "fe80::a9fe:a9fe"
METADATA_PORT = 80  # the proxy listens on the metadata address itself: no redirect


def metadata_namespace(network_id: str, suffix: str = "") -> str:
    """`provnet-meta-<network id>` plus the agent's namespace suffix (several agents on one machine, as the lab)."""
    return f"{NAMESPACE_PREFIX}{network_id}{suffix}"


def metadata_port_device(port_id: str) -> str:
    """The namespace's device: `ns-` + the first 11 characters of the metadata port's id (its bridge end is
    `tap` + the same, so the host's L2 agent sees a network-owned port, as it sees a router's)."""
    return f"{DEVICE_PREFIX}{port_id[:11]}"


def network_of(namespace: str, suffix: str = "") -> str | None:
    """The network id a namespace of this agent (its suffix) is named after, or None if it is not one."""
    if not namespace.startswith(NAMESPACE_PREFIX) or not namespace.endswith(suffix):
        return None
    network_id = namespace[len(NAMESPACE_PREFIX):len(namespace) - len(suffix) if suffix else None]
    return network_id if network_id and "@" not in network_id else None


@dataclass(frozen=True)
class MetadataDevice:
    """What a network's namespace holds: the metadata port's id and MAC, its IPv4 addresses (`ip/prefixlen`,
    169.254.169.254/32 among them), whether it holds fe80::a9fe:a9fe/64 too, and the bridge it is plugged into."""

    port_id: str
    mac: str
    addresses: tuple[str, ...]
    ipv6: bool
    bridge: str

    @property
    def device(self) -> str:
        return metadata_port_device(self.port_id)


@dataclass(frozen=True)
class Synced:
    """What `sync_network` did: the namespace created, the device (re)created (a proxy bound to an address scoped
    to the old device serves nothing any more), and whether its bridge is Open vSwitch."""

    created: bool
    device_created: bool
    ovs: bool = False


def sync_network(network_id: str, want: MetadataDevice, suffix: str = "",
                 bridge_namespace: str | None = None) -> Synced:
    """Make `provnet-meta-<network><suffix>` hold exactly `want`. Idempotent and adopting: an existing namespace is
    kept, only what differs is changed. Bridges live in `bridge_namespace` (None: this process's own)."""
    ns = metadata_namespace(network_id, suffix)
    if not netns.link_exists(bridge_namespace, want.bridge):
        raise netns.DataplaneError(f"bridge {want.bridge} does not exist on this host")
    created = not netns.namespace_exists(ns)
    netns.ensure_namespace(ns)
    if created:
        _quiet_ipv6(ns)
    gone = [n for n in netns.link_names(ns) if n.startswith(DEVICE_PREFIX) and n != want.device]
    for name in gone:  # the metadata port was replaced: its old device goes (with its veth peer on the bridge)
        netns.delete_link(ns, name)
    ovs.unplug([f"tap{name[len(DEVICE_PREFIX):]}" for name in gone])
    device_created = not netns.link_exists(ns, want.device)
    tap = l3.bridge_port_device(want.port_id)
    netns.ensure_veth(bridge_namespace, tap, ns, want.device, mac=want.mac)
    on_ovs = bridge_namespace is None and l3.bridge_is_ovs(want.bridge)
    if on_ovs:
        ovs.plug(want.bridge, tap, want.port_id, want.mac)
    else:
        netns.attach_to_bridge(bridge_namespace, tap, want.bridge)
    netns.set_addresses(ns, want.device, want.addresses)
    netns.set_ipv6_address(ns, want.device, METADATA_IPV6, 64, want.ipv6)
    return Synced(created, device_created, on_ovs)


def _quiet_ipv6(ns: str) -> None:
    """Before the device comes: it takes no address from the external router's advertisements, and no duplicate
    address detection (every host with VMs on the network holds the same MAC and addresses, as OVN's localport).
    Best effort: a host without IPv6 has nothing to quiet."""
    settings = [f"net.ipv6.conf.default.{key}=0" for key in ("accept_ra", "autoconf", "accept_dad")]
    proc = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings], capture_output=True,
                          text=True, timeout=10)
    if proc.returncode != 0:
        log.warning("namespace %s: %s: %s", ns, " ".join(settings), proc.stderr.strip() or proc.returncode)


def remove_network(network_id: str, suffix: str = "") -> bool:
    """The namespace with its device (the bridge end goes with it, and its Open vSwitch record); a no-op when gone.
    Whether there was one."""
    ns = metadata_namespace(network_id, suffix)
    if not netns.namespace_exists(ns):
        return False
    inside = [n for n in netns.link_names(ns) if n.startswith(DEVICE_PREFIX)]
    for name in inside:  # now: a namespace is freed only when its last process (the proxy) has exited
        netns.delete_link(ns, name)
    netns.delete_namespace(ns)
    devices = [f"tap{n[len(DEVICE_PREFIX):]}" for n in inside]
    ovs.unplug(devices)
    return True
