"""a run's spec in its own table

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_specs",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["workflow_runs.id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.execute("INSERT INTO workflow_specs (run_id, spec) SELECT id, spec FROM workflow_runs")
    # Batch mode: a table rebuild on SQLite (older than 3.35 has no DROP COLUMN), a plain ALTER
    # elsewhere. The store migrates with SQLite's foreign keys off (store/_migrate.py), so the
    # rows that reference workflow_runs do not stop the rebuild.
    with op.batch_alter_table("workflow_runs") as batch_op:
        batch_op.drop_column("spec")


def downgrade() -> None:
    op.add_column("workflow_runs", sa.Column("spec", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE workflow_runs SET spec = "
        "(SELECT spec FROM workflow_specs WHERE workflow_specs.run_id = workflow_runs.id)"
    )
    with op.batch_alter_table("workflow_runs") as batch_op:
        batch_op.alter_column("spec", existing_type=sa.JSON(), nullable=False)
    op.drop_table("workflow_specs")
