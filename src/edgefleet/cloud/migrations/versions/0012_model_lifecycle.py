"""model lifecycle: status (active | deprecated | blocked) with reason, by and at; who
pushed each version; the sha256 of its ONNX bytes (the same model under another version)

Revision ID: 0012_model_lifecycle
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012_model_lifecycle"
down_revision = "0001"  # a feature branch off the initial schema, like 0002…0011 (db.migrate upgrades "heads")
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_T = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.add_column(sa.Column("status", _S(length=16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("status_reason", _S(length=1024), nullable=True))
        batch.add_column(sa.Column("status_by", _S(length=128), nullable=True))
        batch.add_column(sa.Column("status_at", _T(), nullable=True))
        batch.add_column(sa.Column("pushed_by", _S(length=128), nullable=True))
        batch.add_column(sa.Column("model_sha256", _S(length=64), nullable=True))
        batch.create_index("ix_model_version_status", ["status"])
        batch.create_index("ix_model_version_model_sha256", ["model_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.drop_index("ix_model_version_model_sha256")
        batch.drop_index("ix_model_version_status")
        for name in ("model_sha256", "pushed_by", "status_at", "status_by", "status_reason", "status"):
            batch.drop_column(name)
