"""The image repository's online metadata in the database (migration 0022).

* ``image_head``: one row (``repo`` = ``"image"``) — the lock every signer takes (``SELECT …
  FOR UPDATE``; a second replica waits, then signs above the first), the global release
  counter, and the current snapshot and timestamp versions and expiries (for ``fleet keys
  status``).
* ``image_metadata``: the signed documents, keyed by (role, version) — top-level targets, the
  hash bins (``bins-XX``), snapshot and timestamp — served byte for byte at
  ``/tuf/image/metadata/N.<role>.json`` and ``timestamp.json`` (the highest timestamp
  version). The primary key refuses a version signed twice. Root stays in the data dir's
  files (its keys are offline).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

HEAD_ID = "image"
KEEP_TIMESTAMPS = 2  # a client that read the previous timestamp still finds what it names


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ImageHead(SQLModel, table=True):
    __tablename__ = "image_head"

    repo: str = Field(primary_key=True, max_length=16)
    release_counter: int = 0
    snapshot_version: int = 0
    timestamp_version: int = 0
    snapshot_expires: datetime | None = None
    timestamp_expires: datetime | None = None
    updated_at: datetime = Field(default_factory=_utcnow)


class ImageMetadata(SQLModel, table=True):
    __tablename__ = "image_metadata"

    role: str = Field(primary_key=True, max_length=32)
    version: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=_utcnow)
