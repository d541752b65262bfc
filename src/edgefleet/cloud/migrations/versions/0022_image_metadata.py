"""image repository metadata in the database: the signed targets, hash bins, snapshot and
timestamp (``image_metadata``) and the head row every signer locks (``image_head``: release
counter, current versions), so controller replicas share one image repository

Revision ID: 0022_image_metadata
Revises: 0021_fleet_scale_indexes
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0022_image_metadata"
down_revision = "0021_fleet_scale_indexes"  # tables of their own
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "image_head",
        sa.Column("repo", _S(length=16), nullable=False),
        sa.Column("release_counter", sa.Integer(), nullable=False),
        sa.Column("snapshot_version", sa.Integer(), nullable=False),
        sa.Column("timestamp_version", sa.Integer(), nullable=False),
        sa.Column("snapshot_expires", _T(), nullable=True),
        sa.Column("timestamp_expires", _T(), nullable=True),
        sa.Column("updated_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("repo"),
    )
    op.create_table(
        "image_metadata",
        sa.Column("role", _S(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _T(), nullable=False),
        sa.PrimaryKeyConstraint("role", "version"),
    )


def downgrade() -> None:
    op.drop_table("image_metadata")
    op.drop_table("image_head")
