# Network namespaces, links, addresses and routes with pyroute2; every call idempotent, every removal complete.
from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2 import netns as _netns

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class DataplaneError(RuntimeError):
    """A namespace, link, address or route operation failed; the message names the object."""


def list_namespaces() -> list[str]:
    return sorted(_netns.listnetns())


def namespace_exists(name: str | None) -> bool:
    """None is this process's own namespace (a host agent's), which always exists."""
    return name is None or os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise DataplaneError(f"setns into {what}: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move the calling thread into namespace `name` for good (a worker thread that makes its sockets there)."""
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataplaneError(f"network namespace {name} does not exist") from None
    try:
        _setns(target, name)
    finally:
        os.close(target)


def _netlink_socket(name: str) -> socket.socket:
    return socket_in(name, socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of namespace `name`: this thread enters it, opens the socket, comes back.

    (pyroute2's NetNS forks a helper and SIGTERMs it; a forked child shares the asyncio loop's signal wakeup
    socket, so that SIGTERM would stop the agent that asked. A thread's own setns has no such edge.)
    """
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DataplaneError(f"network namespace {name} does not exist") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, name)
        try:
            return socket.socket(family, kind, proto)
        finally:
            _setns(own, "this thread's own namespace")
    finally:
        os.close(target)
        os.close(own)


RTMGRP_LINK = 0x1


def link_events(namespace: str | None = None) -> socket.socket:
    """A non-blocking rtnetlink socket that receives a message whenever a link in `namespace` (None: this
    process's own) is added, removed or changes state: readable means "look again" (the agent drains it and
    dumps the links once, so a burst of events costs one dump)."""
    if namespace is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    else:
        sock = _netlink_socket(namespace)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket) -> int:
    """Read every pending message of a link_events socket; how many reads (an overrun counts: look again)."""
    reads = 0
    while True:
        try:
            sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return reads
        except OSError as exc:  # ENOBUFS: events were lost; the caller dumps the links anyway
            if exc.errno != errno.ENOBUFS:
                raise
        reads += 1


@contextmanager
def _ns(name: str | None) -> Iterator[IPRoute]:
    if not namespace_exists(name):
        raise DataplaneError(f"network namespace {name} does not exist")
    # pyroute2 runs its own event loop; a plain selector loop (uvloop, the servers' policy, cannot open netlink)
    loop = asyncio.SelectorEventLoop()
    try:
        ipr = IPRoute(use_event_loop=loop) if name is None else \
            IPRoute(use_socket=_netlink_socket(name), use_event_loop=loop)
    except BaseException:
        loop.close()
        raise
    try:
        yield ipr
    finally:
        ipr.close()
        loop.close()


def ensure_namespace(name: str) -> None:
    """Create the namespace (with `lo` up) unless it exists."""
    if not namespace_exists(name):
        # iproute2's own `ip netns add` (pyroute2's create forks a helper: see _netlink_socket)
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 and not namespace_exists(name):
            raise DataplaneError(f"ip netns add {name}: {proc.stderr.strip()}")
    with _ns(name) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")


def delete_namespace(name: str) -> None:
    """Delete the namespace; its links go with it (a veth dies with either end). A no-op if absent."""
    if namespace_exists(name):
        proc = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 and namespace_exists(name):
            raise DataplaneError(f"ip netns delete {name}: {proc.stderr.strip()}")


def namespace_inode(name: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino
    except FileNotFoundError:
        return None


def pids_in_namespace(name: str) -> list[int]:
    """Processes whose network namespace is `name` (read from /proc; nothing is signalled)."""
    inode = namespace_inode(name)
    if inode is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise DataplaneError(f"no link {ifname}")
    return found[0]


def link_names(namespace: str | None) -> list[str]:
    with _ns(namespace) as ipr:
        return sorted(link.get("ifname") for link in ipr.get_links())


@dataclass(frozen=True)
class BridgePort:
    """A link enslaved to a bridge: its name, the bridge's, its MAC, and whether it is administratively up."""

    name: str
    bridge: str
    mac: str
    up: bool


IFF_UP = 0x1


def bridge_ports(namespace: str | None, bridges: Iterable[str]) -> tuple[dict[str, BridgePort], list[str]]:
    """The links on each of `bridges` (one netlink dump), and which of the bridges do not exist."""
    wanted = set(bridges)
    with _ns(namespace) as ipr:
        links = list(ipr.get_links())
    by_index = {link["index"]: link.get("ifname") for link in links}
    present = {name for name in by_index.values() if name in wanted}
    out = {}
    for link in links:
        bridge = by_index.get(link.get("IFLA_MASTER"))
        if bridge in wanted:
            name = link.get("ifname")
            out[name] = BridgePort(name, bridge, (link.get("IFLA_ADDRESS") or "").lower(),
                                   bool(link["flags"] & IFF_UP))
    return out, sorted(wanted - present)


@dataclass(frozen=True)
class LinkInfo:
    """One link as `ip addr` shows it: name, MAC, administratively up, its bridge (master), IPv4 addresses."""

    name: str
    mac: str
    up: bool
    master: str | None
    addresses: tuple[str, ...]


def links(namespace: str | None) -> list[LinkInfo]:
    """Every link of the namespace with its MAC, state, bridge and IPv4 addresses (two netlink dumps)."""
    with _ns(namespace) as ipr:
        dumped = list(ipr.get_links())
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr(family=2):
            addrs.setdefault(a["index"], []).append(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
    names = {link["index"]: link.get("ifname") for link in dumped}
    return sorted((LinkInfo(link.get("ifname"), (link.get("IFLA_ADDRESS") or "").lower(), bool(link["flags"] & IFF_UP),
                            names.get(link.get("IFLA_MASTER")), tuple(addrs.get(link["index"], ())))
                   for link in dumped), key=lambda info: info.name)


def link_exists(namespace: str | None, ifname: str) -> bool:
    if not namespace_exists(namespace):
        return False
    with _ns(namespace) as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def link_kind(namespace: str | None, ifname: str) -> str | None:
    """The link's kind as `ip -d link` names it (bridge, veth, tun, openvswitch...); None for a plain device."""
    with _ns(namespace) as ipr:
        link = ipr.get_links(_index(ipr, ifname))[0]
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def ensure_bridge(namespace: str | None, name: str) -> None:
    with _ns(namespace) as ipr:
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge")
        ipr.link("set", index=_index(ipr, name), state="up")


def ensure_veth(ns_a: str | None, name_a: str, ns_b: str, name_b: str, mac: str | None = None) -> None:
    """A veth pair with `name_a` in `ns_a` and `name_b` (MAC `mac`) in `ns_b`, both up.

    A half left by an earlier crash is deleted and the pair made again.
    """
    if not (link_exists(ns_a, name_a) and link_exists(ns_b, name_b)):
        delete_link(ns_a, name_a)
        delete_link(ns_b, name_b)
        with _ns(ns_a) as ipr:
            ipr.link("add", ifname=name_a, kind="veth", peer={"ifname": name_b, "net_ns_fd": ns_b})
    with _ns(ns_b) as ipr:
        idx = _index(ipr, name_b)
        if mac and (ipr.get_links(idx)[0].get("IFLA_ADDRESS") or "").lower() != mac.lower():
            ipr.link("set", index=idx, state="down")  # a MAC is changed while down; a port's MAC may change
            ipr.link("set", index=idx, address=mac)
        ipr.link("set", index=idx, state="up")
    with _ns(ns_a) as ipr:
        ipr.link("set", index=_index(ipr, name_a), state="up")


def delete_link(namespace: str | None, ifname: str) -> None:
    if not namespace_exists(namespace):
        return
    with _ns(namespace) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            ipr.link("del", index=found[0])


def attach_to_bridge(namespace: str | None, ifname: str, bridge: str) -> None:
    with _ns(namespace) as ipr:
        ipr.link("set", index=_index(ipr, ifname), master=_index(ipr, bridge), state="up")


def ensure_address(namespace: str | None, ifname: str, address: str, prefixlen: int) -> None:
    """`address/prefixlen` (IPv4 or IPv6) on the link, unless it is there."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with _ns(namespace) as ipr:
        idx = _index(ipr, ifname)
        have = {(str(a.get("IFA_ADDRESS")).lower(), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=family)}
        if (address.lower(), prefixlen) not in have:
            ipr.addr("add", index=idx, address=address, prefixlen=prefixlen, family=family)


def set_addresses(namespace: str | None, ifname: str, addresses: Sequence[str]) -> list[str]:
    """Exactly these IPv4 addresses (`ip/prefixlen`) on the link: missing ones added (returned), others removed."""
    wanted = set()
    for text in addresses:
        ip, _, prefix = text.partition("/")
        wanted.add((ip, int(prefix)))
    with _ns(namespace) as ipr:
        idx = _index(ipr, ifname)
        have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
        for ip, plen in sorted(have - wanted):
            ipr.addr("del", index=idx, address=ip, prefixlen=plen)
        for ip, plen in sorted(wanted - have):
            ipr.addr("add", index=idx, address=ip, prefixlen=plen)
    return [ip for ip, _plen in sorted(wanted - have)]


def flush_addresses(namespace: str | None, ifname: str) -> None:
    with _ns(namespace) as ipr:
        idx = _index(ipr, ifname)
        for a in ipr.get_addr(index=idx, family=2):
            ipr.addr("del", index=idx, address=a.get("IFA_ADDRESS"), prefixlen=a["prefixlen"])


def ensure_route(namespace: str | None, destination: str, gateway: str) -> None:
    """`destination` (CIDR, `0.0.0.0/0` for default) via `gateway`; replaced if it exists with another hop."""
    with _ns(namespace) as ipr:
        ipr.route("replace", dst=destination, gateway=gateway)


def ipv4_routes(namespace: str | None) -> list[tuple[str, str | None, str]]:
    """The main table's IPv4 routes as (destination CIDR, gateway or None, device)."""
    with _ns(namespace) as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        out = []
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get("RTA_DST") or "0.0.0.0"
            out.append((f"{dst}/{r['dst_len']}", r.get("RTA_GATEWAY"), names.get(r.get("RTA_OIF"), "?")))
        return sorted(out)


def ipv4_addresses(namespace: str | None, ifname: str) -> list[str]:
    with _ns(namespace) as ipr:
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=_index(ipr, ifname),
                                                                                  family=2)]


def set_sysctl(namespace: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (e.g. net.bridge.bridge-nf-call-iptables) inside `namespace`."""
    proc = subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", f"{key}={value}"],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise DataplaneError(f"sysctl {key}={value} in {namespace}: {proc.stderr.strip()}")


IFA_F_NODAD = 0x02


def set_ipv6_address(namespace: str | None, ifname: str, address: str, prefixlen: int, present: bool) -> bool:
    """The IPv6 `address/prefixlen` on the link (added without duplicate address detection, so a server can bind
    it at once) or not; the kernel's own addresses are left alone. True when something changed."""
    with _ns(namespace) as ipr:
        idx = _index(ipr, ifname)
        have = any(a.get("IFA_ADDRESS") == address and a["prefixlen"] == prefixlen
                   for a in ipr.get_addr(index=idx, family=socket.AF_INET6))
        if have == present:
            return False
        if present:
            ipr.addr("add", index=idx, address=address, prefixlen=prefixlen, flags=IFA_F_NODAD)
        else:
            ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)
        return True


def ipv6_addresses(namespace: str | None, ifname: str) -> list[str]:
    with _ns(namespace) as ipr:
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.get_addr(index=_index(ipr, ifname), family=socket.AF_INET6)]
