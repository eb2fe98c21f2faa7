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
    # In place, not in batch mode: rebuilding workflow_runs on SQLite drops the table that
    # agents and workflow_nodes rows reference (FOREIGN KEY constraint failed). SQLite has had
    # ALTER TABLE ... DROP COLUMN since 3.35.
    op.drop_column("workflow_runs", "spec")


def downgrade() -> None:
    op.add_column("workflow_runs", sa.Column("spec", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE workflow_runs SET spec = "
        "(SELECT spec FROM workflow_specs WHERE workflow_specs.run_id = workflow_runs.id)"
    )
    if op.get_bind().dialect.name != "sqlite":  # SQLite cannot add NOT NULL in place
        op.alter_column("workflow_runs", "spec", existing_type=sa.JSON(), nullable=False)
    op.drop_table("workflow_specs")
