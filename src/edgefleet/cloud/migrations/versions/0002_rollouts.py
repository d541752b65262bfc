"""rollouts: rollout, rollout_member, rollout_event, controller_lease

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", S(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("model_name", S(length=128), nullable=False),
        sa.Column("model_version", S(length=64), nullable=False),
        sa.Column("digest", S(length=64), nullable=False),
        sa.Column("slot", S(length=16), nullable=False),
        sa.Column("select", sa.Text(), nullable=False),
        sa.Column("waves", S(length=256), nullable=False),
        sa.Column("soak", S(length=32), nullable=False),
        sa.Column("gates", sa.JSON(), nullable=False),
        sa.Column("on_breach", S(length=16), nullable=False),
        sa.Column("device_timeout", S(length=32), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.Column("state", S(length=16), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_by", S(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_state", "rollout", ["state"])
    op.create_table(
        "rollout_member",
        sa.Column("rollout_id", S(length=64), nullable=False),
        sa.Column("device_id", S(length=128), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.Float(), nullable=False),
        sa.Column("dispatched_at", sa.Float(), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.Column("reverted_at", sa.Float(), nullable=True),
        sa.Column("timed_out_at", sa.Float(), nullable=True),
        sa.Column("seen_phase", S(length=16), nullable=True),
        sa.Column("seen_target", S(length=64), nullable=True),
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
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"]),
        sa.PrimaryKeyConstraint("rollout_id", "device_id"),
    )
    op.create_index("ix_rollout_member_device", "rollout_member", ["device_id"])
    op.create_table(
        "rollout_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", S(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("level", S(length=16), nullable=False),
        sa.Column("kind", S(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollout_event_rollout", "rollout_event", ["rollout_id", "id"])
    op.create_table(
        "controller_lease",
        sa.Column("name", S(length=64), nullable=False),
        sa.Column("holder", S(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("controller_lease")
    op.drop_index("ix_rollout_event_rollout", table_name="rollout_event")
    op.drop_table("rollout_event")
    op.drop_index("ix_rollout_member_device", table_name="rollout_member")
    op.drop_table("rollout_member")
    op.drop_index("ix_rollout_state", table_name="rollout")
    op.drop_table("rollout")
