"""webhooks and device history: receivers, the outbox, deliveries, watcher state, and
the per-device history table

Revision ID: 0013_webhooks_history
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013_webhooks_history"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "webhook",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("url", _S(length=2048), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", _S(length=256), nullable=False),
        sa.Column("description", _S(length=256), nullable=False),
        sa.Column("created_by", _S(length=128), nullable=False),
        sa.Column("created_at", _T(), nullable=False),
        sa.Column("claimed_by", _S(length=128), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", _S(length=40), nullable=False),
        sa.Column("type", _S(length=64), nullable=False),
        sa.Column("at", _T(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", _S(length=40), nullable=False),
        sa.Column("webhook_id", _S(length=32), nullable=False),
        sa.Column("event_id", _S(length=40), nullable=False),
        sa.Column("type", _S(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", _S(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", _S(length=512), nullable=True),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("created_at", _T(), nullable=False),
        sa.Column("delivered_at", _T(), nullable=True),
        sa.Column("redelivery_of", _S(length=40), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id"),
    )
    op.create_index("ix_webhook_delivery_queue", "webhook_delivery", ["webhook_id", "state", "id"])
    op.create_index("ix_webhook_delivery_state", "webhook_delivery", ["state", "next_attempt_at"])
    op.create_table(
        "webhook_watch",
        sa.Column("key", _S(length=256), nullable=False),
        sa.Column("value", _S(length=256), nullable=False),
        sa.Column("updated_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "device_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("at", _T(), nullable=False),
        sa.Column("kind", _S(length=16), nullable=False),
        sa.Column("slot", _S(length=16), nullable=True),
        sa.Column("message", _S(length=1024), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_device_history_device_at", "device_history", ["device_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_device_history_device_at", table_name="device_history")
    op.drop_table("device_history")
    op.drop_table("webhook_watch")
    op.drop_index("ix_webhook_delivery_state", table_name="webhook_delivery")
    op.drop_index("ix_webhook_delivery_queue", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_outbox")
    op.drop_table("webhook")
