"""Clip uploads from devices: resumable sessions staged on disk, verified into a blob store.

``make_uploads_router`` is the HTTP endpoint (mount at ``/api/v1``); ``UploadStore`` the
logic behind it; ``StoredClip`` what the controller's indexer receives. See docs/uploads.md.
"""

from .errors import (
    ContentDigestMismatch,
    EventConflict,
    Forbidden,
    Incomplete,
    Malformed,
    OffsetMismatch,
    QuotaExceeded,
    TooLarge,
    UploadError,
    UploadNotFound,
    UploadRejected,
    UploadStorageError,
)
from .models import ChunkAck, CreateUpload, PartSpec, StoredClip, UploadStatus
from .router import make_uploads_router, parse_content_range
from .store import UploadLimits, UploadStore, upload_id_for

__all__ = [
    "ChunkAck", "ContentDigestMismatch", "CreateUpload", "EventConflict", "Forbidden",
    "Incomplete", "Malformed", "OffsetMismatch", "PartSpec", "QuotaExceeded", "StoredClip", "TooLarge",
    "UploadError", "UploadLimits", "UploadNotFound", "UploadRejected", "UploadStatus",
    "UploadStorageError", "UploadStore", "make_uploads_router", "parse_content_range",
    "upload_id_for",
]
