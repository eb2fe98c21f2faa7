"""many machines: the host that ran each agent, and the commit each workspace last pushed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("host", sa.String(length=255), nullable=True))
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("pushed_commit", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("pushed_commit")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("host")
