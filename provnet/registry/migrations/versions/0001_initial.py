# Initial registry schema: networks, subnets, ports, IP allocations, routers, agents, instances, revision.
"""Revision 0001 (down: none)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean, nullable=False),
        sa.Column("shared", sa.Boolean, nullable=False),
        sa.Column("router_external", sa.Boolean, nullable=False),
        sa.Column("network_type", sa.String(32)),
        sa.Column("physical_network", sa.String(64)),
        sa.Column("segmentation_id", sa.BigInteger),
        sa.Column("segment_key", sa.String(128), unique=True),
        sa.Column("port_security_enabled", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "subnets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("network_id", sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("ip_version", sa.Integer, nullable=False),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("gateway_ip", sa.String(64)),
        sa.Column("allocation_pools", sa.JSON, nullable=False),
        sa.Column("dns_nameservers", sa.JSON, nullable=False),
        sa.Column("host_routes", sa.JSON, nullable=False),
        sa.Column("enable_dhcp", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_subnets_network_id", "subnets", ["network_id"])
    op.create_table(
        "ports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("network_id", sa.String(36), sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean, nullable=False),
        sa.Column("mac_address", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("device_owner", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("security_groups", sa.JSON, nullable=False),
        sa.Column("port_security_enabled", sa.Boolean, nullable=False),
        sa.Column("allowed_address_pairs", sa.JSON, nullable=False),
        sa.Column("binding_host_id", sa.String(255), nullable=False),
        sa.Column("binding_vnic_type", sa.String(32), nullable=False),
        sa.Column("binding_profile", sa.JSON, nullable=False),
        sa.Column("binding_vif_type", sa.String(64), nullable=False),
        sa.Column("binding_vif_details", sa.JSON, nullable=False),
        sa.Column("binding_failure_reason", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("mac_address", "network_id", name="uniq_ports_mac_network"),
    )
    op.create_index("ix_ports_network_id", "ports", ["network_id"])
    op.create_index("ix_ports_device_id", "ports", ["device_id"])
    op.create_index("ix_ports_binding_host_id", "ports", ["binding_host_id"])
    op.create_table(
        "ip_allocations",
        sa.Column("subnet_id", sa.String(36), sa.ForeignKey("subnets.id"), primary_key=True),
        sa.Column("ip_address", sa.String(64), primary_key=True),
        sa.Column("port_id", sa.String(36), sa.ForeignKey("ports.id", ondelete="CASCADE"), nullable=False),
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_ip_allocations_port_id", "ip_allocations", ["port_id"])
    op.create_index("ix_ip_allocations_ip_network", "ip_allocations", ["ip_address", "network_id"])
    op.create_table(
        "routers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("agent_type", sa.String(255), nullable=False),
        sa.Column("binary", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean, nullable=False),
        sa.Column("configurations", sa.JSON, nullable=False),
        sa.Column("heartbeat_timestamp", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.UniqueConstraint("host", "agent_type", name="uniq_agents_host_type"),
    )
    op.create_table(
        "instances",
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
        sa.Column("created_at", TS, nullable=False),
    )
    revision_table = op.create_table(
        "provnet_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(revision_table, [{"id": 1, "value": 1}])


def downgrade() -> None:
    for table in ("provnet_revision", "instances", "agents", "routers", "ip_allocations", "ports", "subnets",
                  "networks"):
        op.drop_table(table)
