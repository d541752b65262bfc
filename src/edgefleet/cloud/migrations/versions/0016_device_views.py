"""device views: indexes for the paged, filtered fleet list and its counts
(``GET /api/v1/devices``, ``/devices/counts``, the fleet page)

A page is ``ORDER BY id LIMIT n`` after the cursor's id, filtered by hardware profile,
state (online, revoked, stale) or the model assigned to a slot; each index here leads with
the filtered column and ends with ``id``, so a filtered page walks the index in id order
instead of sorting the fleet.

Revision ID: 0016_device_views
Revises: 0008, 0011_freshness
"""
from alembic import op

revision = "0016_device_views"
down_revision = ("0008", "0011_freshness")  # revoked_at (0008), stale_since (0011), both off 0001
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_device_views_hardware_id", "device", ["hardware_id", "id"]),
    ("ix_device_views_online", "device", ["online", "id"]),
    ("ix_device_views_revoked_at", "device", ["revoked_at", "id"]),
    ("ix_device_views_stale_since", "device", ["stale_since", "id"]),
    ("ix_device_views_slot_model", "slot_assignment", ["slot", "model_version_id", "device_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
