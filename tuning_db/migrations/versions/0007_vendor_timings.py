"""Each side of a chain's vendor choice, timed once per target fingerprint (issue 17).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_timings",
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("chain_key", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("chain_json", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("measured_on", sa.String(length=255), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["target_key"],
            ["targets.key"],
            name="fk_vendor_timings_target_key_targets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "target_key", "chain_key", "side", "source_key", name="pk_vendor_timings"
        ),
    )


def downgrade() -> None:
    op.drop_table("vendor_timings")
