"""review: one reviewer verdict per capture event

Revision ID: 0006
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    # No foreign key to shadow_event: that table comes from another branch (0003), whose
    # order against this one is not fixed.
    op.create_table(
        "review_label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shadow_event_id", sa.Integer(), nullable=False),
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("event_id", _S(length=64), nullable=False),
        sa.Column("verdict", _S(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer", _S(length=128), nullable=False),
        sa.Column("labelled_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("shadow_event_id", name="uq_review_label_event"),
    )
    op.create_index("ix_review_label_device_event", "review_label", ["device_id", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_review_label_device_event", table_name="review_label")
    op.drop_table("review_label")
