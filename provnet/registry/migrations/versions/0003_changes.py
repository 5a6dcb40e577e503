# The change feed: a table of what each write changed, and the revision below which it was pruned.
"""Revision 0003 (down: 0002)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("provnet_revision") as batch:
        batch.add_column(sa.Column("floor", sa.BigInteger, nullable=False, server_default="0"))
    # the feed starts now: a reader at an older revision has missed changes nobody recorded
    op.execute("UPDATE provnet_revision SET floor = value")
    op.create_table(
        "provnet_changes",
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


def downgrade() -> None:
    op.drop_table("provnet_changes")
    with op.batch_alter_table("provnet_revision") as batch:
        batch.drop_column("floor")
