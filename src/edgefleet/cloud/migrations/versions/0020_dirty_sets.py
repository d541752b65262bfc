"""dirty sets (issue 14): no reconcile pass, resend or re-publish touches the whole fleet

* ``reconcile_dirty``: one row per device whose planner-relevant state changed since the
  reconciler last looked (``cloud/rollout/dirty.py``); a quiet pass reads only these.
* ``ix_device_dirty_lagging``: a partial index (online, id) over the devices whose reported
  generation lags their desired one — the controller's resend loop (``sync_once``) reads
  only those, however large the fleet.
* ``rollout_member_archive`` and ``rollout.archived_at``: the member rows of finished
  (aborted, superseded) rollouts move out of the hot table (``cloud/rollout/archive.py``).

Revision ID: 0020_dirty_sets
Revises: 0002
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0020_dirty_sets"
down_revision = "0002"  # device (0001) and rollout tables (0002, a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
#: a term of Controller.sync_once's WHERE clause (runtime.lagging_clause), as it renders: SQLite
#: uses a partial index only when every term of the index's WHERE is one of the query's
BEHIND = "(reported_generation IS NULL OR reported_generation < desired_generation)"


def upgrade() -> None:
    op.create_table(
        "reconcile_dirty",
        sa.Column("device_id", _S(length=128), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_device_dirty_lagging", "device", ["online", "id"],
                    sqlite_where=sa.text(BEHIND), postgresql_where=sa.text(BEHIND))
    op.create_table(
        "rollout_member_archive",
        sa.Column("rollout_id", _S(length=64), primary_key=True),
        sa.Column("device_id", _S(length=128), primary_key=True),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.Float(), nullable=False),
        sa.Column("dispatched_at", sa.Float(), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.Column("reverted_at", sa.Float(), nullable=True),
        sa.Column("timed_out_at", sa.Float(), nullable=True),
        sa.Column("seen_phase", _S(length=16), nullable=True),
        sa.Column("seen_target", _S(length=64), nullable=True),
        sa.Column("phase_since", sa.Float(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("nan_outputs", sa.Integer(), nullable=False),
        sa.Column("candidate_p99_ms", sa.Float(), nullable=True),
        sa.Column("candidate_periods", sa.Integer(), nullable=False),
        sa.Column("baseline_p99_ms", sa.Float(), nullable=True),
        sa.Column("baseline_periods", sa.Integer(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.Column("agreement_frames", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("rollout") as batch:
        batch.add_column(sa.Column("archived_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout") as batch:
        batch.drop_column("archived_at")
    op.drop_table("rollout_member_archive")
    op.drop_index("ix_device_dirty_lagging", table_name="device")
    op.drop_table("reconcile_dirty")
