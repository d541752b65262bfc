"""anti-replay windows: per device, which of the seqs just below the highest accepted one on
each signed channel were accepted too (``report_window``, ``telemetry_window``: bitmaps,
cloud/devices/replay_window.py), so two controller replicas committing one device's
messages out of order lose none of them

Revision ID: 0023_replay_window
Revises: 0022_image_metadata
"""
import sqlalchemy as sa
from alembic import op

revision = "0023_replay_window"
down_revision = "0022_image_metadata"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL reads as an empty window: the highest seq stands, nothing below it accepted yet
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("report_window", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("telemetry_window", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("telemetry_window")
        batch.drop_column("report_window")
