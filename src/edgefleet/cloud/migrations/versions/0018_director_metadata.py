"""director metadata in the database: per device, the signed targets/snapshot/timestamp
(``director_metadata``) and the versions the database sequences (``director_head``)

Revision ID: 0018_director_metadata
Revises: 0011_freshness
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0018_director_metadata"
down_revision = "0011_freshness"  # beside device.director_version (a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "director_head",
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("targets_version", sa.Integer(), nullable=False),
        sa.Column("snapshot_version", sa.Integer(), nullable=False),
        sa.Column("timestamp_version", sa.Integer(), nullable=False),
        sa.Column("binding", sa.JSON(), nullable=False),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=False),
        sa.Column("targets_meta", sa.JSON(), nullable=True),
        sa.Column("targets_expires", _T(), nullable=True),
        sa.Column("snapshot_expires", _T(), nullable=True),
        sa.Column("timestamp_expires", _T(), nullable=True),
        sa.Column("updated_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    for col in ("targets_expires", "snapshot_expires", "timestamp_expires"):
        op.create_index(f"ix_director_head_{col}", "director_head", [col])
    op.create_table(
        "director_metadata",
        sa.Column("device_id", _S(length=128), nullable=False),
        sa.Column("role", _S(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "role", "version"),
    )


def downgrade() -> None:
    op.drop_table("director_metadata")
    for col in ("targets_expires", "snapshot_expires", "timestamp_expires"):
        op.drop_index(f"ix_director_head_{col}", table_name="director_head")
    op.drop_table("director_head")
