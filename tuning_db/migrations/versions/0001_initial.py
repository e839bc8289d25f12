"""Workloads, targets and tuning records.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("mod_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workloads"),
        sa.UniqueConstraint("key", name="uq_workloads_key"),
    )
    op.create_table(
        "targets",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("target_json", sa.Text(), nullable=False),
        sa.Column("fingerprint_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_targets"),
    )
    op.create_table(
        "tuning_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("trace_hash", sa.String(length=64), nullable=False),
        sa.Column("trace_json", sa.Text(), nullable=False),
        sa.Column("run_secs_json", sa.Text(), nullable=False),
        sa.Column("mean_run_sec", sa.Float(), nullable=True),
        sa.Column("args_info_json", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workloads.id"],
            name="fk_tuning_records_workload_id_workloads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_key"],
            ["targets.key"],
            name="fk_tuning_records_target_key_targets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tuning_records"),
        sa.UniqueConstraint(
            "workload_id",
            "target_key",
            "trace_hash",
            name="uq_tuning_records_workload_id_target_key_trace_hash",
        ),
    )
    op.create_index(
        "ix_tuning_records_top_k",
        "tuning_records",
        ["workload_id", "target_key", "mean_run_sec"],
    )
    op.create_index("ix_tuning_records_workload_id", "tuning_records", ["workload_id"])


def downgrade() -> None:
    op.drop_index("ix_tuning_records_workload_id", table_name="tuning_records")
    op.drop_index("ix_tuning_records_top_k", table_name="tuning_records")
    op.drop_table("tuning_records")
    op.drop_table("targets")
    op.drop_table("workloads")
