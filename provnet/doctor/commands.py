# The networks an operator's commands create (neutron, openstack or provnet CLI), for doctor without a registry.
"""Reads a file of shell commands (notes, a script, shell history) and applies the ones that shape a provider
network to model objects, with Neutron's own subnet rules (`model.subnet_rules`: default gateway and pool):

    neutron|provnet net-create NAME [-- --provider:network_type flat --provider:physical_network P ...]
    neutron|provnet subnet-create [--allocation-pool start=A,end=B] [--gateway IP] [--host-route ...] NET CIDR
    neutron|provnet subnet-update SUBNET --host-route destination=D,nexthop=H
    neutron|provnet router-create NAME; router-interface-add ROUTER SUBNET
    openstack network create / subnet create / subnet set --host-route / router create / router add subnet

The result is a `Snapshot` marked not live (it has no agents and no VM ports): what doctor checks a dnsmasq range
or an options file against when the registry is not at hand. Lines it does not recognise are ignored; a command
it recognises but cannot apply becomes a problem with its line.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from provnet.doctor.ini import Location
from provnet.model.errors import NeutronError
from provnet.model.resources import DEFAULT_PROJECT_ID, FixedIP, HostRoute, Network, Port, Router, Subnet
from provnet.model.subnet_rules import build_subnet

_PROGRAMS = ("neutron", "openstack", "provnet")
_TRUE = ("true", "1", "yes", "on")
_VERBS = ("net-create", "subnet-create", "subnet-update", "router-create", "router-interface-add")
_NOUNS = ("network", "subnet", "router")


@dataclass
class Declared:
    """What the commands create, each with the line that created it."""

    networks: dict[str, Network] = field(default_factory=dict)  # by name and id
    subnets: dict[str, Subnet] = field(default_factory=dict)
    routers: dict[str, Router] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    lines: dict[str, Location] = field(default_factory=dict)  # resource id -> where it was created
    problems: list[tuple[Location, str]] = field(default_factory=list)
    applied: int = 0

    def summary(self) -> str:
        nets, subs = {n.id for n in self.networks.values()}, {s.id for s in self.subnets.values()}
        parts = [(len(nets), "network"), (len(subs), "subnet"), (len(self.ports), "router interface")]
        return ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in parts if n) or "no network command"


def _options(tokens: list[str], flags: tuple[str, ...] = ()) -> tuple[list[str], dict[str, list[str]]]:
    """Positionals and `--key value` / `--key=value` options (keys with '-' and '_' alike); `flags` take none."""
    positional: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "--":
            continue
        if tok.startswith("--"):
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                if key in flags or i >= len(tokens) or tokens[i].startswith("--"):
                    value = "true"
                else:
                    value = tokens[i]
                    i += 1
            opts.setdefault(key, []).append(value)
        else:
            positional.append(tok)
    return positional, opts


def _kv(text: str) -> dict[str, str]:
    return {k.strip().replace("-", "_"): v.strip() for k, _, v in (item.partition("=") for item in text.split(","))}


def _last(opts: dict[str, list[str]], *keys: str) -> str | None:
    for key in keys:
        if key in opts:
            return opts[key][-1]
    return None


def _verb(tokens: list[str]) -> tuple[str, list[str]] | None:
    """('net-create', args) for `[sudo] neutron net-create ...`, ('subnet create', args) for openstack."""
    for i, tok in enumerate(tokens):
        if Path(tok).name in _PROGRAMS:
            openstack = Path(tok).name == "openstack"
            rest = tokens[i + 1:]
            for j, word in enumerate(rest):  # past global options: --os-cloud X, --state-path D, --debug
                if openstack and word in _NOUNS and j + 1 < len(rest):
                    return f"{word} {rest[j + 1]}", rest[j + 2:]
                if not openstack and word in _VERBS:
                    return word, rest[j + 1:]
            return None
    return None


def _network(d: Declared, name: str) -> Network:
    net = d.networks.get(name)
    if net is None:
        raise LookupError(f"network {name!r} is not created by an earlier command")
    return net


def _subnet(d: Declared, name: str) -> Subnet:
    sub = d.subnets.get(name)
    if sub is None:
        raise LookupError(f"subnet {name!r} is not created by an earlier command")
    return sub


def _add_subnet(d: Declared, where: Location, name: str, network: str, cidr: str,
                opts: dict[str, list[str]], *, openstack: bool) -> None:
    net = _network(d, network)
    attrs: dict = {"network_id": net.id, "cidr": cidr, "ip_version": 4 if ":" not in cidr else 6,
                   "name": name, "project_id": DEFAULT_PROJECT_ID}
    gateway = _last(opts, "gateway", "gateway_ip")
    if gateway is not None:
        attrs["gateway_ip"] = None if gateway.lower() == "none" else gateway
    if "no_gateway" in opts:
        attrs["gateway_ip"] = None
    attrs["allocation_pools"] = [_kv(p) for p in opts.get("allocation_pool", [])]
    hop = "gateway" if openstack else "nexthop"
    attrs["host_routes"] = [{"destination": r["destination"], "nexthop": r[hop]}
                            for r in map(_kv, opts.get("host_route", []))]
    dhcp = _last(opts, "enable_dhcp")
    if "no_dhcp" in opts or "disable_dhcp" in opts or (dhcp is not None and dhcp.lower() not in _TRUE):
        attrs["enable_dhcp"] = False
    subnet_id = f"subnet-{len({s.id for s in d.subnets.values()}) + 1}"
    siblings = [s for s in d.subnets.values() if s.network_id == net.id]
    subnet = build_subnet(subnet_id, attrs, list({s.id: s for s in siblings}.values()))
    d.subnets[subnet_id] = subnet
    if name:
        d.subnets[name] = subnet
    net.subnets.append(subnet_id)
    d.lines[subnet_id] = where


def _set_routes(d: Declared, subnet: Subnet, opts: dict[str, list[str]], *, openstack: bool) -> None:
    hop = "gateway" if openstack else "nexthop"
    routes = [HostRoute(r["destination"], r[hop]) for r in map(_kv, opts.get("host_route", []))]
    for r in routes:
        ipaddress.ip_network(r.destination, strict=False)
        ipaddress.ip_address(r.nexthop)
    updated = replace(subnet, host_routes=(subnet.host_routes if openstack else []) + routes)
    for key, value in list(d.subnets.items()):
        if value.id == subnet.id:
            d.subnets[key] = updated


def _router_interface(d: Declared, router: str, subnet_ref: str) -> None:
    if router not in d.routers:
        d.routers[router] = Router(id=f"router-{len(d.routers) + 1}", name=router)
    subnet = _subnet(d, subnet_ref.split("=", 1)[1] if subnet_ref.startswith("subnet=") else subnet_ref)
    if subnet.gateway_ip is None:
        raise LookupError(f"subnet {subnet.name or subnet.id} has no gateway_ip for the router interface")
    d.ports.append(Port(id=f"router-port-{len(d.ports) + 1}", network_id=subnet.network_id,
                        mac_address="fa:16:3e:00:00:00", fixed_ips=[FixedIP(subnet.id, subnet.gateway_ip)],
                        device_owner="network:router_interface", device_id=d.routers[router].id))


def _apply(d: Declared, verb: str, args: list[str], where: Location) -> bool:
    """Apply one command; False if it is not one that shapes a network."""
    openstack = " " in verb
    if verb in ("net-create", "network create"):
        pos, opts = _options(args, ("external", "router:external", "shared"))
        if not pos:
            raise LookupError("no network name")
        kind = _last(opts, "provider:network_type", "provider_network_type")
        physnet = _last(opts, "provider:physical_network", "provider_physical_network")
        external = _last(opts, "router:external", "external")
        net = Network(id=f"net-{len({n.id for n in d.networks.values()}) + 1}", name=pos[-1], network_type=kind,
                      physical_network=physnet, router_external=bool(external and external.lower() in _TRUE))
        d.networks[net.id] = d.networks[net.name] = net
        d.lines[net.id] = where
    elif verb == "subnet-create":
        pos, opts = _options(args, ("no_gateway", "disable_dhcp", "enable_dhcp"))
        if len(pos) < 2:
            raise LookupError("subnet-create needs NETWORK CIDR")
        _add_subnet(d, where, _last(opts, "name") or "", pos[0], pos[1], opts, openstack=False)
    elif verb == "subnet create":
        pos, opts = _options(args, ("dhcp", "no_dhcp", "no_gateway"))
        network, cidr = _last(opts, "network"), _last(opts, "subnet_range")
        if not (pos and network and cidr):
            raise LookupError("subnet create needs NAME --network NET --subnet-range CIDR")
        _add_subnet(d, where, pos[-1], network, cidr, opts, openstack=True)
    elif verb in ("subnet-update", "subnet set"):
        pos, opts = _options(args, ("no_host_route", "dhcp", "no_dhcp"))
        if not pos:
            raise LookupError("no subnet named")
        _set_routes(d, _subnet(d, pos[-1] if openstack else pos[0]), opts, openstack=openstack)
    elif verb in ("router-create", "router create"):
        pos, _ = _options(args)
        if pos:
            d.routers.setdefault(pos[-1], Router(id=f"router-{len(d.routers) + 1}", name=pos[-1]))
    elif verb in ("router-interface-add", "router add"):
        pos, _ = _options(args)
        if openstack:
            if len(pos) < 3 or pos[0] != "subnet":
                return False
            pos = pos[1:]
        if len(pos) < 2:
            raise LookupError("router-interface-add needs ROUTER SUBNET")
        _router_interface(d, pos[0], pos[1])
    else:
        return False
    return True


def parse_commands(text: str, path: str) -> Declared:
    d = Declared()
    pending = ""
    start = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = lineno
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            tokens = shlex.split(line.lstrip("$ "), comments=True)
        except ValueError:
            tokens = line.split()
        found = _verb(tokens)
        if found is None:
            continue
        where = Location(path, start)
        try:
            if _apply(d, found[0], found[1], where):
                d.applied += 1
        except (NeutronError, LookupError, ValueError, KeyError) as exc:
            d.problems.append((where, f"`{found[0]}`: {exc}"))
    return d


def read_commands(path: str | Path) -> Declared:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        d = Declared()
        d.problems.append((Location(str(path)), f"cannot read: {exc.strerror or exc}"))
        return d
    return parse_commands(text, str(path))
