# Rule sets in chains of our own: pure planning over iptables-save text, applied atomically with iptables-restore.
from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
MAX_CHAIN_NAME = 28  # XT_EXTENSION_MAXNAMELEN - 1


class IptablesError(RuntimeError):
    """iptables-save/iptables-restore failed; the message carries the tool's own words and the input line."""


@dataclass(frozen=True)
class Chain:
    table: str
    name: str
    rules: tuple[str, ...]  # rule specs, as after `-A <name> `


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain sending packets to one of our chains: `-A <chain> -j <target>` at the top."""

    table: str
    chain: str
    target: str

    @property
    def spec(self) -> str:
        return f"-j {self.target}"


@dataclass(frozen=True)
class Ruleset:
    """Everything one owner puts into one network namespace's iptables; every chain name starts with `prefix`."""

    prefix: str
    chains: tuple[Chain, ...] = ()
    jumps: tuple[Jump, ...] = ()

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for chain in self.chains:
            if not chain.name.startswith(self.prefix):
                raise ValueError(f"chain {chain.name!r} does not start with the owner prefix {self.prefix!r}")
            if len(chain.name) > MAX_CHAIN_NAME:
                raise ValueError(f"chain name {chain.name!r} is longer than {MAX_CHAIN_NAME} characters")
            if chain.table not in BUILTIN_CHAINS:
                raise ValueError(f"unknown table {chain.table!r}")
            if (chain.table, chain.name) in seen:
                raise ValueError(f"chain {chain.table}/{chain.name} given twice")
            seen.add((chain.table, chain.name))
        for jump in self.jumps:
            if jump.chain not in BUILTIN_CHAINS.get(jump.table, ()):
                raise ValueError(f"{jump.table}/{jump.chain} is not a built-in chain")
            if (jump.table, jump.target) not in seen:
                raise ValueError(f"jump to {jump.table}/{jump.target}, which the rule set does not define")

    @property
    def tables(self) -> list[str]:
        return sorted({c.table for c in self.chains})


@dataclass
class Table:
    chains: list[str] = field(default_factory=list)
    rules: list[tuple[str, str]] = field(default_factory=list)  # (chain, spec)


def parse_save(text: str) -> dict[str, Table]:
    """iptables-save output -> {table: Table}; comments, counters and policies are dropped."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], Table())
        elif line == "COMMIT":
            current = None
        elif current is None:
            raise IptablesError(f"iptables-save: line outside a table: {line!r}")
        elif line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            current.rules.append((chain, spec))
        else:
            raise IptablesError(f"iptables-save: unexpected line {line!r}")
    return tables


def _jump_target(spec: str) -> str | None:
    words = spec.split()
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "-g", "--jump", "--goto"):
            return words[i + 1]
    return None


def plan_apply(current: dict[str, Table], desired: Ruleset) -> str:
    """iptables-restore --noflush input turning `current` into `current` + exactly `desired` for its owner.

    Our chains are declared (which creates or flushes them) and refilled; a jump from a built-in chain is
    inserted only when missing; our chains and jumps the rule set no longer has are removed. Applying the same
    rule set twice gives the same tables; nothing outside the owner's prefix is touched.
    """
    out: list[str] = []
    tables = sorted(set(desired.tables) | {t for t, tab in current.items() if _owned(tab, desired.prefix)})
    for table in tables:
        have = current.get(table, Table())
        want_chains = [c for c in desired.chains if c.table == table]
        want_names = {c.name for c in want_chains}
        want_jumps = [j for j in desired.jumps if j.table == table]
        stale = [c for c in have.chains if c.startswith(desired.prefix) and c not in want_names]
        out.append(f"*{table}")
        out.extend(f":{c.name} - [0:0]" for c in want_chains)
        out.extend(f"-F {name}" for name in stale)
        for chain, spec in have.rules:
            target = _jump_target(spec)
            if (chain in BUILTIN_CHAINS[table] and target and target.startswith(desired.prefix)
                    and Jump(table, chain, target) not in want_jumps):
                out.append(f"-D {chain} {spec}")
        for c in want_chains:
            out.extend(f"-A {c.name} {rule}" for rule in c.rules)
        present = {(chain, spec) for chain, spec in have.rules}
        for jump in reversed(want_jumps):
            if (jump.chain, jump.spec) not in present:
                out.append(f"-I {jump.chain} 1 {jump.spec}")
        out.extend(f"-X {name}" for name in stale)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def plan_remove(current: dict[str, Table], prefix: str) -> str:
    """iptables-restore --noflush input removing every chain named `prefix...` and every rule jumping to one."""
    return plan_apply(current, Ruleset(prefix))


def _owned(table: Table, prefix: str) -> bool:
    return any(c.startswith(prefix) for c in table.chains)


# ---- the I/O shell: run the tools inside a network namespace ----

def _in_netns(namespace: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)


def _run(namespace: str | None, argv: Sequence[str], stdin: str | None = None) -> str:
    proc = subprocess.run(_in_netns(namespace, argv), input=stdin, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        where = f" in namespace {namespace}" if namespace else ""
        raise IptablesError(f"{' '.join(argv)}{where} failed: {proc.stderr.strip() or proc.stdout.strip()}"
                            + (f"\ninput was:\n{stdin}" if stdin else ""))
    return proc.stdout


def _tool(name: str, ipv6: bool) -> str:
    """iptables-save / -restore, or their ip6tables twins (the same text format, IPv6 rules)."""
    return "ip6" + name[2:] if ipv6 else name


def save(namespace: str | None, tables: Iterable[str] = ("filter", "nat", "mangle", "raw"), ipv6: bool = False,
         ) -> dict[str, Table]:
    out: dict[str, Table] = {}
    for table in tables:
        out.update(parse_save(_run(namespace, [_tool("iptables-save", ipv6), "-t", table])))
    return out


def apply(namespace: str | None, ruleset: Ruleset, ipv6: bool = False) -> None:
    """Make the namespace's iptables (ip6tables with `ipv6`) hold exactly `ruleset` for its owner (idempotent, one
    transaction)."""
    _run(namespace, [_tool("iptables-restore", ipv6), "--noflush"], plan_apply(save(namespace, ipv6=ipv6), ruleset))


def remove(namespace: str | None, prefix: str, ipv6: bool = False) -> None:
    """Remove every chain and jump of the owner `prefix` from the namespace's iptables (ip6tables with `ipv6`):
    complete; a no-op if none."""
    current = save(namespace, ipv6=ipv6)
    if any(_owned(t, prefix) for t in current.values()):
        _run(namespace, [_tool("iptables-restore", ipv6), "--noflush"], plan_remove(current, prefix))
