# Which L3 agent hosts each router (Neutron's routerl3agentbindings, one agent per router: no HA).
"""Revision 0004 (down: 0003)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routerl3agentbindings",
        sa.Column("router_id", sa.String(36), sa.ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("l3_agent_id", sa.String(36), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False,
                  index=True),
    )


def downgrade() -> None:
    op.drop_table("routerl3agentbindings")
