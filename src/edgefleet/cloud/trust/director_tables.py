"""The director's per-device metadata in the database (migration 0018).

* ``director_head``: one row per device — the versions of its current targets, snapshot
  and timestamp (the database sequences them: a signer locks the row, signs the next
  versions and commits; another replica waits, then signs above them), what the current
  targets assign and bind (so deciding whether to re-sign reads no metadata), the
  snapshot's entry for the current targets (to re-sign snapshot and timestamp alone) and
  each role's expiry (the refresh pass reads only rows due).
* ``director_metadata``: the signed documents, keyed by (device, role, version), served
  byte for byte at ``/tuf/director/<id>/N.targets.json``, ``N.snapshot.json`` and
  ``timestamp.json`` (the highest timestamp version). The last ``KEEP_VERSIONS`` of each
  role stay, so a device that read the previous timestamp can still fetch what it names.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, SQLModel

KEEP_VERSIONS = 2


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DirectorHead(SQLModel, table=True):
    __tablename__ = "director_head"

    device_id: str = Field(primary_key=True, max_length=128)
    targets_version: int = 0
    snapshot_version: int = 0
    timestamp_version: int = 0
    binding: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    slots: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    digests: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    targets_meta: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    targets_expires: datetime | None = Field(default=None, index=True)
    snapshot_expires: datetime | None = Field(default=None, index=True)
    timestamp_expires: datetime | None = Field(default=None, index=True)
    updated_at: datetime = Field(default_factory=_utcnow)


class DirectorMetadata(SQLModel, table=True):
    __tablename__ = "director_metadata"

    device_id: str = Field(primary_key=True, max_length=128)
    role: str = Field(primary_key=True, max_length=16)
    version: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
