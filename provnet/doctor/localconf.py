# devstack local.conf: the [[local|localrc]] shell variables and the [[post-config|FILE]] INI blocks, with lines.
"""A local.conf has meta-sections `[[phase|target]]`. Two matter for networking:

- `[[local|localrc]]`: shell assignments (`OVS_BRIDGE_MAPPINGS=physnet1:br-phy`) devstack turns into options;
- `[[post-config|$NEUTRON_CONF]]` (and the other targets below): INI text merged into that file after
  devstack wrote it, so it wins over the variables.

`LOCALRC_OPTIONS` says which variable becomes which option of which file kind; `POST_CONFIG_TARGETS` maps the
meta-section targets to the same file kinds the doctor uses for a config directory.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from provnet.doctor.ini import Entry, IniFile, Location, parse_ini

# file kinds: the file names of a neutron/nova config directory
POST_CONFIG_TARGETS = {
    "NEUTRON_CONF": "neutron.conf",
    "Q_PLUGIN_CONF_FILE": "ml2_conf.ini",
    "NEUTRON_CORE_PLUGIN_CONF": "ml2_conf.ini",
    "Q_DHCP_CONF_FILE": "dhcp_agent.ini",
    "Q_L3_CONF_FILE": "l3_agent.ini",
    "Q_META_CONF_FILE": "metadata_agent.ini",
    "OVS_AGENT_CONF": "openvswitch_agent.ini",
    "NOVA_CONF": "nova.conf",
}

# variable -> (file kind, section, option)
LOCALRC_OPTIONS = {
    "Q_ML2_TENANT_NETWORK_TYPE": ("ml2_conf.ini", "ml2", "tenant_network_types"),
    "Q_ML2_PLUGIN_TYPE_DRIVERS": ("ml2_conf.ini", "ml2", "type_drivers"),
    "Q_ML2_PLUGIN_MECHANISM_DRIVERS": ("ml2_conf.ini", "ml2", "mechanism_drivers"),
    "ML2_VLAN_RANGES": ("ml2_conf.ini", "ml2_type_vlan", "network_vlan_ranges"),
    "OVS_BRIDGE_MAPPINGS": ("openvswitch_agent.ini", "ovs", "bridge_mappings"),
    "ENABLE_ISOLATED_METADATA": ("dhcp_agent.ini", "DEFAULT", "enable_isolated_metadata"),
    "ENABLE_METADATA_NETWORK": ("dhcp_agent.ini", "DEFAULT", "enable_metadata_network"),
    "METADATA_PROXY_SHARED_SECRET": ("metadata_agent.ini", "DEFAULT", "metadata_proxy_shared_secret"),
    "Q_META_DATA_IP": ("metadata_agent.ini", "DEFAULT", "nova_metadata_host"),
}

_META = re.compile(r"^\[\[\s*([^|\]]+?)\s*\|\s*([^\]]+?)\s*\]\]\s*$")
_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass
class LocalConf:
    path: str
    variables: dict[str, tuple[str, Location]] = field(default_factory=dict)
    post_config: dict[str, IniFile] = field(default_factory=dict)  # file kind -> its INI block(s)
    problems: list[tuple[Location, str]] = field(default_factory=list)

    def option_entries(self) -> dict[str, list[Entry]]:
        """Per file kind, the options this local.conf sets: localrc-derived first, then post-config (wins)."""
        out: dict[str, list[Entry]] = {}
        for var, (kind, section, key) in LOCALRC_OPTIONS.items():
            if var in self.variables:
                value, where = self.variables[var]
                out.setdefault(kind, []).append(Entry(section, key, value, where))
        for kind, ini in self.post_config.items():
            out.setdefault(kind, []).extend(ini.entries)
        return out


def _target_kind(target: str) -> str | None:
    name = target.strip().lstrip("/").lstrip("$").strip("{}")
    if name in POST_CONFIG_TARGETS:
        return POST_CONFIG_TARGETS[name]
    base = Path(target).name
    return base if base in POST_CONFIG_TARGETS.values() else None


def _shell_value(raw: str) -> str:
    try:
        parts = shlex.split(raw, comments=True)
    except ValueError:
        return raw.strip()
    return " ".join(parts)


def parse_local_conf(text: str, path: str) -> LocalConf:
    conf = LocalConf(path)
    lines = text.splitlines()
    blocks: list[tuple[str, str, int, list[str]]] = []  # phase, target, first line no, lines
    current: tuple[str, str, int, list[str]] | None = None
    for index, line in enumerate(lines, start=1):
        m = _META.match(line)
        if m:
            current = (m.group(1), m.group(2), index + 1, [])
            blocks.append(current)
        elif current is not None:
            current[3].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            conf.problems.append((Location(path, index), "text before the first [[phase|target]] meta-section "
                                                          "is ignored by devstack"))
    for phase, target, first, body in blocks:
        if phase == "local" and target == "localrc":
            for offset, line in enumerate(body):
                m = _ASSIGN.match(line)
                if m:
                    conf.variables[m.group(1)] = (_shell_value(m.group(2)), Location(path, first + offset))
        elif phase == "post-config":
            kind = _target_kind(target)
            if kind is None:
                continue
            ini = parse_ini("\n".join(body), path, first_line=first)
            conf.problems.extend(ini.problems)
            merged = conf.post_config.setdefault(kind, IniFile(path))
            merged.entries.extend(ini.entries)
            for name, where in ini.sections.items():
                merged.sections.setdefault(name, where)
    return conf


def read_local_conf(path: str | Path) -> LocalConf:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        conf = LocalConf(str(path))
        conf.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return conf
    return parse_local_conf(text, str(path))
