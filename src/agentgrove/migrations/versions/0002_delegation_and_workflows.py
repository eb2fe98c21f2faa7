"""delegation and workflow columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_nodes",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("deps_remaining", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["workflow_runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "key"),
    )

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("depth", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("after_parent", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("merge_refs", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_agents_run_node", ["workflow_run_id", "node_key"], unique=False)
        batch_op.drop_index("ix_agents_claim")
        batch_op.create_index(
            "ix_agents_claim", ["status", "priority", "created_at", "id"], unique=False
        )
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_ref", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        for counter in ("total", "completed", "active", "failed", "cancelled"):
            batch_op.add_column(
                sa.Column(f"nodes_{counter}", sa.Integer(), server_default="0", nullable=False)
            )


def downgrade() -> None:
    op.drop_table("workflow_nodes")

    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        for counter in ("total", "completed", "active", "failed", "cancelled"):
            batch_op.drop_column(f"nodes_{counter}")
        batch_op.drop_column("error")
        batch_op.drop_column("base_ref")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_run_node")
        batch_op.drop_index("ix_agents_claim")
        batch_op.create_index("ix_agents_claim", ["status", "priority", "created_at"], unique=False)
        batch_op.drop_column("superseded")
        batch_op.drop_column("merge_refs")
        batch_op.drop_column("after_parent")
        batch_op.drop_column("depth")
