# Checks on an external DHCP server (dnsmasq): routes in options 121/249/3, leases versus ports, two servers.
from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from provnet.doctor.dnsmasq import DhcpOption, DhcpRange, options_for, parse_routes
from provnet.doctor.findings import Finding
from provnet.doctor.ini import Location
from provnet.doctor.inputs import Inputs
from provnet.model.metadata_mode import network_mode_applies
from provnet.model.resources import Subnet
from provnet.model.routes import METADATA_CIDR, port_routes

Routes = list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]


@dataclass
class Group:
    """The options one class of clients gets (one dhcp-range's tags, or option tags set elsewhere), and the subnet
    it lies in."""

    label: str
    options: dict[int, DhcpOption]
    subnet: Subnet | None
    where: list[Location]  # the range (or hosts) that define the class


def _subnet_for(inputs: Inputs, ip: ipaddress.IPv4Address | str | None) -> Subnet | None:
    if inputs.snapshot is None or ip is None:
        return None
    try:
        addr = ipaddress.IPv4Address(str(ip))
    except ValueError:
        return None
    return next((s for s in inputs.snapshot.subnets if s.ip_version == 4 and addr in s.network), None)


def _hops(options: dict[int, DhcpOption]) -> list[str]:
    """Next hops and routers the options name: they are on the clients' subnet."""
    out = []
    for code in (121, 249):
        if code in options:
            parsed = parse_routes(options[code])
            out += [str(h) for _, h in parsed] if not isinstance(parsed, str) else []
    return out + [v for v in (options[3].values[:1] if 3 in options else ())]


def groups(inputs: Inputs) -> list[Group]:
    """Who gets which options: one group per dhcp-range (its tags and the interfaces'), one per set of option tags
    that nothing read here sets (an options file alone: its range is defined elsewhere), else every client."""
    cfg = inputs.dnsmasq
    out = []
    for r in cfg.ranges:
        out.append(Group(f"dhcp-range {r.text}", options_for(cfg, [*r.set_tags, *cfg.interfaces]),
                         _subnet_for(inputs, r.start), [r.where]))
    set_here = {t for r in cfg.ranges for t in r.set_tags} | {t for h in cfg.hosts for t in h.set_tags} \
        | set(cfg.interfaces)
    elsewhere = {tuple(sorted(t for t in o.tags if not t.startswith("!"))) for o in cfg.options} - {()}
    for tags in sorted(t for t in elsewhere if not set(t) <= set_here):
        options = options_for(cfg, tags)
        subnet = next((s for s in map(lambda ip: _subnet_for(inputs, ip), _hops(options)) if s), None)
        out.append(Group(f"clients tagged {','.join(tags)} (no range read here sets the tag)", options, subnet, []))
    if not cfg.ranges and (cfg.hosts or any(not o.tags for o in cfg.options)):
        client_tags = [t for h in cfg.hosts for t in h.set_tags] + cfg.interfaces
        ip = next((h.ip for h in cfg.hosts if h.ip), None)
        options = options_for(cfg, client_tags)
        subnet = _subnet_for(inputs, ip) or next((s for s in map(lambda x: _subnet_for(inputs, x), _hops(options))
                                                  if s), None)
        out.append(Group("every client", options, subnet, [h.where for h in cfg.hosts]))
    return out


def _fmt(routes: Routes) -> str:
    return ",".join(f"{d},{h}" for d, h in routes)


def _default(routes: Routes) -> ipaddress.IPv4Address | None:
    return next((h for d, h in routes if d.prefixlen == 0), None)


def _route_findings(inputs: Inputs, g: Group) -> Iterator[Finding]:
    o121, o249, o3 = g.options.get(121), g.options.get(249), g.options.get(3)
    if o121 or o249 or o3:  # the routes these clients get were judged (the range or hosts define who they are)
        inputs.examined(*g.where, *(o.where for o in (o121, o249, o3) if o is not None))
    routes: Routes | None = None
    if o121:
        parsed = parse_routes(o121)
        if isinstance(parsed, str):
            yield Finding("error", "config.bad-value", o121.where, f"option 121: {parsed}",
                          "dnsmasq refuses to start", "write destination/prefix,next-hop pairs")
            return
        routes = parsed
        default = _default(routes)
        if default is None:
            router = o3.values[0] if o3 and o3.values else "<router>"
            yield Finding(
                "error", "dhcp.121-no-default", o121.where,
                f"option 121 ({_fmt(routes)}) has no 0.0.0.0/0 route",
                "RFC 3442: a client that gets 121 ignores option 3 (router), so VMs get no default route and "
                "reach nothing beyond their subnet", f"append `0.0.0.0/0,{router}` to the option 121 list")
        if o249 is None:
            yield Finding(
                "warning", "dhcp.249-missing", o121.where,
                "option 121 is sent but option 249 (Microsoft's classless static routes) is not",
                "Windows guests, which ask for 249, get no 169.254.169.254 route and no default route via 121",
                f"add a line `{','.join('tag:' + t for t in o121.tags)}{',' if o121.tags else ''}249,"
                f"{_fmt(routes)}`")
        else:
            parsed249 = parse_routes(o249)
            if isinstance(parsed249, str) or parsed249 != routes:
                shown = parsed249 if isinstance(parsed249, str) else _fmt(parsed249)
                yield Finding(
                    "error", "dhcp.249-differs", o249.where,
                    f"option 249 ({shown}) differs from option 121 ({_fmt(routes)}, {o121.where})",
                    "Windows guests (249) and Linux guests (121) get different routes",
                    f"make the 249 list identical to the 121 list: `{_fmt(routes)}`")
        if o3 and o3.values and default is not None and o3.values[0] != str(default):
            yield Finding(
                "error", "dhcp.router-differs", o3.where,
                f"option 3 (router {o3.values[0]}) differs from option 121's default route via {default}",
                "clients with 121 (cloud-init, dhclient, systemd-networkd) route via one gateway, clients "
                "without it (busybox udhcpc by default) via the other", f"set option 3 (router) to {default}")
    if not (inputs.snapshot and g.subnet):
        return
    subnet = g.subnet
    router_ips = inputs.snapshot.router_ips(subnet)
    mode = inputs.metadata_mode
    metadata_ip = inputs.snapshot.metadata_hops(mode).get(subnet.id)
    # network mode with its metadata port: the route must go to the port; without one (metadata.port-missing, or
    # Neutron's agents serving this network) the router's rules below still say where the route leads
    network_mode = metadata_ip is not None and network_mode_applies(mode, subnet, inputs.snapshot.ports)
    if routes is not None:
        md = next((h for d, h in routes if d == METADATA_CIDR), None)
        hop = md if md is not None else _default(routes)
        if network_mode and str(md) != metadata_ip:
            via = f"its 169.254.169.254/32 route goes via {md}" if md is not None else \
                f"it has no 169.254.169.254/32 route (metadata follows the default route, via {hop})"
            yield Finding(
                "error", "dhcp.metadata-nexthop", o121.where if o121 else None,
                f"subnet {subnet.name or subnet.id} ({subnet.cidr}) is in network mode ([metadata] mode = {mode}), "
                f"but {via}, not via the network's metadata port {metadata_ip}",
                "metadata requests miss the provnet-meta- namespace that serves them: cloud-init times out on "
                "169.254.169.254", f"route 169.254.169.254/32 via {metadata_ip} in options 121 and 249 "
                "(`provnet dhcp-config --format dnsmasq --network NETWORK` writes them)")
        elif not network_mode and hop is not None and str(hop) not in router_ips:
            via = "its 169.254.169.254/32 route" if md is not None else "the default route (no 169.254.169.254/32 route)"  # noqa: E501
            yield Finding(
                "error", "dhcp.metadata-nexthop", o121.where if o121 else None,
                f"{via} goes via {hop}, which is no router interface on subnet {subnet.cidr} "
                f"(router interfaces: {', '.join(sorted(router_ips)) or 'none'})",
                "metadata requests go to a host without the metadata proxy: cloud-init times out on "
                "169.254.169.254", "route 169.254.169.254/32 via the router interface's address ("
                + (", ".join(sorted(router_ips)) or f"add one: `openstack router add subnet ROUTER {subnet.id}`")
                + ")")
        expected = [(r.destination, r.nexthop) for r in port_routes(subnet, metadata_ip)]
        if sorted(expected) != sorted(routes):
            yield Finding(
                "warning", "dhcp.routes-vs-subnet", o121.where if o121 else None,
                f"option 121 ({_fmt(routes)}) differs from the routes subnet {subnet.name or subnet.id} gives "
                f"({_fmt(expected)}: its gateway_ip and host_routes)",
                "network_data.json (config drive, metadata) and DHCP tell the VM different routes; cloud-init "
                "may apply either", _routes_fix(subnet, routes))
    elif network_mode and o3 and o3.values and o3.values[0] != metadata_ip:
        yield Finding(
            "error", "dhcp.metadata-nexthop", o3.where,
            f"no option 121: VMs send metadata traffic to their default router {o3.values[0]}, but subnet "
            f"{subnet.name or subnet.id} ({subnet.cidr}) is in network mode ([metadata] mode = {mode}): its "
            f"metadata port is {metadata_ip}", "cloud-init times out on 169.254.169.254",
            f"add option 121 with `169.254.169.254/32,{metadata_ip},0.0.0.0/0,{o3.values[0]}` (and the same as 249)")
    elif not network_mode and o3 and o3.values and o3.values[0] not in router_ips:
        yield Finding(
            "error", "dhcp.metadata-nexthop", o3.where,
            f"no option 121: VMs send metadata traffic to their default router {o3.values[0]}, which is no router "
            f"interface on subnet {subnet.cidr}",
            "cloud-init times out on 169.254.169.254",
            f"add option 121 with `169.254.169.254/32,{(sorted(router_ips) or ['<router interface>'])[0]},"
            f"0.0.0.0/0,{o3.values[0]}` (and the same as 249)")


def _routes_fix(subnet: Subnet, routes: Routes) -> str:
    default = _default(routes)
    parts = [f"--host-route destination={d},gateway={h}" for d, h in routes
             if d != METADATA_CIDR and d.prefixlen != 0]
    if default is not None and str(default) != subnet.gateway_ip:
        parts.append(f"--host-route destination=0.0.0.0/0,gateway={default}")
    if not parts:
        return "make option 121/249 list exactly the subnet's routes"
    return f"`openstack subnet set {' '.join(parts)} {subnet.name or subnet.id}`"


def check_routes(inputs: Inputs) -> Iterator[Finding]:
    seen: set[tuple[str, str]] = set()
    for g in groups(inputs):
        for f in _route_findings(inputs, g):
            if (f.check, f.location) not in seen:
                seen.add((f.check, f.location))
                yield f


def _served_subnets(inputs: Inputs) -> dict[str, tuple[Subnet, list[DhcpRange]]]:
    assert inputs.snapshot is not None
    cfg = inputs.dnsmasq
    out: dict[str, tuple[Subnet, list[DhcpRange]]] = {}
    for s in inputs.snapshot.subnets:
        if s.ip_version != 4:
            continue
        net = s.network
        ranges = [r for r in cfg.ranges if r.start in net or (r.mode and r.network() == net)]
        hosts = [h for h in cfg.hosts if h.ip and ipaddress.IPv4Address(h.ip) in net]
        if ranges or hosts:
            out[s.id] = (s, ranges)
    return out


def _range_vs_pool(subnet: Subnet, r: DhcpRange, declared_at: str) -> Finding:
    assert r.end is not None
    pools = sorted((int(ipaddress.IPv4Address(p.start)), int(ipaddress.IPv4Address(p.end)))
                   for p in subnet.allocation_pools)
    pools_text = ", ".join(f"{p.start}-{p.end}" for p in subnet.allocation_pools) or "none"
    lo, hi = int(r.start), int(r.end)
    inside = sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in pools)  # Neutron's pools never overlap
    gaps, at = [], lo  # the parts of the range outside every pool
    for a, b in pools:
        if b < at or a > hi:
            continue
        if a > at:
            gaps.append((at, a - 1))
        at = max(at, b + 1)
    if at <= hi:
        gaps.append((at, hi))
    parts = []
    if gaps:
        shown = ", ".join(str(ipaddress.IPv4Address(a)) if a == b else f"{ipaddress.IPv4Address(a)}-"
                          f"{ipaddress.IPv4Address(b)}" for a, b in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
        parts.append(f"{hi - lo + 1 - inside} of its addresses ({shown}) lie outside the pool, so no port can "
                     "hold them")
    if inside:
        parts.append(f"the {inside} inside it are the addresses Neutron gives to ports, so dnsmasq and Neutron "
                     "pick them independently")
    net = subnet.network
    return Finding(
        "error", "dhcp.range-vs-pool", r.where,
        f"dhcp-range {r.start}-{r.end} hands out addresses of dnsmasq's choosing, while Neutron gives each port a "
        f"fixed IP from the allocation pool {pools_text} of subnet {subnet.name or subnet.id} ({subnet.cidr}, "
        f"{declared_at}): {'; '.join(parts)}",
        "a VM leases an address that is not its port's fixed IP: the metadata agent cannot identify it "
        "(cloud-init times out on 169.254.169.254) and port anti-spoofing drops its traffic",
        f"serve only reservations: `--dhcp-range=set:tag0,{net.network_address},static,{net.netmask}` and one "
        f"`--dhcp-host=MAC,IP` per port with the port's fixed IP (`provnet dhcp-config --format dnsmasq "
        f"--network NETWORK` writes them from the registry)")


def check_leases(inputs: Inputs) -> Iterator[Finding]:
    if inputs.dnsmasq.empty or not inputs.snapshot:
        return
    cfg = inputs.dnsmasq
    declared_at = "from the registry" if inputs.snapshot.live else f"as created in {inputs.snapshot.source}"
    for subnet, ranges in _served_subnets(inputs).values():
        dynamic = [r for r in ranges if r.dynamic]
        inputs.examined(*(r.where for r in ranges),
                        *(h.where for h in cfg.hosts if h.ip and ipaddress.IPv4Address(h.ip) in subnet.network))
        vm_ports = inputs.snapshot.vm_ports(subnet)
        if dynamic and not vm_ports:  # no port to name: say what the range does against Neutron's pool
            yield _range_vs_pool(subnet, dynamic[0], declared_at)
            continue
        unreserved = []
        for port in vm_ports:
            ip = next(f.ip_address for f in port.fixed_ips if f.subnet_id == subnet.id)
            mine = [h for h in cfg.hosts if port.mac_address.lower() in h.macs]
            inputs.examined(*(h.where for h in mine))
            if any(h.ip == ip and not h.ignore for h in mine):
                continue
            wrong = [h for h in mine if h.ignore or (h.ip and h.ip != ip)]
            if wrong:
                h = wrong[0]
                what = "tells dnsmasq to ignore" if h.ignore else f"gives the address {h.ip} to"
                yield Finding(
                    "error", "dhcp.lease-not-fixed-ip", h.where,
                    f"dhcp-host {h.text} {what} MAC {port.mac_address}, whose port {port.id} holds {ip}",
                    "the VM's address is not its port's: the metadata agent cannot identify it (no metadata) and "
                    "port anti-spoofing drops its traffic", f"write `dhcp-host={port.mac_address},{ip}`")
                continue
            unreserved.append((port, ip))
        if not unreserved:
            continue
        net = subnet.network
        static_line = f"--dhcp-range=set:tag0,{net.network_address},static,{net.netmask}"
        hosts = " ".join(f"--dhcp-host={p.mac_address},{ip}" for p, ip in unreserved[:8])
        more = " ..." if len(unreserved) > 8 else ""
        names = ", ".join(f"{p.mac_address} (port {p.id[:8]}, fixed IP {ip})" for p, ip in unreserved[:8]) + more
        pools = ", ".join(f"{p.start}-{p.end}" for p in subnet.allocation_pools) or "none"
        if dynamic:
            r = dynamic[0]
            yield Finding(
                "error", "dhcp.lease-not-fixed-ip", r.where,
                f"dhcp-range {r.text} hands out free addresses {r.start}-{r.end}, and no dhcp-host entry "
                f"reserves the ports' fixed IPs (Neutron's pool on {subnet.cidr}: {pools}): {names}",
                "VMs lease an address that is not their port's: the metadata agent cannot identify them (no "
                "metadata, cloud-init times out) and port anti-spoofing drops their traffic",
                f"serve only reservations: `{static_line} {hosts}`{more} (or one dhcp-hostsfile line per port: "
                f"MAC,IP)")
        else:
            where = ranges[0].where if ranges else None
            yield Finding(
                "error", "dhcp.lease-not-fixed-ip", where,
                f"no dhcp-host entry for the ports on {subnet.cidr}: {names}",
                "those VMs get no DHCP lease at all", f"add `{hosts}`{more}")


def check_two_servers(inputs: Inputs) -> Iterator[Finding]:
    if inputs.dnsmasq.empty or not inputs.snapshot:
        return
    for subnet, ranges in _served_subnets(inputs).values():
        inputs.examined(*(r.where for r in ranges))
        if not subnet.enable_dhcp:
            continue
        where = ranges[0].where if ranges else next(
            (h.where for h in inputs.dnsmasq.hosts if h.ip and ipaddress.IPv4Address(h.ip) in subnet.network), None)
        yield Finding(
            "error", "dhcp.two-servers", where,
            f"subnet {subnet.name or subnet.id} ({subnet.cidr}) has enable_dhcp = True and this external DHCP "
            "server also serves it", "two DHCP servers answer on one segment: VMs get whichever offer comes first, "
            "with different routes", f"`openstack subnet set --no-dhcp {subnet.name or subnet.id}`")


def check_provnet_and_external(inputs: Inputs) -> Iterator[Finding]:
    """provnet's own DHCP server (it ignores enable_dhcp: it is the external server) beside another one."""
    if inputs.dnsmasq.empty or not (inputs.provnet and inputs.snapshot) or not inputs.provnet.get("dhcp.interface"):
        return
    wanted = str(inputs.provnet.get("dhcp.network") or "")
    for subnet, ranges in _served_subnets(inputs).values():
        inputs.examined(*(r.where for r in ranges))
        net = inputs.snapshot.network(subnet.network_id)
        if wanted and net is not None and wanted not in (net.id, net.name):
            continue
        yield Finding(
            "error", "dhcp.two-servers", inputs.provnet_where("dhcp.interface"),
            f"provnet's DHCP server ([dhcp] interface = {inputs.provnet.get('dhcp.interface')}) and the external "
            f"dnsmasq both serve subnet {subnet.name or subnet.id} ({subnet.cidr})",
            "two DHCP servers answer on one segment: VMs get whichever offer comes first",
            "keep one: clear [dhcp] interface in provnet's configuration, or stop the dnsmasq")
        return


CHECKS = (check_routes, check_leases, check_two_servers, check_provnet_and_external)
