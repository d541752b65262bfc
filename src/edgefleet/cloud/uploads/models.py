"""Wire shapes of the upload protocol (docs/uploads.md) and the record handed to the indexer.

``CreateUpload`` is what a device POSTs to open (or re-open) an upload; ``UploadStatus``
is what every call but a chunk write answers; ``StoredClip`` is what the controller's
``on_clip_stored`` callback receives once a clip sits verified in the blob store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.protocols import Event

PartName = Literal["clip", "keyframe"]
PARTS: tuple[PartName, ...] = ("clip", "keyframe")
CLIP_CONTENT_TYPES = ("video/webm", "video/mp4")


class PartSpec(BaseModel):
    """What the device promises to send for one part."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str = Field(default="application/octet-stream", max_length=64)


class CreateUpload(BaseModel):
    """Body of ``POST /uploads``. ``event`` is a ``fleet.event/1`` object."""

    model_config = ConfigDict(extra="forbid")

    event: dict  # validated separately with protocols.decode, so errors name the field
    clip: PartSpec | None = None
    keyframe: PartSpec | None = None
    clip_evicted: bool = False


class UploadStatus(BaseModel):
    upload_id: str
    state: Literal["open", "completed"]
    clip_id: str | None = None
    offsets: dict[str, int] = Field(default_factory=dict)
    sizes: dict[str, int] = Field(default_factory=dict)


class ChunkAck(BaseModel):
    upload_id: str
    part: PartName
    offset: int


class UploadErrorBody(BaseModel):
    """The API's error body (api/problems.py) plus ``offset`` where a chunk must resume."""

    code: str
    message: str
    detail: Any = None  # the message again; the field errors of a 422
    offset: int | None = None


@dataclass(frozen=True)
class StoredClip:
    """One capture stored in the blob store; what the controller indexes.

    ``clip_digest`` is None when the device had to evict the clip (or never had one):
    the event is still reported, with ``event.clip_id`` None. Otherwise ``event.clip_id``
    equals ``clip_id``. The same ``clip_id`` may be delivered twice (see docs/uploads.md):
    index it with an upsert.
    """

    clip_id: str
    device_id: str
    event: Event
    clip_digest: str | None
    clip_size: int
    clip_content_type: str | None
    keyframe_digest: str | None
    keyframe_size: int
    received_at: datetime
    upload_id: str
    clip_evicted: bool = False
