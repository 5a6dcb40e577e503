# The SQL tables of the registry (SQLAlchemy Core); the Alembic migrations create exactly these.
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

networks = sa.Table(
    "networks", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("admin_state_up", sa.Boolean, nullable=False),
    sa.Column("shared", sa.Boolean, nullable=False),
    sa.Column("router_external", sa.Boolean, nullable=False),
    sa.Column("network_type", sa.String(32)),
    sa.Column("physical_network", sa.String(64)),
    sa.Column("segmentation_id", sa.BigInteger),
    # "flat:physnet1", "vlan:physnet1:100", "vxlan:42": unique, so two writers cannot take one segment
    sa.Column("segment_key", sa.String(128), unique=True),
    sa.Column("port_security_enabled", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),  # Neutron's standard attributes (migration 0005)
    sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"),
)

subnets = sa.Table(
    "subnets", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("network_id", sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("ip_version", sa.Integer, nullable=False),
    sa.Column("cidr", sa.String(64), nullable=False),
    sa.Column("gateway_ip", sa.String(64)),
    sa.Column("allocation_pools", sa.JSON, nullable=False),
    sa.Column("dns_nameservers", sa.JSON, nullable=False),
    sa.Column("host_routes", sa.JSON, nullable=False),
    sa.Column("enable_dhcp", sa.Boolean, nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),  # Neutron's standard attributes (migration 0005)
    sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"),
)

ports = sa.Table(
    "ports", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("network_id", sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("admin_state_up", sa.Boolean, nullable=False),
    sa.Column("mac_address", sa.String(32), nullable=False),
    sa.Column("device_id", sa.String(255), nullable=False, index=True),
    sa.Column("device_owner", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("security_groups", sa.JSON, nullable=False),
    sa.Column("port_security_enabled", sa.Boolean, nullable=False),
    sa.Column("allowed_address_pairs", sa.JSON, nullable=False),
    sa.Column("binding_host_id", sa.String(255), nullable=False, index=True),
    sa.Column("binding_vnic_type", sa.String(32), nullable=False),
    sa.Column("binding_profile", sa.JSON, nullable=False),
    sa.Column("binding_vif_type", sa.String(64), nullable=False),
    sa.Column("binding_vif_details", sa.JSON, nullable=False),
    sa.Column("binding_failure_reason", sa.Text),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),  # Neutron's standard attributes (migration 0005)
    sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"),
    # one MAC per network, and the (MAC, network) lookup of the DHCP server
    sa.UniqueConstraint("mac_address", "network_id", name="uniq_ports_mac_network"),
    sa.Index("ix_ports_network_id", "network_id"),
    sa.Index("ix_ports_created_at_id", "created_at", "id"),  # the list order: a page is an index walk
)

ip_allocations = sa.Table(
    "ip_allocations", metadata,
    sa.Column("subnet_id", sa.String(36), sa.ForeignKey("subnets.id"), primary_key=True),
    sa.Column("ip_address", sa.String(64), primary_key=True),  # the primary key: one holder per address
    sa.Column("port_id", sa.String(36), sa.ForeignKey("ports.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("network_id", sa.String(36), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # order within the port's fixed_ips
    # the metadata agent's lookup: the port holding IP X on one of the router's networks
    sa.Index("ix_ip_allocations_ip_network", "ip_address", "network_id"),
)

routers = sa.Table(
    "routers", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("admin_state_up", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),  # Neutron's standard attributes (migration 0005)
    sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"),
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("agent_type", sa.String(255), nullable=False),
    sa.Column("binary", sa.String(255), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("admin_state_up", sa.Boolean, nullable=False),
    sa.Column("configurations", sa.JSON, nullable=False),
    sa.Column("heartbeat_timestamp", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("host", "agent_type", name="uniq_agents_host_type"),
)

instances = sa.Table(
    "instances", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("project_id", sa.String(255), nullable=False),
    sa.Column("availability_zone", sa.String(255), nullable=False),
    sa.Column("launch_index", sa.Integer, nullable=False),
    sa.Column("user_data", sa.LargeBinary),
    sa.Column("key_pairs", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("vendor_data", sa.JSON, nullable=False),
    sa.Column("flavor", sa.String(255), nullable=False),
    sa.Column("password", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),  # Neutron's standard attributes (migration 0005)
    sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"),
)

# one row (id 1) whose value every write increments in its own transaction: revision() reads it. `floor`: the
# change feed holds every change after it (older ones are pruned; a reader behind it rebuilds from the store)
revision = sa.Table(
    "provnet_revision", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("floor", sa.BigInteger, nullable=False, server_default="0"),
)

# the change feed: what each committed write touched, in commit order (provnet.registry.changes.Change)
changes = sa.Table(
    "provnet_changes", metadata,
    sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=False),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("network_id", sa.String(36)),
    sa.Column("addresses", sa.JSON, nullable=False),
    sa.Column("macs", sa.JSON, nullable=False),
    sa.Column("devices", sa.JSON, nullable=False),
)

# which L3 agent hosts each router (Neutron's routerl3agentbindings; one agent per router, no HA)
router_l3_agent_bindings = sa.Table(
    "routerl3agentbindings", metadata,
    sa.Column("router_id", sa.String(36), sa.ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("l3_agent_id", sa.String(36), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False,
              index=True),
)
