# Reading Neutron's own metadata_agent.ini / neutron.conf: the options provnet shares, the rest reported as ignored.
from __future__ import annotations

import os

from provnet.config import ini_entries

# Neutron option -> provnet option key (same names, except the pre-Queens nova_metadata_ip).
NEUTRON_AGENT_OPTIONS = {
    ("DEFAULT", name): name
    for name in ("metadata_proxy_shared_secret", "nova_metadata_host", "nova_metadata_port",
                 "nova_metadata_protocol", "nova_metadata_insecure", "nova_client_cert", "nova_client_priv_key",
                 "auth_ca_cert", "metadata_proxy_socket", "metadata_workers", "metadata_backlog",
                 "debug")
}
NEUTRON_AGENT_OPTIONS[("DEFAULT", "nova_metadata_ip")] = "nova_metadata_host"
NEUTRON_AGENT_OPTIONS.update({
    ("metadata_rate_limiting", name): f"metadata_rate_limiting.{name}"
    for name in ("rate_limit_enabled", "base_window_duration", "base_query_rate_limit", "burst_window_duration",
                 "burst_query_rate_limit")
})


def read_neutron_ini(path: str | os.PathLike[str]) -> tuple[dict[str, str], list[str]]:
    """{provnet key: raw value} for the options the agent shares with Neutron, and `[section] name` of the rest.

    Neutron's files carry many options provnet has no use for (logging, oslo.messaging, [cache]...); they are
    returned so the caller can log them, not rejected, so an existing metadata_agent.ini works unchanged.
    `[metadata_rate_limiting] ip_versions` is among them: provnet limits IPv4 and IPv6 sources together.
    """
    found: dict[str, str] = {}
    ignored: list[str] = []
    for section, name, raw in ini_entries(path, strict=False):
        key = NEUTRON_AGENT_OPTIONS.get((section, name))
        if key is None:
            ignored.append(f"[{section}] {name}")
        else:
            found[key] = raw
    return found, ignored
