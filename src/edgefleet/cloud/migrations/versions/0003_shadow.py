"""shadow: capture events, stored clips, per-(device, pair) cumulative agreement

Revision ID: 0003
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "shadow_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("event_id", _S(length=64), nullable=False),
        sa.Column("ts", _T(), nullable=False),
        sa.Column("received_at", _T(), nullable=False),
        sa.Column("trigger", _S(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("control_name", _S(length=128), nullable=True),
        sa.Column("control_version", _S(length=64), nullable=True),
        sa.Column("control_digest", _S(length=64), nullable=True),
        sa.Column("control_label", _S(length=128), nullable=True),
        sa.Column("control_score", sa.Float(), nullable=True),
        sa.Column("candidate_name", _S(length=128), nullable=True),
        sa.Column("candidate_version", _S(length=64), nullable=True),
        sa.Column("candidate_digest", _S(length=64), nullable=True),
        sa.Column("candidate_label", _S(length=128), nullable=True),
        sa.Column("candidate_score", sa.Float(), nullable=True),
        sa.Column("device_clip_id", _S(length=64), nullable=True),
        sa.Column("clip_id", _S(length=64), nullable=True),
        sa.Column("clip_evicted", sa.Boolean(), nullable=False),
        sa.Column("via_mqtt", sa.Boolean(), nullable=False),
        sa.Column("via_upload", sa.Boolean(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "event_id", name="uq_shadow_event_device_event"),
    )
    op.create_index("ix_shadow_event_pair", "shadow_event",
                    ["control_name", "control_version", "candidate_name", "candidate_version", "ts"])
    op.create_index("ix_shadow_event_ts", "shadow_event", ["ts"])
    op.create_table(
        "clip",
        sa.Column("clip_id", _S(length=64), nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("event_id", _S(length=64), nullable=False),
        sa.Column("clip_digest", _S(length=64), nullable=False),
        sa.Column("clip_size", sa.Integer(), nullable=False),
        sa.Column("content_type", _S(length=64), nullable=False),
        sa.Column("keyframe_digest", _S(length=64), nullable=True),
        sa.Column("keyframe_size", sa.Integer(), nullable=False),
        sa.Column("received_at", _T(), nullable=False),
        sa.Column("upload_id", _S(length=128), nullable=False),
        sa.PrimaryKeyConstraint("clip_id"),
    )
    op.create_index("ix_clip_device_id", "clip", ["device_id"])
    op.create_index("ix_clip_event_id", "clip", ["event_id"])
    op.create_table(
        "shadow_pair_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("control_name", _S(length=128), nullable=False),
        sa.Column("control_version", _S(length=64), nullable=False),
        sa.Column("candidate_name", _S(length=128), nullable=False),
        sa.Column("candidate_version", _S(length=64), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("disagreements", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.Column("periods", sa.Integer(), nullable=False),
        sa.Column("first_at", _T(), nullable=False),
        sa.Column("updated_at", _T(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "control_name", "control_version", "candidate_name",
                            "candidate_version", name="uq_shadow_pair_stats"),
    )
    op.create_index("ix_shadow_pair_stats_pair", "shadow_pair_stats",
                    ["control_name", "control_version", "candidate_name", "candidate_version"])


def downgrade() -> None:
    op.drop_index("ix_shadow_pair_stats_pair", table_name="shadow_pair_stats")
    op.drop_table("shadow_pair_stats")
    op.drop_index("ix_clip_event_id", table_name="clip")
    op.drop_index("ix_clip_device_id", table_name="clip")
    op.drop_table("clip")
    op.drop_index("ix_shadow_event_ts", table_name="shadow_event")
    op.drop_index("ix_shadow_event_pair", table_name="shadow_event")
    op.drop_table("shadow_event")
