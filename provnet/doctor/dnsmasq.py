# dnsmasq's DHCP configuration as dnsmasq reads it: command lines, conf files, options and hosts files, with lines.
"""What the doctor needs from an external dnsmasq: its ranges (`--dhcp-range`), its host reservations
(`--dhcp-host`, `--dhcp-hostsfile` lines) and its options (`--dhcp-option`, `--dhcp-optsfile` lines), each with
the file and line (or the command-line argument) it came from, and the tags that tie them together
(`set:tag0` on a range or host, `tag:tag0` on an option; `net:` is the old spelling of both).
"""
from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from provnet.doctor.ini import Location

OPTION_NAMES = {
    "netmask": 1, "router": 3, "dns-server": 6, "domain-name": 15, "static-route": 33,
    "classless-static-route": 121, "mtu": 26, "ntp-server": 42, "domain-search": 119,
}
# long options that take an argument (given as `--opt value` as well as `--opt=value`)
_LONG_WITH_ARG = {
    "interface", "except-interface", "listen-address", "pid-file", "dhcp-range", "dhcp-host", "dhcp-option",
    "dhcp-option-force", "dhcp-optsfile", "dhcp-hostsfile", "conf-file", "addn-hosts", "dhcp-leasefile",
    "dhcp-lease-max", "port", "server", "domain", "dhcp-match", "conf-dir", "user", "group", "dhcp-script",
    "local", "cache-size", "dhcp-authoritative-for", "log-facility", "dhcp-boot",
}
_SHORT = {"i": "interface", "F": "dhcp-range", "G": "dhcp-host", "O": "dhcp-option", "C": "conf-file",
          "x": "pid-file", "l": "dhcp-leasefile", "a": "listen-address", "u": "user", "g": "group",
          "p": "port", "S": "server", "s": "domain", "I": "except-interface"}
_SHORT_FLAGS = set("dkzhnRqK")
_TAG_PREFIXES = ("tag:", "net:")
_RANGE_MODES = ("static", "proxy", "ra-only", "ra-names", "ra-stateless", "slaac", "ra-advrouter")


@dataclass(frozen=True)
class DhcpRange:
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address | None
    mode: str | None  # None (dynamic), "static", "proxy", ...
    set_tags: tuple[str, ...]
    match_tags: tuple[str, ...]
    netmask: str | None
    lease: str | None
    text: str
    where: Location

    @property
    def dynamic(self) -> bool:
        return self.mode is None and self.end is not None

    def covers(self, ip: str) -> bool:
        addr = ipaddress.IPv4Address(ip)
        return self.end is not None and self.start <= addr <= self.end

    def network(self) -> ipaddress.IPv4Network | None:
        if not self.netmask:
            return None
        try:
            return ipaddress.IPv4Network(f"{self.start}/{self.netmask}", strict=False)
        except ValueError:
            return None


@dataclass(frozen=True)
class DhcpHost:
    macs: tuple[str, ...]
    ip: str | None
    hostname: str | None
    set_tags: tuple[str, ...]
    ignore: bool
    text: str
    where: Location


@dataclass(frozen=True)
class DhcpOption:
    code: int | None
    name: str  # as written: "option:router", "249"
    values: tuple[str, ...]
    tags: tuple[str, ...]  # tag:X filters (negated ones start with "!")
    force: bool
    text: str
    where: Location


@dataclass
class DnsmasqConfig:
    ranges: list[DhcpRange] = field(default_factory=list)
    hosts: list[DhcpHost] = field(default_factory=list)
    options: list[DhcpOption] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    referenced: list[tuple[str, str, Location]] = field(default_factory=list)  # kind, path, where named
    sources: list[str] = field(default_factory=list)
    problems: list[tuple[Location, str]] = field(default_factory=list)
    unread: list[tuple[Location, str]] = field(default_factory=list)  # named files this host cannot read

    def extend(self, other: DnsmasqConfig) -> None:
        self.ranges += other.ranges
        self.hosts += other.hosts
        self.options += other.options
        self.interfaces += other.interfaces
        self.referenced += other.referenced
        self.sources += other.sources
        self.problems += other.problems
        self.unread += other.unread

    @property
    def empty(self) -> bool:
        return not (self.ranges or self.hosts or self.options)


def _ip(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        return None


def parse_range(text: str, where: Location) -> DhcpRange | str:
    """A `dhcp-range` value, or the reason it is not one."""
    items = [i.strip() for i in text.split(",")]
    set_tags: list[str] = []
    match_tags: list[str] = []
    while items and (items[0].startswith(("set:", *_TAG_PREFIXES))):
        prefix, _, tag = items.pop(0).partition(":")
        (set_tags if prefix in ("set", "net") else match_tags).append(tag)
    if not items or _ip(items[0]) is None:
        return "no IPv4 start address"
    start = _ip(items.pop(0))
    end = mode = netmask = lease = None
    if items and _ip(items[0]) is not None:
        end = _ip(items.pop(0))
    elif items and items[0] in _RANGE_MODES:
        mode = items.pop(0)
    if items and _ip(items[0]) is not None:
        netmask = items.pop(0)
        if items and _ip(items[0]) is not None:
            items.pop(0)  # broadcast
    if items:
        lease = items.pop(0)
    if end is not None and start is not None and end < start:
        return f"range end {end} is before its start {start}"
    assert start is not None
    return DhcpRange(start, end, mode, tuple(set_tags), tuple(match_tags), netmask, lease, text, where)


def parse_host(text: str, where: Location) -> DhcpHost:
    macs: list[str] = []
    ip = hostname = None
    set_tags: list[str] = []
    ignore = False
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        if item.startswith(("set:", "net:")):
            set_tags.append(item.split(":", 1)[1])
        elif item.startswith(("tag:", "id:")) or item == "*":
            continue
        elif item == "ignore":
            ignore = True
        elif _ip(item) is not None:
            ip = item
        elif item.count(":") == 5 or (item.count(":") >= 5 and "-" not in item):
            macs.append(item.lower())
        elif item[0].isdigit() and item[-1] in "smhdw" or item == "infinite":
            continue  # lease time
        else:
            hostname = item
    return DhcpHost(tuple(macs), ip, hostname, tuple(set_tags), ignore, text, where)


def parse_option(text: str, where: Location, force: bool = False) -> DhcpOption | str:
    items = [i.strip() for i in text.split(",")]
    tags: list[str] = []
    while items and items[0].startswith((*_TAG_PREFIXES, "encap:", "vi-encap:", "vendor:")):
        item = items.pop(0)
        if item.startswith(_TAG_PREFIXES):
            tags.append(item.split(":", 1)[1])
    if not items or not items[0]:
        return "no option number or option:<name>"
    name = items.pop(0)
    if name.startswith("option6:"):
        return "IPv6 option (not checked)"
    if name.startswith("option:"):
        code = OPTION_NAMES.get(name[len("option:"):])
    elif name.isdigit():
        code = int(name)
    else:
        return f"{name!r} is neither a number nor option:<name>"
    return DhcpOption(code, name, tuple(items), tuple(tags), force, text, where)


def parse_routes(option: DhcpOption) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]] | str:
    """The destination/next-hop pairs of a 121/249 option (`169.254.169.254/32,172.16.1.2,...`)."""
    values = [v for v in option.values if v]
    if len(values) % 2:
        return "odd number of values: routes come as destination,next-hop pairs"
    routes = []
    for dest, hop in zip(values[::2], values[1::2], strict=True):
        try:
            routes.append((ipaddress.IPv4Network(dest, strict=False), ipaddress.IPv4Address(hop)))
        except ValueError as exc:
            return f"bad route {dest},{hop}: {exc}"
    return routes


def _add(config: DnsmasqConfig, key: str, value: str, where: Location) -> None:
    if key == "dhcp-range":
        parsed = parse_range(value, where)
        if isinstance(parsed, str):
            config.problems.append((where, f"dhcp-range={value}: {parsed}"))
        else:
            config.ranges.append(parsed)
    elif key == "dhcp-host":
        config.hosts.append(parse_host(value, where))
    elif key in ("dhcp-option", "dhcp-option-force"):
        parsed_opt = parse_option(value, where, force=key.endswith("force"))
        if isinstance(parsed_opt, str):
            if not parsed_opt.startswith("IPv6"):
                config.problems.append((where, f"{key}={value}: {parsed_opt}"))
        else:
            config.options.append(parsed_opt)
    elif key == "interface":
        config.interfaces.extend(i.strip() for i in value.split(",") if i.strip())
    elif key in ("dhcp-optsfile", "dhcp-hostsfile", "conf-file"):
        config.referenced.append((key, value, where))


def _lines(text: str) -> Iterable[tuple[int, str]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield lineno, stripped


def parse_opts_file(text: str, path: str) -> DnsmasqConfig:
    """A `--dhcp-optsfile`: one dhcp-option value per line."""
    config = DnsmasqConfig(sources=[path])
    for lineno, line in _lines(text):
        _add(config, "dhcp-option", line, Location(path, lineno))
    return config


def parse_hosts_file(text: str, path: str) -> DnsmasqConfig:
    """A `--dhcp-hostsfile`: one dhcp-host value per line."""
    config = DnsmasqConfig(sources=[path])
    for lineno, line in _lines(text):
        _add(config, "dhcp-host", line, Location(path, lineno))
    return config


def parse_conf_file(text: str, path: str) -> DnsmasqConfig:
    """A dnsmasq.conf: `long-option=value` or a bare `long-option` flag per line."""
    config = DnsmasqConfig(sources=[path])
    for lineno, line in _lines(text):
        key, _, value = line.partition("=")
        _add(config, key.strip(), value.strip(), Location(path, lineno))
    return config


def parse_any_file(text: str, path: str) -> DnsmasqConfig:
    """An options file, a hosts file or a conf file, told apart by their lines' shape."""
    body = [line for _, line in _lines(text)]
    if any(line.split("=", 1)[0].strip() in _LONG_WITH_ARG for line in body if "=" in line):
        return parse_conf_file(text, path)
    if body and all(parse_host(line, Location(path)).macs for line in body):
        return parse_hosts_file(text, path)
    return parse_opts_file(text, path)


def parse_cmdline(cmdline: str, where: Location) -> DnsmasqConfig:
    """One dnsmasq command line (as `ps` shows it or a script runs it); `where` is where it was written."""
    config = DnsmasqConfig(sources=[str(where)])
    try:
        args = shlex.split(cmdline, comments=False)
    except ValueError as exc:
        config.problems.append((where, f"cannot split the command line: {exc}"))
        return config
    if not args:
        config.problems.append((where, "the command line is empty: nothing to check"))
        return config
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        key = value = None
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                value = None
                if key in _LONG_WITH_ARG and i < len(args):
                    value = args[i]
                    i += 1
        elif arg.startswith("-") and len(arg) >= 2:
            letter = arg[1]
            if letter in _SHORT:
                key = _SHORT[letter]
                if len(arg) > 2:
                    value = arg[2:].lstrip("=")
                elif i < len(args):
                    value = args[i]
                    i += 1
            elif letter not in _SHORT_FLAGS:
                continue
        if key and value is not None:
            _add(config, key, value, Location(where.file, where.line))
    return config


def read_cmdline_file(path: str | Path) -> DnsmasqConfig:
    """Every dnsmasq command line in a file (shell script or `ps` output), at its line; `\\` joins lines."""
    config = DnsmasqConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        config.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return config
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        start, acc = pending if pending else (lineno, "")
        if line.rstrip().endswith("\\"):
            pending = (start, acc + line.rstrip()[:-1] + " ")
            continue
        pending = None
        joined.append((start, acc + line))
    for lineno, line in joined:
        if "dnsmasq" in line and not line.lstrip().startswith("#"):
            config.extend(parse_cmdline(line[line.index("dnsmasq"):], Location(str(path), lineno)))
    return config


def read_file(path: str | Path) -> DnsmasqConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        config = DnsmasqConfig()
        config.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return config
    return parse_any_file(text, str(path))


def resolve_references(config: DnsmasqConfig, already: Iterable[str]) -> DnsmasqConfig:
    """Read the files a command line or conf file names (dhcp-optsfile=...), unless given already by name."""
    seen = {Path(p).name for p in already}
    out = DnsmasqConfig()
    for kind, path, where in config.referenced:
        if Path(path).name in seen:
            continue
        seen.add(Path(path).name)
        if not Path(path).is_file():
            out.unread.append((where, f"{kind}={path} is not readable here; pass it with --dnsmasq-opts "
                                      f"to have it checked"))
            continue
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        parse = {"dhcp-optsfile": parse_opts_file, "dhcp-hostsfile": parse_hosts_file,
                 "conf-file": parse_conf_file}[kind]
        out.extend(parse(text, path))
    return out


def options_for(config: DnsmasqConfig, tags: Iterable[str]) -> dict[int, DhcpOption]:
    """The options a client with `tags` gets, by code: tagged options win over untagged ones, later over earlier."""
    have = set(tags)
    chosen: dict[int, DhcpOption] = {}
    for option in config.options:
        if option.code is None:
            continue
        wanted = [t for t in option.tags if not t.startswith("!")]
        unwanted = [t[1:] for t in option.tags if t.startswith("!")]
        if not set(wanted) <= have or set(unwanted) & have:
            continue
        current = chosen.get(option.code)
        if current is None or len(option.tags) >= len(current.tags):
            chosen[option.code] = option
    return chosen
