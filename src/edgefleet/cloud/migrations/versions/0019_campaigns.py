"""capture campaigns: the campaigns operators start (selector, condition AST, quota, state)
and the captures devices reported for each (one row per device and event)

Revision ID: 0019_campaigns
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0019_campaigns"
down_revision = "0001"  # tables of their own (a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "capture_campaign",
        sa.Column("name", _S(length=64), nullable=False),
        sa.Column("selector", _S(length=1000), nullable=False),
        sa.Column("condition_text", _S(length=1000), nullable=False),
        sa.Column("condition", sa.JSON(), nullable=True),
        sa.Column("like", sa.JSON(), nullable=True),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("per_device_quota", sa.Integer(), nullable=False),
        sa.Column("max_per_minute", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("pre_seconds", sa.Float(), nullable=False),
        sa.Column("post_seconds", sa.Float(), nullable=False),
        sa.Column("frames_only", sa.Boolean(), nullable=False),
        sa.Column("state", _S(length=16), nullable=False),
        sa.Column("created_at", _T(), nullable=False),
        sa.Column("created_by", _S(length=128), nullable=False),
        sa.Column("ends_at", _T(), nullable=True),
        sa.Column("finished_at", _T(), nullable=True),
        sa.Column("finished_by", _S(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_capture_campaign_state", "capture_campaign", ["state"])
    op.create_table(
        "capture_campaign_capture",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign", _S(length=64), nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("event_id", _S(length=64), nullable=False),
        sa.Column("received_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign", "device_id", "event_id", name="uq_campaign_capture"),
    )
    op.create_index("ix_campaign_capture_campaign_device", "capture_campaign_capture", ["campaign", "device_id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_capture_campaign_device", table_name="capture_campaign_capture")
    op.drop_table("capture_campaign_capture")
    op.drop_index("ix_capture_campaign_state", table_name="capture_campaign")
    op.drop_table("capture_campaign")
