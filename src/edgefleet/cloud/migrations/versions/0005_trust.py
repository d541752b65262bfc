"""trust: signed image target per model version; director bookkeeping per device

Revision ID: 0005
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_version") as batch:
        batch.add_column(sa.Column("target_name", sa.String(length=256), nullable=True))
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("director_generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("release_floor", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("release_floor")
        batch.drop_column("director_generation")
    with op.batch_alter_table("model_version") as batch:
        batch.drop_column("target_name")
