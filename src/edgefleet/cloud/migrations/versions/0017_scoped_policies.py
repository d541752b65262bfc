"""scoped policies: capture, network and maintenance windows per selector or rollout

Revision ID: 0017_scoped_policies
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0017_scoped_policies"
down_revision = "0001"  # a table of its own (a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "scoped_policy",
        sa.Column("name", _S(length=80), nullable=False),
        sa.Column("selector", _S(length=1000), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("capture", sa.JSON(), nullable=True),
        sa.Column("network", sa.JSON(), nullable=True),
        sa.Column("windows", sa.JSON(), nullable=True),
        sa.Column("rollout_id", _S(length=64), nullable=True),
        sa.Column("updated_at", _T(), nullable=False),
        sa.Column("updated_by", _S(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_scoped_policy_rollout_id", "scoped_policy", ["rollout_id"])


def downgrade() -> None:
    op.drop_index("ix_scoped_policy_rollout_id", table_name="scoped_policy")
    op.drop_table("scoped_policy")
