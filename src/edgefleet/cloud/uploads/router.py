"""HTTP face of the upload store: a FastAPI router the controller mounts at ``/api/v1``.

Request → ``authenticate_device`` (the integrator's dependency: device id or 401) → bounded
body read → ``UploadStore`` in a worker thread → JSON answer. Every ``UploadError`` becomes
its status code with ``{"detail", "code", ...}``; the protocol is in docs/uploads.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from edgefleet.registry import BlobStore

from .errors import Malformed, TooLarge, UploadError
from .models import ChunkAck, StoredClip, UploadErrorBody, UploadStatus
from .store import MiB, UploadLimits, UploadStore

_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19})$")
_CREATE_OVERHEAD = 4096
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": UploadErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


def parse_content_range(value: str | None) -> tuple[int, int, int]:
    """``bytes start-end/total`` (end inclusive) → (start, end, total).

    Raises:
        Malformed: missing or not of that shape, or end before start, or end past total.
    """
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        raise Malformed("Content-Range must be 'bytes START-END/TOTAL'")
    start, end, total = (int(g) for g in m.groups())
    if end < start or end >= total:
        raise Malformed(f"Content-Range {value!r} is inconsistent")
    return start, end, total


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Malformed("bad Content-Length")
        if int(declared) > limit:
            raise TooLarge(f"body of {declared} bytes exceeds the limit of {limit}")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise TooLarge(f"body exceeds the limit of {limit} bytes")
    except ClientDisconnect:  # the link dropped mid-body: nothing was written
        raise Malformed("client disconnected before the body was complete") from None
    return bytes(buf)


def _error(exc: UploadError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code)


def make_uploads_router(
    *,
    staging_dir: str | os.PathLike[str],
    blob_store: BlobStore,
    authenticate_device: Callable[..., Any],
    on_clip_stored: Callable[[StoredClip], None],
    max_clip_bytes: int = 64 * MiB,
    max_keyframe_bytes: int = 4 * MiB,
    max_event_bytes: int = 16 * 1024,
    max_chunk_bytes: int = 8 * MiB,
    max_open_sessions: int = 8,
    max_open_bytes: int = 512 * MiB,
    store: UploadStore | None = None,
) -> APIRouter:
    """Build the upload router (paths ``/uploads...``; mount it under ``/api/v1``).

    Args:
        staging_dir: where partial uploads wait (local disk of the controller).
        blob_store: where verified clips and keyframes go (``LocalBlobStore`` or S3).
        authenticate_device: FastAPI dependency returning the authenticated device id,
            raising ``HTTPException(401)`` when the bearer token is missing or wrong.
        on_clip_stored: called once per completed upload (possibly again after a crash,
            with the same ``clip_id``: upsert); raising makes the device retry ``complete``.
        max_open_sessions, max_open_bytes: per-device quota of open sessions (429 past it).
        store: an ``UploadStore`` to use instead of building one (for ``expire``).
    """
    limits = UploadLimits(
        max_clip_bytes=max_clip_bytes,
        max_keyframe_bytes=max_keyframe_bytes,
        max_event_bytes=max_event_bytes,
        max_chunk_bytes=max_chunk_bytes,
        max_open_sessions=max_open_sessions,
        max_open_bytes=max_open_bytes,
    )
    store = store or UploadStore(staging_dir, blob_store, on_clip_stored, limits=limits)
    router = APIRouter(prefix="/uploads", tags=["uploads"])
    router.upload_store = store  # type: ignore[attr-defined]  # for the integrator's GC
    Device = Depends(authenticate_device)

    @router.post(
        "",
        summary="Open (or re-open) the upload of one captured event",
        description=(
            "Body: `{event: fleet.event/1, clip: {size, sha256, content_type}|null, "
            "keyframe: {size, sha256, content_type}|null, clip_evicted: bool}`. "
            "Idempotent per (device, event_id): answers the current offsets."
        ),
        response_model=UploadStatus,
        responses=_ERRORS,
    )
    async def create_upload(request: Request, device_id: str = Device) -> Any:
        try:
            body = await _read_body(request, limits.max_event_bytes + _CREATE_OVERHEAD)
            return await run_in_threadpool(store.create, device_id, body)
        except UploadError as exc:
            return _error(exc)

    @router.get(
        "/{upload_id}",
        summary="Offsets and state of an upload (where a resumed device continues)",
        response_model=UploadStatus,
        responses=_ERRORS,
    )
    async def get_upload(upload_id: str, device_id: str = Device) -> Any:
        try:
            return await run_in_threadpool(store.status, device_id, upload_id)
        except UploadError as exc:
            return _error(exc)

    @router.put(
        "/{upload_id}/{part}",
        summary="Append one chunk to the clip or keyframe (`Content-Range: bytes s-e/total`)",
        response_model=ChunkAck,
        responses=_ERRORS,
    )
    async def put_chunk(
        upload_id: str,
        part: Literal["clip", "keyframe"],
        request: Request,
        device_id: str = Device,
    ) -> Any:
        try:
            start, end, total = parse_content_range(request.headers.get("content-range"))
            data = await _read_body(request, limits.max_chunk_bytes)
            if len(data) != end - start + 1:
                raise Malformed(f"body has {len(data)} bytes, Content-Range says {end - start + 1}")
            offset = await run_in_threadpool(
                store.write, device_id, upload_id, part, start, total, data
            )
            return ChunkAck(upload_id=upload_id, part=part, offset=offset)
        except UploadError as exc:
            return _error(exc)

    @router.post(
        "/{upload_id}/complete",
        summary="Verify sha256, store clip and keyframe in the blob store, index the clip",
        response_model=UploadStatus,
        responses=_ERRORS,
    )
    async def complete_upload(upload_id: str, device_id: str = Device) -> Any:
        try:
            status, _ = await run_in_threadpool(store.complete, device_id, upload_id)
            return status
        except UploadError as exc:
            return _error(exc)

    return router
