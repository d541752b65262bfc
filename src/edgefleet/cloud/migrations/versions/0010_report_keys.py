"""report keys: each device's Ed25519 report key, the last accepted sequence numbers and
telemetry period, and a hardware id reported but not yet approved

Revision ID: 0010
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("report_public_key", _S(length=64), nullable=True))
        batch.add_column(sa.Column("report_key_id", _S(length=32), nullable=True))
        batch.add_column(sa.Column("report_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("telemetry_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("report_period_end", _T(), nullable=True))
        batch.add_column(sa.Column("hardware_id_reported", _S(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        for name in ("hardware_id_reported", "report_period_end", "telemetry_seq", "report_seq",
                     "report_key_id", "report_public_key"):
            batch.drop_column(name)
