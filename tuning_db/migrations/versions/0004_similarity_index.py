"""The similarity index (workload_signatures) and target classes on targets.

Both are backfilled here, so every workload has a signature and every target a class from this
revision on (``SqlDatabase.commit_workload`` and ``register_target`` keep it so). The signature
backfill parses every stored workload with TVM: about 10 ms a workload, in batches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 200


def upgrade() -> None:
    op.create_table(
        "workload_signatures",
        sa.Column("workload_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("family_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("size_log2", sa.Float(), nullable=False),
        sa.Column("signature_json", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workloads.id"],
            name="fk_workload_signatures_workload_id_workloads",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workload_id", name="pk_workload_signatures"),
    )
    op.create_index(
        "ix_workload_signatures_family_size", "workload_signatures", ["family_key", "size_log2"]
    )
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("target_class", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("tvm_version", sa.String(length=64), nullable=True))
    _backfill_target_classes()
    with op.batch_alter_table("targets") as batch:
        batch.alter_column("target_class", existing_type=sa.String(length=255), nullable=False)
        batch.alter_column("tvm_version", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_targets_class", ["target_class", "tvm_version"])
    _backfill_signatures()


def downgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.drop_index("ix_targets_class")
        batch.drop_column("tvm_version")
        batch.drop_column("target_class")
    op.drop_index("ix_workload_signatures_family_size", table_name="workload_signatures")
    op.drop_table("workload_signatures")


def _backfill_target_classes() -> None:
    from tunefarm.tuning_db.target_fingerprint import class_of_fingerprint

    targets = sa.table(
        "targets",
        sa.column("key", sa.String),
        sa.column("fingerprint_json", sa.Text),
        sa.column("target_class", sa.String),
        sa.column("tvm_version", sa.String),
    )
    bind = op.get_bind()
    for key, fingerprint_json in bind.execute(sa.select(targets.c.key, targets.c.fingerprint_json)):
        details = json.loads(fingerprint_json)
        bind.execute(
            targets.update()
            .where(targets.c.key == key)
            .values(
                target_class=class_of_fingerprint(details),
                tvm_version=str(details.get("tvm_version", "")),
            )
        )


def _backfill_signatures() -> None:
    workloads = sa.table(
        "workloads", sa.column("id", sa.Integer), sa.column("key", sa.String), sa.column("mod_json")
    )
    signatures = sa.table(
        "workload_signatures",
        sa.column("workload_id", sa.Integer),
        sa.column("family_key", sa.String),
        sa.column("kind", sa.String),
        sa.column("size_log2", sa.Float),
        sa.column("signature_json", sa.Text),
        sa.column("version", sa.Integer),
    )
    bind = op.get_bind()
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(workloads.c.id, workloads.c.key, workloads.c.mod_json)
            .where(workloads.c.id > last_id)
            .order_by(workloads.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        import tvm

        from tunefarm.tuning_db.similarity_index import signature_values

        bind.execute(
            signatures.insert(),
            [
                signature_values(row.id, _load(tvm, row.mod_json), workload_key=row.key)
                for row in rows
            ],
        )
        last_id = rows[-1].id


def _load(tvm: Any, mod_json: str) -> Any:
    try:
        return tvm.ir.load_json(mod_json)
    except Exception:  # unreadable: the workload gets a family of its own
        return None
