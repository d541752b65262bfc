"""Errors of the upload endpoint: bad requests (``UploadRejected`` leaves) vs. store trouble.

Every error carries the HTTP status the router answers with. ``UploadRejected`` leaves are
the client's fault and permanent for that request; ``UploadStorageError`` is retryable.
"""

from __future__ import annotations

from typing import Any


class UploadError(Exception):
    """Root of every upload error."""

    status_code = 500
    code = "upload_error"

    def __init__(self, message: str, **extra: Any):
        self.extra = extra
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "detail": str(self), **self.extra}


class UploadRejected(UploadError):
    """The request is malformed or not allowed; nothing was stored."""

    status_code = 400
    code = "malformed"


class Malformed(UploadRejected):
    status_code = 400
    code = "malformed"


class TooLarge(UploadRejected):
    status_code = 413
    code = "too_large"


class Forbidden(UploadRejected):
    """The authenticated device may not act on this upload or event."""

    status_code = 403
    code = "forbidden"


class QuotaExceeded(UploadRejected):
    """The device has too many open sessions (or declared bytes in them); ``limit`` names
    the setting. Retryable once one of its sessions completes or goes stale."""

    status_code = 429
    code = "quota_exceeded"


class UploadNotFound(UploadRejected):
    status_code = 404
    code = "not_found"


class OffsetMismatch(UploadRejected):
    """A chunk that does not start at the current offset; ``offset`` says where to resume."""

    status_code = 409
    code = "offset_mismatch"

    def __init__(self, message: str, *, offset: int):
        self.offset = offset
        super().__init__(message, offset=offset)


class Incomplete(UploadRejected):
    """``complete`` called before every part has all its bytes."""

    status_code = 409
    code = "incomplete"


class EventConflict(UploadRejected):
    """The event id was already completed with a different clip."""

    status_code = 409
    code = "event_conflict"


class ContentDigestMismatch(UploadRejected):
    """The assembled part does not hash to the declared sha256; the part restarts at 0."""

    status_code = 422
    code = "digest_mismatch"


class UploadStorageError(UploadError):
    """Staging or the blob store failed (disk, network); retry later."""

    status_code = 503
    code = "storage_unavailable"
