# Neutron's standard attributes: updated_at and revision_number beside created_at, on every resource with them.
"""Revision 0006 (down: 0005)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("networks", "subnets", "ports", "routers", "instances")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True)))
            batch.add_column(sa.Column("revision_number", sa.BigInteger, nullable=False, server_default="1"))
        op.execute(f"UPDATE {table} SET updated_at = created_at")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("revision_number")
            batch.drop_column("updated_at")
