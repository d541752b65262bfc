"""identity: per-device broker credentials, certificate serial, revocation, rotation; API token expiry

Revision ID: 0008
Revises: 0001
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("mqtt_password_hash", _S(length=256), nullable=True))
        batch.add_column(sa.Column("cert_serial", _S(length=64), nullable=True))
        batch.add_column(sa.Column("revoked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("credentials_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("pending_token_hash", _S(length=128), nullable=True))
        batch.add_column(sa.Column("pending_mqtt_password_hash", _S(length=256), nullable=True))
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("device") as batch:
        for name in ("pending_mqtt_password_hash", "pending_token_hash", "credentials_epoch",
                     "revoked_at", "cert_serial", "mqtt_password_hash"):
            batch.drop_column(name)
