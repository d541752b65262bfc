"""/api/v1/clips/{id} — stored capture clips (video, HTTP Range) and their keyframes (JPEG).

Bytes come from the controller's blob store (local directory or S3) by the digests the
clip index recorded at upload; reads need the viewer role.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from ....registry import BlobNotFound
from ....registry.stores import read_range
from ... import shadow_index
from ...errors import NotFound
from ..deps import ControllerDep, SessionDep, Viewer
from ..problems import error_response, responses

router = APIRouter(prefix="/clips", tags=["clips"])
ClipId = Annotated[str, Path(min_length=1, max_length=128, description="the clip's id")]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _clip(session: Any, clip_id: str) -> shadow_index.Clip:
    clip = shadow_index.get_clip(session, clip_id)
    if clip is None:
        raise NotFound(f"no clip {clip_id!r}")
    return clip


def _blob_response(controller: Any, digest: str, media_type: str, range_header: str | None) -> Response:
    store = controller.store
    try:
        size = store.size(digest)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
        match = _RANGE.match(range_header or "")
        if match is None or (not match.group(1) and not match.group(2)):
            return Response(store.get(digest), media_type=media_type, headers=headers)
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size or end < start:
            return error_response(416, f"the range is outside the {size} bytes", headers={"Content-Range": f"bytes */{size}"})
        body = read_range(store, digest, start, end - start + 1)
        return Response(body, status_code=206, media_type=media_type,
                        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
    except BlobNotFound:
        raise NotFound(f"blob {digest} is missing from the store") from None


@router.get("/{clip_id}", summary="The clip's video (video/webm; supports Range for seeking)", response_class=Response,
            responses={200: {"content": {"video/webm": {}, "image/jpeg": {}}}, **responses(416)})
def get_clip(clip_id: ClipId, request: Request, session: SessionDep, controller: ControllerDep, _: Viewer) -> Response:
    clip = _clip(session, clip_id)
    return _blob_response(controller, clip.clip_digest, clip.content_type, request.headers.get("range"))


@router.get("/{clip_id}/keyframe", summary="The JPEG keyframe nearest the trigger", response_class=Response,
            responses={200: {"content": {"video/webm": {}, "image/jpeg": {}}}, **responses(416)})
def get_keyframe(clip_id: ClipId, request: Request, session: SessionDep, controller: ControllerDep, _: Viewer) -> Response:
    clip = _clip(session, clip_id)
    if clip.keyframe_digest is None:
        raise NotFound(f"clip {clip_id!r} has no keyframe")
    return _blob_response(controller, clip.keyframe_digest, "image/jpeg", request.headers.get("range"))


@router.get("/{clip_id}/meta", summary="What is known about a clip: device, event, sizes, digests")
def get_meta(clip_id: ClipId, session: SessionDep, _: Viewer) -> dict[str, Any]:
    return _clip(session, clip_id).model_dump()
