# Ports listed in pages: an index in their list order (creation, then id), so a page is an index walk.
"""Revision 0005 (down: 0004)."""
from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ports_created_at_id", "ports", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_ports_created_at_id", "ports")
