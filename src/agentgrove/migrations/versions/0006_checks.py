"""each agent's check: its command and what its last run did

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    "check_command",
    "check_status",
    "check_rounds",
    "check_exit_code",
    "check_duration_ms",
    "check_output",
)


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("check_command", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("check_status", sa.String(length=20), nullable=False, server_default="none")
        )
        batch.add_column(
            sa.Column("check_rounds", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("check_exit_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("check_duration_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("check_output", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
