"""fleet scale indexes (issue 14): the controller loop's per-pass queries read only what is due

* ``ix_device_unheard`` (online, last_seen): ``presence.mark_unheard`` — online devices not
  heard since the cutoff (a range per OR term, ``last_seen < cutoff`` and ``IS NULL``), not
  every online device, every pass.
* ``ix_device_lag_due`` (stale_since, lagging_since): ``freshness.mark_stale`` — devices
  lagging since before the cutoff and not yet stale, not every device that is not stale.
* ``ix_rollout_member_wave`` (rollout_id, wave, device_id): a rollout's member list
  filtered by wave (``rollout.members``) pages and counts in the index, not over every member.

Revision ID: 0021_fleet_scale_indexes
Revises: 0011_freshness, 0002
"""
from alembic import op

revision = "0021_fleet_scale_indexes"
down_revision = ("0011_freshness", "0002")  # lagging_since/stale_since (0011), rollout_member (0002), both off 0001
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_device_unheard", "device", ["online", "last_seen"]),
    ("ix_device_lag_due", "device", ["stale_since", "lagging_since"]),
    ("ix_rollout_member_wave", "rollout_member", ["rollout_id", "wave", "device_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
