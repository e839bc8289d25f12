"""Teams, API tokens and uploaded models; jobs and tuning records get an owner and a trust flag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_api_tokens_team_id_teams", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
    )
    op.create_index("ix_api_tokens_team_id", "api_tokens", ["team_id"])
    op.create_table(
        "models",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("summary_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_models_team_id_teams", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("team_id", "sha256", name="uq_models_team_id_sha256"),
    )
    op.create_index("ix_models_team_id", "models", ["team_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("model_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_team_id_teams", "teams", ["team_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            "fk_jobs_model_id_models", "models", ["model_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_jobs_team_id", ["team_id"])
    with op.batch_alter_table("tuning_records") as batch:
        batch.add_column(sa.Column("team_id", sa.Integer(), nullable=True))
        # Every record before this revision was measured by our own workers or imported by the
        # operator: trusted.
        batch.add_column(
            sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_foreign_key(
            "fk_tuning_records_team_id_teams", "teams", ["team_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_tuning_records_team_id", ["team_id"])


def downgrade() -> None:
    with op.batch_alter_table("tuning_records") as batch:
        batch.drop_index("ix_tuning_records_team_id")
        batch.drop_constraint("fk_tuning_records_team_id_teams", type_="foreignkey")
        batch.drop_column("shared")
        batch.drop_column("verified")
        batch.drop_column("team_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_team_id")
        batch.drop_constraint("fk_jobs_model_id_models", type_="foreignkey")
        batch.drop_constraint("fk_jobs_team_id_teams", type_="foreignkey")
        batch.drop_column("model_id")
        batch.drop_column("team_id")
    op.drop_index("ix_models_team_id", table_name="models")
    op.drop_table("models")
    op.drop_index("ix_api_tokens_team_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("teams")
