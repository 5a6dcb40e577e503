# Everything the doctor reads, gathered once: INI files by kind, local.conf, dnsmasq, iptables, provnet, registry.
"""The checks never open a file or a database: they get an `Inputs`.

Option lookup (`Inputs.entry(kind, section, key)`) follows what the services would use: the config
directory's file of that kind, then the local.conf variables devstack turns into that option, then the
local.conf post-config blocks for that file (devstack applies them last, so they win). The winning entry
carries its file and line, which is where a finding points.
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
from provnet.model.resources import Agent, Network, Port, Router, Subnet

CONFIG_FILES = ("neutron.conf", "ml2_conf.ini", "openvswitch_agent.ini", "dhcp_agent.ini", "l3_agent.ini",
                "metadata_agent.ini", "nova.conf")
DHCP_AGENT_TYPE = "DHCP agent"


@dataclass
class Snapshot:
    """The live registry's resources, read once (the checks are pure functions over it)."""

    networks: list[Network] = field(default_factory=list)
    subnets: list[Subnet] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    routers: list[Router] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    source: str = "registry"

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

    # -- OpenStack-side options ------------------------------------------------------------------
    def has(self, kind: str) -> bool:
        return kind in self.files or bool(self.local_conf and kind in self.local_conf.option_entries())

    @property
    def has_openstack(self) -> bool:
        return any(self.has(kind) for kind in CONFIG_FILES)

    def entries(self, kind: str, section: str, key: str) -> list[Entry]:
        """Every assignment of an option for one file kind, in the order applied (the last wins)."""
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
