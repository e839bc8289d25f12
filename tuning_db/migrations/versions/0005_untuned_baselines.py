"""The untuned baseline latency of a model, measured once per target fingerprint and pipeline.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "untuned_baselines",
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("pipeline_key", sa.String(length=64), nullable=False),
        sa.Column("pipeline_json", sa.Text(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=False),
        sa.Column("p90_ms", sa.Float(), nullable=False),
        sa.Column("p99_ms", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("calls_per_sample", sa.Integer(), nullable=False),
        sa.Column("budget_reached", sa.Boolean(), nullable=False),
        sa.Column("measured_on", sa.String(length=255), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["target_key"],
            ["targets.key"],
            name="fk_untuned_baselines_target_key_targets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "model_sha256", "target_key", "pipeline_key", name="pk_untuned_baselines"
        ),
    )


def downgrade() -> None:
    op.drop_table("untuned_baselines")
