"""rollout schedules and rate ramps: the rollout's --rate / --ramp text (the start time of
a scheduled rollout lives in its state_json, as ``start_at``; ``state`` is ``scheduled``)

Revision ID: 0014_rollout_schedule
Revises: 0002
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014_rollout_schedule"
down_revision = "0002"  # adds columns to the rollout table made by 0002 (a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("rollout") as batch:
        batch.add_column(sa.Column("rate", _S(length=64), nullable=True))
        batch.add_column(sa.Column("ramp", _S(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout") as batch:
        batch.drop_column("ramp")
        batch.drop_column("rate")
