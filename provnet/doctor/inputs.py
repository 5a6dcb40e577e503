# Everything the doctor reads, gathered once: INI files by kind, local.conf, dnsmasq, iptables, provnet, registry.
"""The checks never open a file or a database: they get an `Inputs`.

Option lookup (`Inputs.entry(kind, section, key)`) follows what the services would use: the config
directory's file of that kind, then the local.conf variables devstack turns into that option, then the
local.conf post-config blocks for that file (devstack applies them last, so they win). The winning entry
carries its file and line, which is where a finding points.

Every input read is a `Source` in `Inputs.sources`. While a check runs (`Inputs.current_check`), what it reads is
noted on the sources it came from: an option looked up in a file kind, `inputs.snapshot`, `inputs.provnet` and
`inputs.iptables` read at all, and dnsmasq items through `examined(...)`. So doctor can say how many checks ran on
each input, and name every input no check ran on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provnet.config import Config
from provnet.doctor.dnsmasq import DnsmasqConfig
from provnet.doctor.ini import Entry, IniFile, Location, parse_bool, read_ini, split_list
from provnet.doctor.iptables import Tables
from provnet.doctor.localconf import LocalConf
from provnet.model.metadata_mode import DEFAULT_MODE, metadata_hops, metadata_port
from provnet.model.resources import Agent, Network, Port, Router, Subnet

PROVNET_ENV_LABEL = "provnet configuration (environment)"
_WATCHED = frozenset({"snapshot", "provnet", "iptables"})
CONFIG_FILES = ("neutron.conf", "ml2_conf.ini", "openvswitch_agent.ini", "dhcp_agent.ini", "l3_agent.ini",
                "metadata_agent.ini", "nova.conf")
DHCP_AGENT_TYPE = "DHCP agent"


@dataclass
class Source:
    """One input doctor was given (or found named by another), and the checks that ran on it."""

    label: str  # a path, "dnsmasq command line N", "registry (database)"
    kind: str  # what it was read as, e.g. "neutron.conf", "dnsmasq options file"
    held: str = ""  # what was found in it, e.g. "3 dhcp-options"
    unread: str = ""  # why nothing in it could be used (set by the reader: not understood)
    failed: bool = False  # it could not be read at all (a config.parse finding says so already)
    checks: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)  # files (or directories) it names, read too: their checks count

    @property
    def title(self) -> str:
        """"dnsmasq options file /x/opts", or just "dnsmasq command line 1" when the label says what it is."""
        return self.label if self.label.startswith(self.kind) else f"{self.kind} {self.label}"


@dataclass
class Snapshot:
    """The registry's resources, read once (the checks are pure functions over it). `live` is False for networks
    declared by an operator's commands (no agents, no VM ports: only the networks' shape)."""

    networks: list[Network] = field(default_factory=list)
    subnets: list[Subnet] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    source: str = "registry"
    live: bool = True
    provnet: bool = True  # provnet's own registry (False: a cloud's Neutron in companion mode, whose ports
    #                       provnet's network mode does not make)

    @classmethod
    def from_registry(cls, registry, source: str = "registry") -> Snapshot:
        return cls(registry.list_networks(), registry.list_subnets(), registry.list_ports(),
                   registry.list_routers(), registry.list_agents(), source)

    def network(self, network_id: str) -> Network | None:
        return next((n for n in self.networks if n.id == network_id), None)

    def subnets_of(self, network_id: str) -> list[Subnet]:
        return [s for s in self.subnets if s.network_id == network_id]

    def router_ips(self, subnet: Subnet | None = None) -> set[str]:
        """Fixed IPs of router interface ports (on one subnet, or all)."""
        return {f.ip_address for p in self.ports if p.is_router_interface for f in p.fixed_ips
                if subnet is None or f.subnet_id == subnet.id}

    def metadata_hops(self, mode: str) -> dict[str, str]:
        """Subnet id -> the metadata port's address its VMs must route 169.254.169.254/32 via (network mode)."""
        return metadata_hops(mode, self.subnets, self.ports)

    def metadata_port(self, network_id: str) -> Port | None:
        return metadata_port(self.ports, network_id)

    def vm_ports(self, subnet: Subnet | None = None) -> list[Port]:
        """Ports a VM uses (not network:* owners), optionally only those with an address on `subnet`."""
        ports = [p for p in self.ports if not p.device_owner.startswith("network:")]
        if subnet is not None:
            ports = [p for p in ports if any(f.subnet_id == subnet.id for f in p.fixed_ips)]
        return ports

    def name(self, network_id: str) -> str:
        net = self.network(network_id)
        return f"{net.name} ({net.id})" if net and net.name else network_id


@dataclass
class Inputs:
    files: dict[str, IniFile] = field(default_factory=dict)  # config directory, by file kind
    local_conf: LocalConf | None = None
    dnsmasq: DnsmasqConfig = field(default_factory=DnsmasqConfig)
    iptables: Tables | None = None
    dhcp_server_ip: str | None = None
    provnet: Config | None = None  # checked only when it was configured (a file or the environment)
    provnet_files: list[IniFile] = field(default_factory=list)
    snapshot: Snapshot | None = None
    problems: list[tuple[Location, str]] = field(default_factory=list)  # inputs that could not be read
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    sources: dict[str, Source] = field(default_factory=dict)  # by label, in the order read
    current_check: str = ""  # set by run_checks while a check runs

    @property
    def metadata_mode(self) -> str:
        """[metadata] mode of provnet's configuration (auto when provnet is not configured here)."""
        config = self.provnet
        return str(config.get("metadata.mode")) if config is not None else DEFAULT_MODE

    # -- which check read which input ------------------------------------------------------------
    def add_source(self, source: Source) -> Source:
        return self.sources.setdefault(source.label, source)

    def examined(self, *wheres: Location | str | None) -> None:
        """Note that the running check used what was read from these files (or labels)."""
        check = object.__getattribute__(self, "current_check")
        if not check:
            return
        sources = object.__getattribute__(self, "sources")
        for where in wheres:
            label = where.file if isinstance(where, Location) else where
            if label in sources:
                sources[label].checks.add(check)

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if name in _WATCHED and value is not None and object.__getattribute__(self, "current_check"):
            labels = object.__getattribute__(self, "_watched_labels")(name, value)
            object.__getattribute__(self, "examined")(*labels)
        return value

    def _watched_labels(self, name: str, value) -> list[str]:
        if name == "snapshot":
            return [value.source]
        if name == "iptables":
            return [value.path]
        return [ini.path for ini in object.__getattribute__(self, "provnet_files")] + [PROVNET_ENV_LABEL]

    def _mark_kind(self, kind: str) -> None:
        files, local_conf = object.__getattribute__(self, "files"), object.__getattribute__(self, "local_conf")
        if kind in files:
            self.examined(files[kind].path)
        if local_conf is not None and kind in local_conf.option_entries():
            self.examined(local_conf.path)

    # -- OpenStack-side options ------------------------------------------------------------------
    def has(self, kind: str) -> bool:
        self._mark_kind(kind)
        return kind in self.files or bool(self.local_conf and kind in self.local_conf.option_entries())

    @property
    def has_openstack(self) -> bool:
        return any(self.has(kind) for kind in CONFIG_FILES)

    def entries(self, kind: str, section: str, key: str) -> list[Entry]:
        """Every assignment of an option for one file kind, in the order applied (the last wins)."""
        self._mark_kind(kind)
        section_n = section if section == "DEFAULT" else section.lower()
        out = list(self.files[kind].all(section, key)) if kind in self.files else []
        if self.local_conf:
            out += [e for e in self.local_conf.option_entries().get(kind, [])
                    if e.section == section_n and e.key == key]
        return out

    def entry(self, kind: str, section: str, key: str) -> Entry | None:
        found = self.entries(kind, section, key)
        return found[-1] if found else None

    def value(self, kind: str, section: str, key: str, default: str) -> str:
        e = self.entry(kind, section, key)
        return e.value if e else default

    def flag(self, kind: str, section: str, key: str, default: bool) -> bool:
        e = self.entry(kind, section, key)
        parsed = parse_bool(e.value) if e else None
        return default if parsed is None else parsed

    def list_value(self, kind: str, section: str, key: str, default: str) -> list[str]:
        return split_list(self.value(kind, section, key, default))

    def where(self, kind: str, section: str = "DEFAULT", key: str | None = None) -> Location:
        """Where to point for an option: its entry, else its section's header, else the file."""
        self._mark_kind(kind)
        if key:
            e = self.entry(kind, section, key)
            if e:
                return e.where
        ini = self.files.get(kind)
        if ini is not None:
            section_n = section if section == "DEFAULT" else section.lower()
            return ini.sections.get(section_n, Location(ini.path))
        if self.local_conf and kind in self.local_conf.option_entries():
            return Location(self.local_conf.path)
        return Location(kind)

    def all_ini(self) -> list[IniFile]:
        out = list(self.files.values()) + list(self.provnet_files)
        if self.local_conf:
            out += list(self.local_conf.post_config.values())
        self.examined(*(ini.path for ini in out))
        return out

    # -- provnet's own options ---------------------------------------------------------------------
    def provnet_where(self, key: str) -> Location:
        """The file and line of a provnet option (its section and name as in provnet.conf)."""
        section, _, name = key.rpartition(".")
        section = section or "DEFAULT"
        for ini in reversed(self.provnet_files):
            e = ini.get(section, name)
            if e:
                return e.where
        source = self.provnet.source(key) if self.provnet else "default"
        return Location(f"provnet ({source})")


_NOT_CONFIGURATION = ("state_path", "database.connection", "debug")


def provnet_is_configured(config: Config) -> bool:
    """provnet's options are checked once an operator set one (in a file or the environment)."""
    return any(setting.source != "default" and setting.source != "command line" and opt.key not in _NOT_CONFIGURATION
               for opt, setting in config.items())


def load_config_dir(directory: str | Path) -> dict[str, IniFile]:
    """The known files anywhere under `directory` (e.g. /etc/neutron/plugins/ml2/ml2_conf.ini), by name."""
    root = Path(directory)
    found: dict[str, IniFile] = {}
    for name in CONFIG_FILES:
        direct = root / name
        candidates = [direct] if direct.is_file() else sorted(root.rglob(name))
        if candidates:
            found[name] = read_ini(candidates[0])
    return found
