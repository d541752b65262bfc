"""freshness: the director version signed for each device, since when its signed state
lags, and when and why it became stale

Revision ID: 0011_freshness
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011_freshness"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("director_version", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lagging_since", _T(), nullable=True))
        batch.add_column(sa.Column("stale_since", _T(), nullable=True))
        batch.add_column(sa.Column("stale_reason", _S(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        for name in ("stale_reason", "stale_since", "lagging_since", "director_version"):
            batch.drop_column(name)
