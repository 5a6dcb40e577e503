# Storage behind one Registry interface: open_registry picks SQL (SQLite/PostgreSQL) or the remote HTTP API.
from __future__ import annotations

from collections.abc import Sequence

from provnet.identity.client import ClientIdentity
from provnet.registry.base import Filters, Registry

__all__ = ["Filters", "Registry", "open_registry"]


def open_registry(db_url: str | None = None, api_url: str | None = None, agent_down_time: float = 75.0,
                  report_interval: float = 30.0, flat_networks: Sequence[str] = ("*",),
                  network_vlan_ranges: Sequence[str] = (), client: ClientIdentity | None = None,
                  metadata_mode: str = "auto") -> Registry:
    """A registry on the database at `db_url`, or on the networking API at `api_url` when given (authenticated and
    verified as `client` says), or in companion mode (`client.companion`) on the cloud's own Neutron."""
    if client is not None and client.companion:
        from provnet.registry.neutron import NeutronRegistry

        return NeutronRegistry(client.endpoint(), auth=client.cloud, ssl_context=client.ssl_context,
                               watch_network=client.watch_network)
    if api_url:
        from provnet.registry.remote import RemoteRegistry

        return RemoteRegistry(api_url, auth=client.cloud if client else None,
                              ssl_context=client.ssl_context if client else None)
    if not db_url:
        raise ValueError("open_registry needs a database URL or an API URL")
    from provnet.registry.sql import SqlRegistry

    return SqlRegistry(db_url, agent_down_time=agent_down_time, report_interval=report_interval,
                       flat_networks=flat_networks, network_vlan_ranges=network_vlan_ranges,
                       metadata_mode=metadata_mode)


def registry_from_config(config, api_url: str | None = None,  # config: provnet.config.Config
                         client: ClientIdentity | None = None) -> Registry:
    """The registry a process should use, with every registry-related option taken from `config`."""
    return open_registry(config.db_url, api_url, agent_down_time=config.agent_down_time,
                         report_interval=config.get("agent.report_interval"),
                         flat_networks=config.get("ml2_type_flat.flat_networks"),
                         network_vlan_ranges=config.get("ml2_type_vlan.network_vlan_ranges"), client=client,
                         metadata_mode=config.get("metadata.mode"))
