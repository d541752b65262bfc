"""audit: the hash-chained log of control-plane actions, its head and its signed anchors

Revision ID: 0009
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", _T(), nullable=False),
        sa.Column("actor", _S(length=128), nullable=False),
        sa.Column("role", _S(length=16), nullable=False),
        sa.Column("action", _S(length=64), nullable=False),
        sa.Column("target", _S(length=256), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("prev_hash", _S(length=64), nullable=False),
        sa.Column("hash", _S(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_entry_ts", "audit_entry", ["ts"])
    op.create_index("ix_audit_entry_actor", "audit_entry", ["actor"])
    op.create_index("ix_audit_entry_action", "audit_entry", ["action"])
    op.create_index("ix_audit_entry_hash", "audit_entry", ["hash"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", _S(length=64), nullable=False),
        sa.Column("anchor_seq", sa.Integer(), nullable=False),
        sa.Column("anchor_at", _T(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": "0" * 64, "anchor_seq": 0, "anchor_at": None}])
    op.create_table(
        "audit_anchor",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", _S(length=64), nullable=False),
        sa.Column("ts", _T(), nullable=False),
        sa.Column("prev_seq", sa.Integer(), nullable=False),
        sa.Column("key_id", _S(length=64), nullable=False),
        sa.Column("signature", _S(length=256), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_anchor")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_entry_hash", table_name="audit_entry")
    op.drop_index("ix_audit_entry_action", table_name="audit_entry")
    op.drop_index("ix_audit_entry_actor", table_name="audit_entry")
    op.drop_index("ix_audit_entry_ts", table_name="audit_entry")
    op.drop_table("audit_entry")
