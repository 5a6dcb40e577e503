# What the DHCP server answers from: a snapshot of the registry (ports' reservations, subnets) and its in-memory view.
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from provnet.dhcp import codec
from provnet.model.metadata_mode import metadata_hops
from provnet.model.resources import Network, Port, Subnet
from provnet.model.routes import default_gateway, port_routes
from provnet.registry.base import Registry, ReservationRow
from provnet.registry.metadata_reads import read_metadata_hops

# what a reply carries, in this order (53 comes first, 61/82 echoes last); 121/249 follow force_routes or the PRL
ROUTE_OPTIONS = (codec.CLASSLESS_ROUTES, codec.MS_CLASSLESS_ROUTES)
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class Settings:
    """The [dhcp] options that shape replies."""

    lease_time: int = 86400
    dns_domain: str = "openstacklocal"
    force_routes: bool = True
    metadata_mode: str = "auto"  # [metadata] mode: the route to 169.254.169.254 (provnet/model/metadata_mode.py)


@dataclass(frozen=True)
class Host:
    """One reservation as plain data: a port's MAC and its fixed IPv4 address on one subnet."""

    port_id: str
    network_id: str
    subnet_id: str
    mac: str
    ip: str
    hostname: str
    device_id: str = ""


@dataclass(frozen=True)
class Snapshot:
    """The registry's DHCP-relevant state for some networks, at one revision (also what the exports render)."""

    revision: int
    networks: list[Network]
    subnets: list[Subnet]
    hosts: list[Host]
    metadata_hops: Mapping[str, str] = field(default_factory=dict)  # subnet id -> metadata port's IP (network mode)


@dataclass(frozen=True)
class SubnetOptions:
    """What every host on a subnet is told besides its lease and name; our server and the exports both use it."""

    net: ipaddress.IPv4Network
    router: ipaddress.IPv4Address | None  # option 3 (None: no default gateway)
    dns: list[str]  # option 6: the subnet's IPv4 name servers
    domain: str  # option 15 ("" for none)
    mtu: int  # option 26: the network's MTU
    routes: list[tuple[str, str]]  # options 121/249: (destination, nexthop) of port_routes


def subnet_options(subnet: Subnet, network: Network, settings: Settings,
                   metadata_ip: str | None = None) -> SubnetOptions:
    """`metadata_ip`: the network's metadata port's address on the subnet when it is in network mode."""
    return SubnetOptions(
        net=ipaddress.IPv4Network(subnet.cidr, strict=False),
        router=default_gateway(subnet),
        dns=[d for d in subnet.dns_nameservers if ipaddress.ip_address(d).version == 4],
        domain=settings.dns_domain,
        mtu=network.mtu,
        routes=[(str(r.destination), str(r.nexthop)) for r in port_routes(subnet, metadata_ip)],
    )


def fallback_hostname(ip: str) -> str:
    return "host-" + ip.replace(".", "-")


def _hostname(port: Port, ip: str, hostnames: dict[str, str]) -> str:
    """The instance's hostname made safe for option 12 and the config files (letters, digits, '-', '.')."""
    name = _UNSAFE.sub("-", hostnames.get(port.device_id, "")).strip("-.")[:63]
    return name or fallback_hostname(ip)


def row_hosts(rows: Iterable[ReservationRow], subnets: Mapping[str, Subnet]) -> list[Host]:
    """Pure: the reservations of registry rows (Registry.reservation_rows) on `subnets` (by id; IPv4 only)."""
    return [Host(r.port_id, r.network_id, r.subnet_id, r.mac_address.lower(), r.ip_address,
                 safe_hostname(r.hostname, r.ip_address), r.device_id)
            for r in rows if r.subnet_id in subnets]


def safe_hostname(hostname: str, ip: str) -> str:
    """The instance's hostname made safe for option 12 and the config files (letters, digits, '-', '.')."""
    return _UNSAFE.sub("-", hostname).strip("-.")[:63] or fallback_hostname(ip)


def port_hosts(port: Port, subnets: dict[str, Subnet], hostnames: dict[str, str]) -> list[Host]:
    """Pure: one port's reservations on `subnets` (by id; IPv4 only). Ports owned by `network:*` (router
    interfaces, DHCP ports) have none: agents configure their addresses, not DHCP."""
    if port.device_owner.startswith("network:"):
        return []
    return [Host(port.id, port.network_id, fip.subnet_id, port.mac_address.lower(), fip.ip_address,
                 _hostname(port, fip.ip_address, hostnames), port.device_id)
            for fip in port.fixed_ips if fip.subnet_id in subnets]


def snapshot_from(revision: int, networks: Sequence[Network], subnets: Iterable[Subnet], ports: Iterable[Port],
                  hostnames: dict[str, str], metadata_mode: str = "auto") -> Snapshot:
    """Pure: the reservations of `ports` on the IPv4 `subnets` of `networks`, and the subnets' metadata next hops
    in network mode (from the metadata and router interface ports among `ports`).

    Every port with an IPv4 fixed IP is a reservation, except ports owned by `network:*` (router interfaces,
    DHCP ports: their addresses are configured by agents, not DHCP). `enable_dhcp` is not consulted: it switches
    Neutron's own DHCP agent, and provnet's server is the external DHCP server the seed uses with enable_dhcp=False.
    """
    net_ids = {n.id for n in networks}
    v4 = [s for s in subnets if s.ip_version == 4 and s.network_id in net_ids]
    by_id = {s.id: s for s in v4}
    hosts = []
    ports = list(ports)
    for port in ports:
        if port.network_id in net_ids:
            hosts.extend(port_hosts(port, by_id, hostnames))
    return Snapshot(revision, list(networks), v4, hosts, metadata_hops(metadata_mode, v4, ports))


def resolve_networks(registry: Registry, network: str | None,
                     addresses: Sequence[ipaddress.IPv4Interface] = ()) -> list[Network]:
    """The networks to serve: the one named/identified by `network`, else every network with an IPv4 subnet
    containing one of `addresses` (the interface's). Raises LookupError with a readable message if none."""
    if network:
        found = [n for n in registry.list_networks() if n.id == network or n.name == network]
        if not found:
            raise LookupError(f"no network with name or id {network!r}")
        if len(found) > 1:
            listed = ", ".join(n.id for n in found)
            raise LookupError(f"network name {network!r} is ambiguous ({listed}); give the id")
        return found
    subnets = registry.list_subnets()
    ids = {s.network_id for s in subnets if s.ip_version == 4
           and any(a.ip in ipaddress.ip_network(s.cidr) for a in addresses)}
    if not ids:
        shown = ", ".join(str(a) for a in addresses) or "none"
        raise LookupError(f"no network has a subnet containing the interface's addresses ({shown}); "
                          "use --network NAME")
    return [n for n in registry.list_networks() if n.id in ids]


def collect(registry: Registry, networks: Sequence[Network], metadata_mode: str = "auto") -> Snapshot:
    """Read a snapshot through the Registry interface: the networks, their IPv4 subnets, the reservation rows and
    the subnets' metadata next hops (revision read first: a change racing with the reads comes through the change
    feed afterwards; the registry notes a subnet update whenever a subnet's metadata route may change)."""
    revision = registry.revision()
    ids = [n.id for n in networks]
    if not ids:
        return Snapshot(revision, [], [], [])
    v4 = [s for s in registry.list_subnets({"network_id": ids}) if s.ip_version == 4]
    fresh = [registry.get_network(n.id) for n in networks]
    hosts = row_hosts(registry.reservation_rows(ids), {s.id: s for s in v4})
    return Snapshot(revision, fresh, v4, hosts, read_metadata_hops(registry, metadata_mode, v4))


# --- the in-memory view the server logic reads ---------------------------------------------------------------------

@dataclass(slots=True, eq=False)
class SubnetInfo:
    id: str
    network_id: str
    net: int  # network address as int
    mask: int
    server_id: bytes  # our address on this subnet (option 54)
    local: bool  # the interface has an address on this subnet
    common: list[tuple[int, bytes]]  # options every reply carries (after 54/51/58/59), in order
    routes: bytes  # option 121/249 value
    prefix: bytes = b""  # options 54, 51, 58, 59 and common, encoded: the part every host's reply shares
    route_options: bytes = b""  # options 121 and 249, encoded

    def contains(self, addr: bytes) -> bool:
        return (int.from_bytes(addr, "big") & self.mask) == self.net


@dataclass(slots=True, eq=False)
class Reservation:
    """One host: only what differs per host is stored (about 0.5 KB each); the subnet's encoded options are
    shared by every host on it."""

    mac: bytes
    ip: bytes
    subnet: SubnetInfo
    hostname: str
    port_id: str
    host_option: bytes  # option 12, encoded
    device_id: str = ""

    @property
    def blob_plain(self) -> bytes:  # options 54, 51, 58, 59, common..., 12
        return self.subnet.prefix + self.host_option

    @property
    def blob_routes(self) -> bytes:  # the same, then 121 and 249
        return self.subnet.prefix + self.host_option + self.subnet.route_options

    @property
    def ip_text(self) -> str:
        return socket.inet_ntoa(self.ip)

    @property
    def mac_text(self) -> str:
        return self.mac.hex(":")


@dataclass(slots=True)
class View:
    """What the server answers from. Built whole at start (build_view) and then changed one port at a time
    (replace_port): a port's create, update or delete costs the work for that port, not for the network."""

    revision: int
    settings: Settings
    by_mac: dict[bytes, tuple[Reservation, ...]] = field(default_factory=dict)
    subnets: list[SubnetInfo] = field(default_factory=list)
    infos: dict[str, SubnetInfo] = field(default_factory=dict)  # by subnet id
    by_port: dict[str, tuple[Reservation, ...]] = field(default_factory=dict)
    networks: frozenset[str] = frozenset()  # the networks served
    subnet_objects: dict[str, Subnet] = field(default_factory=dict)  # the IPv4 subnets served, by id

    @property
    def reservations(self) -> int:
        return sum(len(r) for r in self.by_port.values())


def _subnet_info(subnet: Subnet, network: Network, settings: Settings,
                 addresses: Sequence[ipaddress.IPv4Interface], metadata_ip: str | None) -> SubnetInfo:
    o = subnet_options(subnet, network, settings, metadata_ip)
    net = o.net
    local = [a.ip for a in addresses if a.ip in net]
    server = local[0] if local else (addresses[0].ip if addresses else ipaddress.IPv4Address("0.0.0.0"))
    opts: list[tuple[int, bytes]] = [(codec.SUBNET_MASK, net.netmask.packed)]
    if o.router is not None:
        opts.append((codec.ROUTER, o.router.packed))
    if o.dns:
        opts.append((codec.DNS_SERVERS, codec.ip_list(o.dns)))
    if o.domain:
        opts.append((codec.DOMAIN_NAME, o.domain.encode("ascii", "replace")))
    opts.append((codec.INTERFACE_MTU, codec.u16(o.mtu)))
    opts.append((codec.BROADCAST, net.broadcast_address.packed))
    routes = codec.classless_routes(o.routes)
    return SubnetInfo(subnet.id, subnet.network_id, int(net.network_address), int(net.netmask), server.packed,
                      bool(local), opts, routes)


def _lease_options(settings: Settings) -> list[tuple[int, bytes]]:
    t = settings.lease_time
    return [(codec.LEASE_TIME, codec.u32(t)), (codec.RENEWAL_TIME, codec.u32(t // 2)),
            (codec.REBINDING_TIME, codec.u32(t * 7 // 8))]


def _reservation(h: Host, info: SubnetInfo) -> Reservation:
    return Reservation(codec.mac_bytes(h.mac), codec.ip_bytes(h.ip), info, h.hostname, h.port_id,
                       codec.encode_options([(codec.HOSTNAME, h.hostname.encode("ascii", "replace")[:255])]),
                       h.device_id)


def _encode_subnet(info: SubnetInfo, lease: list[tuple[int, bytes]]) -> SubnetInfo:
    info.prefix = codec.encode_options([(codec.SERVER_ID, info.server_id), *lease, *info.common])
    info.route_options = codec.encode_options([(code, info.routes) for code in ROUTE_OPTIONS] if info.routes else [])
    return info


def build_view(snap: Snapshot, settings: Settings, addresses: Sequence[ipaddress.IPv4Interface] = ()) -> View:
    """Pure: everything a reply needs, encoded once per snapshot (the options a subnet's hosts share, once per
    subnet; option 12, once per host)."""
    networks = {n.id: n for n in snap.networks}
    lease = _lease_options(settings)
    infos = {s.id: _encode_subnet(_subnet_info(s, networks[s.network_id], settings, addresses,
                                               snap.metadata_hops.get(s.id)), lease)
             for s in snap.subnets}
    by_mac: dict[bytes, list[Reservation]] = {}
    by_port: dict[str, list[Reservation]] = {}
    for h in snap.hosts:
        res = _reservation(h, infos[h.subnet_id])
        by_mac.setdefault(res.mac, []).append(res)
        by_port.setdefault(h.port_id, []).append(res)
    return View(snap.revision, settings, {m: tuple(r) for m, r in by_mac.items()}, list(infos.values()), infos,
                {p: tuple(r) for p, r in by_port.items()}, frozenset(networks), {s.id: s for s in snap.subnets})


def replace_port(view: View, port_id: str, hosts: Sequence[Host]) -> bool:
    """Make `hosts` the reservations of `port_id` in `view` (none: the port is gone or not served). On the
    serving loop, between packets. True when anything changed."""
    new = tuple(_reservation(h, view.infos[h.subnet_id]) for h in hosts if h.subnet_id in view.infos)
    old = view.by_port.pop(port_id, ())
    if not old and not new:
        return False
    for res in old:
        kept = tuple(r for r in view.by_mac.get(res.mac, ()) if r.port_id != port_id)
        if kept:
            view.by_mac[res.mac] = kept
        else:
            view.by_mac.pop(res.mac, None)
    for res in new:
        view.by_mac[res.mac] = (*view.by_mac.get(res.mac, ()), res)
    if new:
        view.by_port[port_id] = new
    return True
