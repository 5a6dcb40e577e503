# dnsmasq's DHCP configuration as dnsmasq reads it: command lines, conf files, options and hosts files, with lines.
"""What the doctor needs from an external dnsmasq: its ranges (`--dhcp-range`), its host reservations
(`--dhcp-host`, `--dhcp-hostsfile` lines) and its options (`--dhcp-option`, `--dhcp-optsfile` lines), each with
the file and line (or the command-line argument) it came from, and the tags that tie them together
(`set:tag0` on a range or host, `tag:tag0` on an option; `net:` is the old spelling of both).
"""
from __future__ import annotations

import ipaddress
import re
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
    "local", "cache-size", "dhcp-authoritative-for", "log-facility", "dhcp-boot", "resolv-file", "address",
    "no-dhcp-interface", "dhcp-ignore", "dhcp-vendorclass", "dhcp-userclass", "dhcp-mac", "dhcp-circuitid",
    "dhcp-remoteid", "dhcp-subscrid", "dhcp-name-match", "dhcp-ignore-names", "tag-if", "bridge-interface",
    "shared-network", "dhcp-relay", "host-record", "cname", "txt-record", "srv-host", "mx-host", "ptr-record",
    "interface-name", "auth-server", "dhcp-ttl", "local-ttl", "neg-ttl", "max-ttl", "edns-packet-max",
    "query-port", "min-port", "max-port", "dns-forward-max", "bogus-nxdomain", "dhcp-hostsdir", "dhcp-optsdir",
}
# flags (no argument) an operator's command line commonly has: with the options above, what tells a line of bare
# arguments (no program name) apart from other text
_LONG_FLAGS = {
    "no-daemon", "keep-in-foreground", "bind-interfaces", "bind-dynamic", "strict-order", "no-hosts", "no-resolv",
    "no-poll", "no-negcache", "dhcp-authoritative", "no-ping", "log-dhcp", "log-queries", "local-service",
    "domain-needed", "bogus-priv", "expand-hosts", "leasefile-ro", "dhcp-rapid-commit", "dhcp-fqdn",
    "dhcp-no-override", "read-ethers", "enable-ra", "quiet-dhcp", "localise-queries", "filterwin2k",
}
_SHORT = {"i": "interface", "F": "dhcp-range", "G": "dhcp-host", "O": "dhcp-option", "C": "conf-file",
          "x": "pid-file", "l": "dhcp-leasefile", "a": "listen-address", "u": "user", "g": "group",
          "p": "port", "S": "server", "s": "domain", "I": "except-interface", "7": "conf-dir", "H": "addn-hosts",
          "r": "resolv-file", "6": "dhcp-script", "8": "log-facility", "X": "dhcp-lease-max", "M": "dhcp-boot",
          "A": "address", "B": "bogus-nxdomain", "c": "cache-size", "J": "dhcp-ignore", "m": "mx-host",
          "P": "edns-packet-max", "Q": "query-port", "t": "mx-target", "T": "local-ttl", "U": "dhcp-vendorclass",
          "W": "srv-host", "2": "no-dhcp-interface", "4": "dhcp-mac"}
_SHORT_FLAGS = set("dkzhnRqKbDeEfLNovwyZ59")
_FILE_REFERENCES = ("dhcp-optsfile", "dhcp-hostsfile", "conf-file", "conf-dir")
_PROGRAM = re.compile(r"(?:^|[/=])dnsmasq$")
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
    remarks: list[tuple[Location, str]] = field(default_factory=list)  # what was given but is not understood

    def extend(self, other: DnsmasqConfig) -> None:
        self.ranges += other.ranges
        self.hosts += other.hosts
        self.options += other.options
        self.interfaces += other.interfaces
        self.referenced += other.referenced
        self.sources += other.sources
        self.problems += other.problems
        self.unread += other.unread
        self.remarks += other.remarks

    def summary(self, label: str | None = None) -> str:
        """What it holds (only what came from `label`, a file or "dnsmasq command line N", if given)."""
        def mine(items: Iterable) -> int:
            return sum(1 for i in items if label is None or i.where.file == label)
        parts = [(mine(self.ranges), "dhcp-range"), (mine(self.hosts), "dhcp-host"),
                 (mine(self.options), "dhcp-option"),
                 (sum(1 for r in self.referenced if label is None or r[2].file == label), "file reference")]
        return ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in parts if n)

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
    elif name.isascii() and name.isdigit():
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
    elif key in _FILE_REFERENCES:
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


def command_args(tokens: list[str]) -> list[str] | None:
    """The arguments of a dnsmasq command in `tokens`, with or without the program before them.

    Finds the program anywhere (`sudo ip netns exec qdhcp-X dnsmasq ...`, a `ps` line, a systemd unit's
    `ExecStart=-/usr/sbin/dnsmasq ...`, `DNSMASQ=/usr/sbin/dnsmasq`); without one, takes the tokens as arguments if
    they start with an option and name at least one of dnsmasq's (`--dhcp-range=...`, `-F ...`). None otherwise.
    """
    programs = [i for i, token in enumerate(tokens)
                if not token.startswith("-") and _PROGRAM.search(token) and not _takes_value(tokens[i - 1:i])]
    if programs:  # the last: `ps aux` starts its line with the user, often named dnsmasq too
        return tokens[programs[-1] + 1:]  # (also right for systemd's `ExecStart=@/usr/sbin/dnsmasq dnsmasq ...`)
    args = list(tokens)
    if args and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=-.*", args[0], re.S):  # DNSMASQ_OPTS="--conf-file=... -k"
        try:
            args[:1] = shlex.split(args[0].split("=", 1)[1])
        except ValueError:
            args[:1] = args[0].split("=", 1)[1].split()
    if not args or not args[0].startswith("-"):
        return None
    known = _LONG_WITH_ARG | _LONG_FLAGS
    if any(a.startswith("--") and a[2:].partition("=")[0] in known for a in args) \
            or any(len(a) >= 2 and a[0] == "-" and a[1] in "FGO" for a in args):  # -F range, -G host, -O option
        return args
    return None


def _takes_value(previous: list[str]) -> bool:
    """Whether the token after `previous` (zero or one token) is an option's value (`-u dnsmasq`)."""
    if not previous:
        return False
    p = previous[0]
    if p.startswith("--"):
        return "=" not in p and p[2:] in _LONG_WITH_ARG
    return len(p) == 2 and p[0] == "-" and p[1] in _SHORT


def parse_args(args: list[str], where: Location) -> DnsmasqConfig:
    """dnsmasq's arguments (no program name); `where` is where they were written. Tokens that are no dnsmasq option
    are kept as remarks (a command line of only those is not understood)."""
    config = DnsmasqConfig(sources=[str(where)])
    unknown: list[str] = []
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
            elif not set(arg[1:]) <= _SHORT_FLAGS:
                unknown.append(arg)
        else:
            unknown.append(arg)
        if key and value is not None:
            _add(config, key, value, Location(where.file, where.line))
    if unknown:
        config.remarks.append((where, f"not dnsmasq options: {' '.join(shlex.quote(u) for u in unknown[:6])}"
                                      f"{' ...' if len(unknown) > 6 else ''}"))
    return config


def _glued(text: str) -> bool:
    """A /proc/PID/cmdline printed to a terminal: its NUL separators gone, `dnsmasq--no-hosts--dhcp-range=...`."""
    return re.search(r"dnsmasq-(?:-|[a-z]-)|[a-z0-9]--(?:dhcp|interface|conf|bind|no-)", text) is not None


def parse_cmdline(cmdline: str, where: Location) -> DnsmasqConfig:
    """One dnsmasq command line as `ps` shows it or a script runs it, or just its arguments (any program name
    before them is skipped, see command_args); `where` is where it was written."""
    config = DnsmasqConfig(sources=[str(where)])
    if "\0" in cmdline:
        tokens = [t for t in cmdline.split("\0") if t]
    else:
        try:
            tokens = shlex.split(cmdline, comments=False)
        except ValueError as exc:
            config.problems.append((where, f"cannot split the command line: {exc}"))
            return config
    if not tokens:
        config.problems.append((where, "the command line is empty: nothing to check"))
        return config
    args = command_args(tokens)
    if args is None:
        reason = ("it looks like /proc/PID/cmdline printed to a terminal, where its NUL separators vanish: pass "
                  "--dnsmasq-cmdline @/proc/PID/cmdline, or paste the output of `tr '\\0' ' ' < /proc/PID/cmdline`"
                  if _glued(cmdline) else
                  "it names no dnsmasq program and does not start with dnsmasq options (e.g. --dhcp-range=...)")
        config.remarks.append((where, f"not a dnsmasq command line: {reason}"))
        return config
    if not args:
        config.remarks.append((where, "the dnsmasq command has no arguments: it runs with /etc/dnsmasq.conf; pass "
                                      "that file with --dnsmasq-opts"))
        return config
    return parse_args(args, where)


def read_cmdline_file(path: str | Path) -> DnsmasqConfig:
    """Every dnsmasq command line in a file, at its line: a shell script, `ps` output, a systemd unit
    (`ExecStart=`, `\\` continuations), bare arguments, or /proc/PID/cmdline itself (NUL-separated)."""
    config = DnsmasqConfig()
    label = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        config.problems.append((Location(label), f"cannot read: {exc.strerror or exc}"))
        return config
    if b"\0" in data:  # /proc/PID/cmdline: one command, arguments separated by NULs
        return parse_cmdline(data.decode("utf-8", "replace"), Location(label))
    text = data.decode("utf-8", "replace")
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        start, acc = pending if pending else (lineno, "")
        if line.rstrip().endswith("\\"):
            pending = (start, acc + line.rstrip()[:-1] + " ")
            continue
        pending = None
        joined.append((start, acc + line))
    if pending:
        joined.append(pending)
    glued = None
    for lineno, line in joined:
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        try:
            tokens = shlex.split(stripped, comments=True)
        except ValueError:
            tokens = stripped.split()
        args = command_args(tokens)
        if args is not None:
            config.extend(parse_args(args, Location(label, lineno)))
        elif glued is None and _glued(stripped):
            glued = lineno
    if not (config.ranges or config.hosts or config.options or config.referenced or config.problems):
        reason = ("no line of it is a dnsmasq command line (a line naming dnsmasq: a script, `ps` output, a systemd "
                  "unit's ExecStart=; or a line of dnsmasq options such as --dhcp-range=...)")
        if glued is not None:
            reason = (f"line {glued} looks like /proc/PID/cmdline printed to a terminal, where its NUL separators "
                      "vanish: pass --dnsmasq-cmdline @/proc/PID/cmdline itself, or `tr '\\0' ' ' < "
                      "/proc/PID/cmdline` output")
        elif config.remarks:
            reason = "its dnsmasq command line holds no DHCP setting (" + config.remarks[0][1] + ")"
        config.remarks = [(Location(label), reason)]
    return config


def read_file(path: str | Path) -> DnsmasqConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        config = DnsmasqConfig()
        config.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return config
    return parse_any_file(text, str(path))


def _conf_dir(spec: str) -> list[Path]:
    """The files dnsmasq reads for `conf-dir=DIR[,ext...]`: `.ext` items are exclusions, `*.ext` inclusions;
    files ending in ~ or starting with . or # are skipped, as dnsmasq does."""
    directory, *patterns = [p.strip() for p in spec.split(",")]
    include = [p[1:] for p in patterns if p.startswith("*")]
    exclude = [p for p in patterns if p and not p.startswith("*")]
    try:
        names = sorted(p for p in Path(directory).iterdir() if p.is_file())
    except OSError:
        return []
    out = []
    for p in names:
        if p.name.endswith("~") or p.name.startswith((".", "#")):
            continue
        if include and not any(p.name.endswith(x) for x in include):
            continue
        if any(p.name.endswith(x) for x in exclude):
            continue
        out.append(p)
    return out


def resolve_references(config: DnsmasqConfig, already: Iterable[str]) -> DnsmasqConfig:
    """Read the files a command line or conf file names (dhcp-optsfile=, dhcp-hostsfile=, conf-file=, conf-dir=),
    and the files those name in turn, unless given already by name. /dev/null (Neutron's conf-file) is nothing."""
    seen = {Path(p).name for p in already}
    out = DnsmasqConfig()
    todo = list(config.referenced)
    while todo:
        kind, path, where = todo.pop(0)
        if path == "/dev/null":
            continue
        if kind == "conf-dir":
            directory = path.split(",")[0].strip()
            if not Path(directory).is_dir():
                out.unread.append((where, f"conf-dir={directory} is not readable here; pass its files with "
                                          "--dnsmasq-opts to have them checked"))
            files = [(kind, str(p)) for p in _conf_dir(path)]
        else:
            files = [(kind, path)]
        for kind_, file in files:
            if Path(file).name in seen:
                continue
            seen.add(Path(file).name)
            if not Path(file).is_file():
                out.unread.append((where, f"{kind_}={file} is not readable here; pass it with --dnsmasq-opts "
                                          f"to have it checked"))
                continue
            try:
                text = Path(file).read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                out.unread.append((where, f"{kind_}={file}: {exc.strerror or exc}"))
                continue
            parse = {"dhcp-optsfile": parse_opts_file, "dhcp-hostsfile": parse_hosts_file}.get(kind_, parse_conf_file)
            found = parse(text, file)
            out.extend(found)
            todo.extend(found.referenced)
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
