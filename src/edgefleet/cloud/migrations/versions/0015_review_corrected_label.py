"""review labels carry the reviewer's corrected class (``review_label.corrected_label``):
the true label of a capture, checked against the models' manifests; training exports use it

Revision ID: 0015_review_corrected_label
Revises: 0006
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0015_review_corrected_label"
down_revision = "0006"  # adds a column to review_label made by 0006 (a branch off 0001)
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("review_label") as batch:
        batch.add_column(sa.Column("corrected_label", _S(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_label") as batch:
        batch.drop_column("corrected_label")
