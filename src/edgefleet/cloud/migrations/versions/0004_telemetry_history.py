"""telemetry history: one row per device per telemetry period

Revision ID: 0004
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_period",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("period_start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("period_end", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("control_name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("control_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("candidate_name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("candidate_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("nan_outputs", sa.Integer(), nullable=False),
        sa.Column("latency_p50", sa.Float(), nullable=False),
        sa.Column("latency_p95", sa.Float(), nullable=False),
        sa.Column("latency_p99", sa.Float(), nullable=False),
        sa.Column("shadow_frames", sa.Integer(), nullable=False),
        sa.Column("shadow_dropped", sa.Integer(), nullable=False),
        sa.Column("shadow_disagreements", sa.Integer(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.Column("candidate_p99", sa.Float(), nullable=True),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("confidence_histogram", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_telemetry_period_device_end", "telemetry_period", ["device_id", "period_end"])
    op.create_index("ix_telemetry_period_control", "telemetry_period", ["control_name", "control_version", "period_end"])
    op.create_index("ix_telemetry_period_candidate", "telemetry_period", ["candidate_name", "candidate_version", "period_end"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_period_candidate", table_name="telemetry_period")
    op.drop_index("ix_telemetry_period_control", table_name="telemetry_period")
    op.drop_index("ix_telemetry_period_device_end", table_name="telemetry_period")
    op.drop_table("telemetry_period")
