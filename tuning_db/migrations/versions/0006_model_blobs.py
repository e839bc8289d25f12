"""Models stored once by content, referenced by jobs (issue 21: a submit copied the model).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("onnx", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_model_blobs"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("model_onnx", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("model_onnx", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table("model_blobs")
