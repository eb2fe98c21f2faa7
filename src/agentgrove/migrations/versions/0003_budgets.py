"""budgets

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_budget_usd", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("reserved_usd", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("wait_reason", sa.Text(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("wait_reason")
        batch_op.drop_column("reserved_usd")
        batch_op.drop_column("max_budget_usd")
