# iptables-save text read for one question: does a DHCP reply from the external server reach a port? (pure)
"""A small evaluator of filter-table rules over one UDP packet.

It understands `-s`, `-d` (with `!`), `-p`, `--sport`/`--dport` (and `a:b` ranges), `-j` to ACCEPT, DROP,
REJECT, RETURN or a user chain. A rule with any other match (`-m state`, `-m mac`, `-m set`, ...) is taken not
to match a new DHCP reply: conntrack sees no request it answers (the client broadcast from 0.0.0.0), and
every other module narrows, so skipping such rules is the conservative reading.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from provnet.doctor.ini import Location

INGRESS_CHAIN = re.compile(r"^(?:neutron-openvswi|provnet-fw)-i(?P<suffix>\S+)$")
_KNOWN_MODULES = {"udp", "tcp", "comment"}


@dataclass(frozen=True)
class Rule:
    chain: str
    args: tuple[str, ...]
    where: Location

    def option(self, name: str) -> tuple[str | None, bool]:
        """The value of `name` and whether it is negated (`! -s x`)."""
        for i, arg in enumerate(self.args):
            if arg == name and i + 1 < len(self.args):
                return self.args[i + 1], i > 0 and self.args[i - 1] == "!"
        return None, False

    @property
    def target(self) -> str | None:
        return self.option("-j")[0] or self.option("-g")[0]

    @property
    def text(self) -> str:
        return " ".join(["-A", self.chain, *self.args])


@dataclass
class Tables:
    rules: dict[str, list[Rule]] = field(default_factory=dict)  # filter table, chain -> rules in order
    path: str = ""
    problems: list[tuple[Location, str]] = field(default_factory=list)


def parse_iptables_save(text: str, path: str) -> Tables:
    tables = Tables(path=path)
    table = "filter"
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and table == "filter":
            tables.rules.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and table == "filter":
            try:
                parts = shlex.split(line)
            except ValueError as exc:
                tables.problems.append((Location(path, lineno), f"cannot split rule: {exc}"))
                continue
            if len(parts) < 2:
                continue
            tables.rules.setdefault(parts[1], []).append(Rule(parts[1], tuple(parts[2:]), Location(path, lineno)))
    return tables


def read_iptables_save(path: str | Path) -> Tables:
    try:
        return parse_iptables_save(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        tables = Tables(path=str(path))
        tables.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return tables


def _addr_match(spec: str | None, negated: bool, addr: str) -> bool:
    if spec is None:
        return True
    try:
        inside = ipaddress.IPv4Address(addr) in ipaddress.IPv4Network(spec, strict=False)
    except ValueError:
        return False
    return inside != negated


def _port_match(spec: str | None, negated: bool, port: int) -> bool:
    if spec is None:
        return True
    low, _, high = spec.partition(":")
    try:
        inside = int(low or 0) <= port <= int(high or low or 65535)
    except ValueError:
        return False
    return inside != negated


def _matches(rule: Rule, src: str, dst: str, sport: int, dport: int) -> bool:
    modules = {rule.args[i + 1] for i, a in enumerate(rule.args) if a == "-m" and i + 1 < len(rule.args)}
    if modules - _KNOWN_MODULES:
        return False
    proto, proto_neg = rule.option("-p")
    if proto is not None and proto.lower() != "all" and (proto.lower() in ("udp", "17")) == proto_neg:
        return False
    return (_addr_match(*rule.option("-s"), src) and _addr_match(*rule.option("-d"), dst)
            and _port_match(*rule.option("--sport"), sport) and _port_match(*rule.option("--dport"), dport))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule: Rule | None  # the rule that decided (None: the chain ended)


def evaluate(tables: Tables, chain: str, src: str, dst: str, sport: int = 67, dport: int = 68,
             depth: int = 0) -> Verdict | None:
    """Walk `chain` for a UDP packet; None when the chain ends (returns to its caller) without a verdict."""
    if depth > 20:
        return None
    for rule in tables.rules.get(chain, []):
        if not _matches(rule, src, dst, sport, dport):
            continue
        target = rule.target
        if target in ("ACCEPT", "RETURN"):
            return Verdict(True, rule)
        if target in ("DROP", "REJECT"):
            return Verdict(False, rule)
        if target and target in tables.rules:
            inner = evaluate(tables, target, src, dst, sport, dport, depth + 1)
            if inner is not None:
                return inner
    return None


def ingress_chains(tables: Tables) -> dict[str, str]:
    """Per-port ingress chains (Neutron's `neutron-openvswi-i<dev>`, provnet's `provnet-fw-i<dev>`) -> suffix."""
    out = {}
    for chain in tables.rules:
        m = INGRESS_CHAIN.match(chain)
        if m:
            out[chain] = m.group("suffix")
    return out
