# Every provnet option in one table (OpenStack's names and sections where they exist) and where each value came from.
from __future__ import annotations

import configparser
import difflib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provnet.model.metadata_mode import check_mode

DEFAULT_CONFIG_FILE = "/etc/provnet/provnet.conf"
MIN_LEASE = 120  # seconds: the shortest DHCP lease provnet hands out (as dnsmasq)


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names the option and the source."""


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def to_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def to_mapping(value: Any) -> dict[str, str]:
    """`physnet1:br-phy,physnet2:br-two` -> {"physnet1": "br-phy", ...} (oslo's dict-of-colon-pairs form)."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, str] = {}
    for item in to_list(value):
        key, sep, val = item.partition(":")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"expected key:value pairs separated by commas, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"key {key.strip()!r} given twice")
        out[key.strip()] = val.strip()
    return out


def to_port(value: Any) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(f"a TCP/UDP port is 1..65535, got {port}")
    return port


def to_positive(value: Any) -> float:
    number = float(value)
    if not number > 0:  # also refuses nan
        raise ValueError(f"must be greater than 0, got {value!r}")
    return number


def to_nonneg(value: Any) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise ValueError(f"must be 0 or more, got {value!r}")
    return number


def to_nonneg_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {value!r}")
    return number


def to_lease_time(value: Any) -> int:
    """A DHCP lease in seconds: at least 120 (dnsmasq's floor; clients renew at half of it), below 0xffffffff
    (which DHCP reserves for an infinite lease)."""
    number = int(value)
    if not MIN_LEASE <= number < 0xFFFFFFFF:
        raise ValueError(f"must be {MIN_LEASE} to {0xFFFFFFFF - 1} seconds, got {value!r}")
    return number


def to_token_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("optional", "required"):
        raise ValueError(f"must be optional or required, got {value!r}")
    return text


def to_metadata_mode(value: Any) -> str:
    return check_mode(value)


def to_hop_limit(value: Any) -> int:
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError(f"must be 1..64, got {value!r}")
    return number


def to_wait(value: Any) -> int:
    number = int(value)
    if not 1 <= number <= 55:
        raise ValueError(f"must be 1..55, got {value!r}")
    return number


def to_protocol(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("http", "https"):
        raise ValueError(f"must be http or https, got {value!r}")
    return text


def to_auth_strategy(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("noauth", "keystone"):
        raise ValueError(f"must be noauth or keystone, got {value!r}")
    return text


def to_auth_type(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("password", "v3password"):
        raise ValueError(f"only password authentication is supported for provnet's service user, got {value!r}")
    return text


# What each converter accepts, in the words of an error message ("... must be <this>, got 'x'").
EXPECTED: dict[Callable[[Any], Any], str] = {
    to_bool: "a boolean (true or false)",
    to_mapping: "physical_network:bridge pairs separated by commas, each key once (physnet1:br-phy)",
    to_port: "an integer 1..65535",
    to_positive: "a number greater than 0",
    to_nonneg: "a number 0 or more",
    to_nonneg_int: "an integer 0 or more",
    to_lease_time: f"an integer {MIN_LEASE}..{0xFFFFFFFF - 1} (seconds)",
    to_protocol: "http or https",
    to_auth_strategy: "noauth or keystone",
    to_auth_type: "password",
    to_token_mode: "optional or required",
    to_metadata_mode: "router, network or auto",
    to_hop_limit: "an integer 1..64",
    to_wait: "an integer 1..55 (seconds)",
}


@dataclass(frozen=True)
class Option:
    name: str
    section: str
    default: Any
    help: str
    convert: Callable[[Any], Any] = str
    env: str | None = None
    secret: bool = False

    @property
    def key(self) -> str:
        return self.name if self.section == "DEFAULT" else f"{self.section}.{self.name}"


OPTIONS: tuple[Option, ...] = (
    # where state lives
    Option("state_path", "DEFAULT", "/var/lib/provnet", "Directory for the SQLite store, sockets and the "
           "lease journal.", env="PROVNET_STATE_PATH"),
    Option("connection", "database", "sqlite:///$state_path/provnet.sqlite", "Database URL: SQLite (one host) or "
           "postgresql://user:pass@host/db (several hosts).", env="PROVNET_DB", secret=True),
    Option("debug", "DEFAULT", False, "Log at DEBUG level.", to_bool, env="PROVNET_DEBUG"),
    Option("log_file", "DEFAULT", "", "Write the log to this file instead of stderr (reopened when logrotate "
           "moves it); --log-file."),
    Option("use_json", "DEFAULT", False, "Log JSON objects, one per line (time, level, logger, process, message, "
           "request_id), instead of text; --log-format json.", to_bool),
    # networking API (neutron-server)
    Option("bind_host", "DEFAULT", "127.0.0.1", "Address the networking API listens on. Anything but a loopback "
           "address needs auth_strategy = keystone (or noauth_allow_remote)."),
    Option("bind_port", "DEFAULT", 9696, "Port of the networking API.", to_port),
    # identity (Neutron's auth_strategy and [keystone_authtoken]; oslo.policy's policy_file)
    Option("auth_strategy", "DEFAULT", "noauth", "noauth (every caller is admin; loopback only) or keystone "
           "(X-Auth-Token validated against Keystone, Neutron's policy).", to_auth_strategy),
    Option("noauth_allow_remote", "DEFAULT", False, "Let auth_strategy = noauth listen on a non-loopback bind_host: "
           "anyone who reaches it is admin. Only from a configuration file.", to_bool),
    Option("policy_file", "oslo_policy", "", "Policy file in oslo.policy's YAML (or JSON) format overriding "
           "Neutron's default rules by name (empty: the defaults)."),
    Option("www_authenticate_uri", "keystone_authtoken", "", "Keystone URL clients are sent to in a 401's "
           "WWW-Authenticate header (default: auth_url)."),
    Option("auth_url", "keystone_authtoken", "", "Keystone URL provnet validates tokens at, e.g. "
           "http://keystone:5000/v3."),
    Option("auth_type", "keystone_authtoken", "password", "How provnet's service user authenticates (password).",
           to_auth_type),
    Option("username", "keystone_authtoken", "", "provnet's service user (needs the service or admin role to "
           "validate tokens)."),
    Option("password", "keystone_authtoken", "", "Password of the service user.", secret=True),
    Option("project_name", "keystone_authtoken", "service", "Project of the service user."),
    Option("user_domain_name", "keystone_authtoken", "Default", "Domain of the service user."),
    Option("project_domain_name", "keystone_authtoken", "Default", "Domain of the service user's project."),
    Option("cafile", "keystone_authtoken", "", "CA bundle to verify Keystone's certificate (https)."),
    Option("insecure", "keystone_authtoken", False, "Do not verify Keystone's certificate.", to_bool),
    Option("token_cache_time", "keystone_authtoken", 300.0, "Seconds a validated token is trusted without asking "
           "Keystone again (never past its expiry): a revoked token works at most this long.", to_nonneg),
    Option("negative_cache_time", "keystone_authtoken", 10.0, "Seconds a token Keystone refused is refused "
           "without asking again.", to_nonneg),
    Option("http_connect_timeout", "keystone_authtoken", 5.0, "Seconds to wait for Keystone before answering "
           "503.", to_positive),
    Option("memcached_servers", "keystone_authtoken", "", "Ignored (provnet caches tokens in memory); logged "
           "when set.", to_list),
    # TLS for the two HTTP APIs (oslo.service's [ssl] for neutron-server, nova's [wsgi] for the metadata API)
    Option("cert_file", "ssl", "", "Certificate (PEM, chain included) of the networking API: with key_file it "
           "serves https."),
    Option("key_file", "ssl", "", "Private key of [ssl] cert_file."),
    Option("ssl_cert_file", "wsgi", "", "Certificate (PEM) of the metadata API: with ssl_key_file it serves "
           "https (agents then need nova_metadata_protocol = https)."),
    Option("ssl_key_file", "wsgi", "", "Private key of [wsgi] ssl_cert_file."),
    Option("agent_down_time", "DEFAULT", 75.0, "Seconds without a heartbeat after which an agent is dead. "
           "Keep it at least twice [agent] report_interval.", to_positive),
    Option("pagination_max_limit", "DEFAULT", 1000, "Items one list answer of the networking API holds at most; "
           "past it the answer's <collection>_links has a next link (openstacksdk and the openstack CLI follow "
           "it). 0: no cap (a list of 100,000 ports is built in one answer).", to_nonneg_int),
    Option("flat_networks", "ml2_type_flat", "*", "Physical networks flat networks may use; * is any.", to_list),
    Option("network_vlan_ranges", "ml2_type_vlan", "", "physnet[:min:max] entries VLAN networks may use; "
           "empty allows any physical network with ids 1..4094.", to_list),
    # metadata agent (neutron-metadata-agent, metadata_agent.ini names)
    Option("metadata_proxy_shared_secret", "DEFAULT", "", "Secret the agent signs instance ids with and the "
           "metadata API checks. Set the same value for both.", secret=True),
    Option("metadata_proxy_shared_secret_previous", "DEFAULT", "", "A second secret the metadata API accepts "
           "(signatures and session tokens) while metadata_proxy_shared_secret rotates; nothing signs with it. "
           "Rotation order in the README; SIGHUP reloads both.", secret=True),
    Option("nova_metadata_host", "DEFAULT", "127.0.0.1", "Host of the metadata API the agent forwards to."),
    Option("nova_metadata_port", "DEFAULT", 8775, "Port of the metadata API.", to_port),
    Option("nova_metadata_protocol", "DEFAULT", "http", "http or https to the metadata API.", to_protocol),
    Option("nova_metadata_insecure", "DEFAULT", False, "Do not verify the metadata API's certificate.", to_bool),
    Option("nova_client_cert", "DEFAULT", "", "Client certificate for the metadata API (https)."),
    Option("nova_client_priv_key", "DEFAULT", "", "Private key of nova_client_cert."),
    Option("auth_ca_cert", "DEFAULT", "", "CA bundle to verify the metadata API's certificate."),
    Option("metadata_proxy_socket", "DEFAULT", "$state_path/metadata_proxy", "Unix socket the metadata agent "
           "listens on and the proxies connect to."),
    Option("metadata_workers", "DEFAULT", 0, "Worker processes of the agent (0: one asyncio process).",
           to_nonneg_int),
    Option("metadata_backlog", "DEFAULT", 4096, "Listen backlog of the agent's socket.", to_nonneg_int),
    Option("metadata_port", "DEFAULT", 9697, "Port the namespace metadata proxy listens on.", to_port),
    Option("max_connections", "metadata_proxy", 4096, "Client connections one metadata proxy holds at most (0: "
           "what the open files limit allows; the proxy raises its soft limit to the hard limit at start and lowers "
           "this to fit). When full, the address holding the most connections loses its longest-idle one to a "
           "newcomer; 503 only when none is idle.", to_nonneg_int),
    Option("max_connections_per_source", "metadata_proxy", 64, "Connections one source (one VM: its MAC when the "
           "proxy's neighbour table names it, IPv4 and IPv6 together, else its address) may hold open at a proxy; "
           "more are refused at once with 429, so one VM cannot starve the others (0: no cap).",
           to_nonneg_int),
    Option("max_connection_rate_per_source", "metadata_proxy", 100.0, "New connections a second one source "
           "(its MAC, else its address) may open at a proxy (as many at once); beyond, they are reset at once, "
           "so a VM reconnecting in a loop costs the proxy little (0: no limit). cloud-init opens about 30 in a "
           "boot.", to_nonneg),
    Option("header_timeout", "metadata_proxy", 30.0, "Seconds a client has to send a whole request, head and body, "
           "before 408. Shrinks to 1 s as the proxy fills from half of max_connections to full.", to_positive),
    Option("idle_timeout", "metadata_proxy", 30.0, "Seconds a keep-alive connection may stay idle, or a client "
           "leave its answers unread, before the proxy closes it. Shrinks as header_timeout does.", to_positive),
    Option("rate_limit_enabled", "metadata_rate_limiting", False, "Limit requests per source address (429).",
           to_bool),
    Option("base_window_duration", "metadata_rate_limiting", 10.0, "Seconds of the base window.", to_positive),
    Option("base_query_rate_limit", "metadata_rate_limiting", 10, "Requests allowed per base window.",
           to_nonneg_int),
    Option("burst_window_duration", "metadata_rate_limiting", 10.0, "Seconds of the burst window.",
           to_positive),
    Option("burst_query_rate_limit", "metadata_rate_limiting", 10, "Requests allowed per burst window.",
           to_nonneg_int),
    # supervision (provnet serve's children, the metadata agent's workers)
    Option("watchdog_timeout", "DEFAULT", 30.0, "Seconds a supervised child process (serve's metadata API, "
           "metadata agent and DHCP server; metadata agent workers) may go without a watchdog ping before it is "
           "killed and restarted (its event loop is stuck).", to_positive),
    # how the metadata agent and API use the registry (provnet's own)
    Option("registry_timeout", "metadata", 10.0, "Seconds the metadata agent and API wait for a registry "
           "read before answering 503 (a hung database delays no cached answer).", to_positive),
    Option("cache_stale_if_error", "metadata", 600.0, "Seconds the metadata agent and API keep answering from "
           "their caches while the registry is unreachable (0: answer 503 at once).", to_nonneg),
    Option("verify_mac", "metadata", True, "The metadata agent requires the port with the request's address to "
           "have the MAC the proxy read from its namespace's neighbour table (a guest on a neighbour's address "
           "gets 404, not the neighbour's data; so does one on a neighbour's EUI-64 IPv6 link-local address). Requests "
           "without a MAC (Neutron's haproxy sends none; routed sources) are identified by address alone; an IPv6 "
           "link-local source is always found by its MAC (the proxy's, else its EUI-64 one).", to_bool),
    # what the metadata API offers beyond Nova: session tokens, identity documents, watch (provnet's own)
    Option("mode", "metadata", "auto", "How VMs reach 169.254.169.254. router: via a router interface holding the "
           "subnet's gateway (its qrouter- namespace). network: via the network's metadata port (device_owner "
           "network:distributed, one address from each IPv4 subnet's pool, made by the registry with the first "
           "subnet), served on every host by the L3 agent's provnet-meta- namespace. auto: network mode for a subnet "
           "whose gateway no router interface holds, router mode otherwise. The route DHCP, the exports and "
           "network_data.json give is decided by it: set the same value for every provnet process.",
           to_metadata_mode),
    Option("http_tokens", "metadata", "optional", "Session tokens (IMDSv2) for instances that do not say "
           "(property provnet:http_tokens): optional (a request without a token is served) or required (401 "
           "without a valid token).", to_token_mode),
    Option("http_put_response_hop_limit", "metadata", 1, "IP TTL of the token PUT's answer for instances that "
           "do not say (property provnet:http_put_response_hop_limit): 1 keeps it from crossing a router or NAT "
           "inside the VM.", to_hop_limit),
    Option("identity_signing_key", "metadata", "$state_path/metadata-identity.pem", "PEM private key (EC P-256, "
           "ES256) the metadata API signs identity documents with; created (0600) when missing. The networking "
           "API publishes its public key in /provnet/v1/metadata/jwks.json."),
    Option("identity_verify_keys", "metadata", "", "More PEM keys (public or private) whose public keys the "
           "networking API publishes: the next key before a rotation, the previous one until its last document "
           "expires.", to_list),
    Option("identity_ttl", "metadata", 600, "Seconds an identity document is valid (its exp - iat).",
           to_nonneg_int),
    Option("identity_issuer", "metadata", "provnet", "The iss claim of identity documents."),
    Option("watch_max_per_instance", "metadata", 8, "Waiting requests (?wait_for_change=true) one instance may "
           "hold; more get 429.", to_nonneg_int),
    Option("watch_max_total", "metadata", 4096, "Waiting requests one metadata API process holds in all; more "
           "get 429.", to_nonneg_int),
    Option("watch_max_timeout", "metadata", 50, "The longest wait (timeout_sec) in seconds; less than the "
           "agent's 60 s towards the API, so a wait ends with an answer, not a 504.", to_wait),
    # metadata API (nova-api-metadata)
    Option("metadata_listen", "DEFAULT", "127.0.0.1", "Address the metadata API listens on."),
    Option("metadata_listen_port", "DEFAULT", 8775, "Port of the metadata API.", to_port),
    Option("dhcp_domain", "api", "novalocal", "Domain appended to instance hostnames in metadata."),
    Option("metadata_cache_expiration", "api", 15.0, "Seconds the metadata API caches an instance (0: off).",
           to_nonneg),
    Option("vendordata_jsonfile_path", "api", "", "JSON file served as vendor_data.json (static)."),
    Option("metadata_trusted_networks", "api", "", "Direct mode: CIDRs whose source address identifies the "
           "instance without a proxy. Empty (default) keeps direct mode off.", to_list),
    # agent (neutron-openvswitch-agent's reporting side)
    Option("bridge_mappings", "ovs", "", "physical_network:bridge pairs this host's agent reports, e.g. "
           "physnet1:br-phy. Flat and VLAN ports bind only where their physical network is mapped.", to_mapping),
    Option("report_interval", "agent", 30.0, "Seconds between agent heartbeats.", to_positive),
    Option("resync_interval", "agent", 300.0, "Seconds between full resyncs of the L2 agent (`provnet agent`: "
           "every port and device looked at again, the port firewall rewritten); devices and ports are followed "
           "as they change, not by this timer.", to_positive),
    Option("host", "DEFAULT", os.uname().nodename, "This host's name, as ports' binding:host_id name it."),
    # L3 agent (neutron-l3-agent's counterpart)
    Option("resync_interval", "l3_agent", 300.0, "Seconds between full resyncs of the L3 agent (which repair "
           "drift made by hand); changes in the registry are applied as they come, not by this timer.",
           to_positive),
    Option("namespace_suffix", "l3_agent", "", "Appended to the names of the namespaces this host's agents "
           "make (qrouter-<id><suffix>), so that several agents can share one machine (the lab: @<host>). "
           "Leave empty on real hosts."),
    # DHCP server
    Option("interface", "dhcp", "", "Interface the DHCP server binds (empty: no DHCP server in serve)."),
    Option("network", "dhcp", "", "Name or id of the network the DHCP server serves (empty: every network "
           "with a subnet on the interface)."),
    Option("lease_time", "dhcp", 86400, f"Lease time in seconds (option 51), {MIN_LEASE} or more.", to_lease_time),
    Option("dns_domain", "dhcp", "openstacklocal", "Domain name (option 15)."),
    Option("force_routes", "dhcp", True, "Send options 121 and 249 even when the client did not ask.", to_bool),
    Option("resync_interval", "dhcp", 600.0, "Seconds between whole rebuilds of the DHCP server's view (changes "
           "are applied one port at a time as they happen; this only catches drift).", to_positive),
)

_BY_KEY = {o.key: o for o in OPTIONS}
_VAR = re.compile(r"\$(\w+)")


def option(key: str) -> Option:
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ConfigError(f"unknown option {key!r}") from None


@dataclass
class Setting:
    value: Any
    source: str


class Config:
    """Effective configuration: default < config file < environment < command line."""

    def __init__(self, settings: Mapping[str, Setting]) -> None:
        self._settings = dict(settings)

    def get(self, key: str) -> Any:
        return self._settings[option(key).key].value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.get(name)
        except ConfigError:
            raise AttributeError(name) from None

    def source(self, key: str) -> str:
        return self._settings[option(key).key].source

    def items(self) -> Iterable[tuple[Option, Setting]]:
        for opt in OPTIONS:
            yield opt, self._settings[opt.key]

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "command line") -> Config:
        return load_config(files=(), overrides=overrides, base=self, source=source)

    @property
    def db_url(self) -> str:
        return self.get("database.connection")

    def to_ini(self) -> str:
        """Every value not at its default, as an INI file `load_config` reads back to the same values (how a
        parent process hands its effective configuration, command-line overrides included, to its children)."""
        sections: dict[str, list[str]] = {}
        for opt, setting in self.items():
            if setting.source == "default":
                continue
            sections.setdefault(opt.section, []).append(f"{opt.name} = {_ini_value(setting.value)}")
        return "\n".join(f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in sections.items())


def _ini_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    text = str(value)
    if "\n" in text or text != text.strip():
        raise ConfigError(f"a value with a line break or edge spaces cannot be handed to a child: {text!r}")
    return text


def _convert(opt: Option, raw: Any, where: str) -> Any:
    """`raw` converted by the option's converter, or a ConfigError saying where, what was expected and what came."""
    try:
        return opt.convert(raw)
    except (TypeError, ValueError) as exc:
        expected = EXPECTED.get(opt.convert)
        if expected is None:
            raise ConfigError(f"[{opt.section}] {opt.name} {where}: {exc}") from None
        raise ConfigError(f"[{opt.section}] {opt.name} {where} must be {expected}, got {raw!r}") from None


def _parse_error(path: str | os.PathLike[str], exc: configparser.Error) -> ConfigError:
    """configparser's multi-line messages as one line with file:line and what to do."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return ConfigError(f"{path}:{exc.lineno}: an option before any [section] header: start the file with "
                           f"[DEFAULT] (got {exc.line.strip()!r})")
    if isinstance(exc, configparser.DuplicateOptionError):
        return ConfigError(f"{path}:{exc.lineno}: [{exc.section}] {exc.option} is given twice in this section; "
                           "keep one")
    if isinstance(exc, configparser.DuplicateSectionError):
        return ConfigError(f"{path}:{exc.lineno}: section [{exc.section}] appears twice; merge them")
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno, line = exc.errors[0]
        return ConfigError(f"{path}:{lineno}: cannot read {line.strip()!r}: expected `name = value`")
    return ConfigError(f"config file {path}: {' '.join(str(exc).split())}")


def option_lines(path: str | os.PathLike[str]) -> dict[tuple[str, str], int]:
    """(section, option name) -> the line number where the file sets it (the last one when repeated)."""
    lines: dict[tuple[str, str], int] = {}
    section = "DEFAULT"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                text = line.strip()
                if not text or text[0] in "#;" or line[0].isspace():
                    continue
                if text.startswith("[") and text.endswith("]"):
                    section = text[1:-1].strip()
                    continue
                name = re.split(r"[=:]", text, maxsplit=1)[0].strip().lower()
                lines[(section, name)] = number
    except OSError:
        pass
    return lines


def suggest(section: str, name: str) -> str:
    """A did-you-mean for an unknown option: a close name in the same section, or the same/close name elsewhere."""
    same = [o.name for o in OPTIONS if o.section == section]
    close = difflib.get_close_matches(name, same, n=1, cutoff=0.75)
    if close:
        return f"; did you mean {close[0]}?"
    elsewhere = [o for o in OPTIONS if o.name == name] or [
        o for o in OPTIONS if o.name in difflib.get_close_matches(name, [x.name for x in OPTIONS], n=1, cutoff=0.75)]
    if elsewhere:
        return f"; did you mean [{elsewhere[0].section}] {elsewhere[0].name}?"
    if section not in {o.section for o in OPTIONS}:
        sections = difflib.get_close_matches(section, sorted({o.section for o in OPTIONS}), n=1, cutoff=0.6)
        if sections:
            return f"; did you mean section [{sections[0]}]?"
    return " (`provnet config show` lists every option)"


def ini_entries(path: str | os.PathLike[str], strict: bool = True) -> Iterator[tuple[str, str, str]]:
    """(section, name, raw value) of every option in an INI file, DEFAULT first; read errors are ConfigErrors
    with file:line.

    `strict=False` lets a section or option repeat (the later wins), as Neutron's own files may.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=strict)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except configparser.Error as exc:
        raise _parse_error(path, exc) from None
    for section in ["DEFAULT", *parser.sections()]:
        items = parser.defaults() if section == "DEFAULT" else {
            k: v for k, v in parser.items(section, raw=True) if k not in parser.defaults()}
        for name, raw in items.items():
            yield section, name, raw


def read_ini(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Read one provnet INI file into {key: (raw value, "in FILE:LINE")}; unknown keys are errors with a
    did-you-mean, not silently ignored."""
    out: dict[str, tuple[str, str]] = {}
    lines: dict[tuple[str, str], int] | None = None
    for section, name, raw in ini_entries(path):
        if lines is None:
            lines = option_lines(path)
        line = lines.get((section, name))
        where = f"in {path}:{line}" if line else f"in {path}"
        key = name if section == "DEFAULT" else f"{section}.{name}"
        if key not in _BY_KEY:
            raise ConfigError(f"[{section}] {name} {where} is not a provnet option{suggest(section, name)}")
        out[key] = (raw, where)
    return out


def load_config(
    files: Iterable[str | os.PathLike[str]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    base: Config | None = None,
    source: str = "command line",
) -> Config:
    """Build the effective configuration. `files=None` reads $PROVNET_CONFIG or /etc/provnet/provnet.conf if present."""
    env = os.environ if env is None else env
    settings: dict[str, Setting]
    if base is not None:
        settings = dict(base._settings)
    else:
        settings = {o.key: Setting(o.default, "default") for o in OPTIONS}
        if files is None:
            named = env.get("PROVNET_CONFIG")
            if named:
                files = [named]
            elif Path(DEFAULT_CONFIG_FILE).exists():
                files = [DEFAULT_CONFIG_FILE]
            else:
                files = []
        for path in files:
            for key, (raw, where) in read_ini(path).items():
                settings[key] = Setting(_convert(_BY_KEY[key], raw, where), str(path))
        for opt in OPTIONS:
            if opt.env and env.get(opt.env):
                settings[opt.key] = Setting(_convert(opt, env[opt.env], f"from ${opt.env}"), f"env {opt.env}")
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        opt = option(key)
        settings[opt.key] = Setting(_convert(opt, raw, f"({source})"), source)
    state_path = str(settings["state_path"].value)
    for key, setting in settings.items():
        if isinstance(setting.value, str) and "$" in setting.value:
            setting = Setting(_VAR.sub(lambda m: state_path if m.group(1) == "state_path" else m.group(0),
                                       setting.value), setting.source)
            settings[key] = setting
    return Config(settings)


def shown_value(opt: Option, value: Any) -> str:
    """A value as `config show` prints it: secrets masked (a database URL keeps all but its password)."""
    if opt.secret and value:
        return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", value) if "://" in str(value) else "***"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def records(config: Config) -> list[dict[str, str]]:
    """`provnet config show`'s rows: option ([section] name), value (secrets masked) and source."""
    return [{"option": f"[{opt.section}] {opt.name}", "value": shown_value(opt, setting.value),
             "source": setting.source} for opt, setting in config.items()]


def reference_table() -> str:
    """The README's configuration reference, one row per option, from OPTIONS (a test keeps them the same)."""

    def shown(opt: Option) -> str:
        if opt.key == "host":
            return "(this host's name)"
        value = opt.default
        if isinstance(value, bool):
            return str(value)
        return str(value)

    rows = ["| option | default | env | what it does |", "|---|---|---|---|"]
    for opt in OPTIONS:
        rows.append(f"| `[{opt.section}] {opt.name}` | `{shown(opt)}` | {f'`{opt.env}`' if opt.env else ''} "
                    f"| {opt.help} |")
    return "\n".join(rows)


def render(config: Config) -> str:
    """One line per option with its value and source; secrets masked."""
    rows = records(config)
    width = max(len(r["option"]) for r in rows)
    return "\n".join(f"{r['option']:<{width}}  = {r['value']}    ({r['source']})" for r in rows)
