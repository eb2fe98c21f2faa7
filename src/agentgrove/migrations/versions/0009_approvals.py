"""approvals: the gate a workflow node is held at, and when that gate times out

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("approval_gate", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("approval_deadline", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("approval_deadline")
        batch.drop_column("approval_gate")
