"""/api/v1/bundles/{digest} — bundle bytes for devices, with HTTP Range for resumed downloads.

A device token reads only the bundles it is meant to have (``api/access.py``); API tokens
(viewer and up) read any bundle.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import FileResponse, Response

from ....registry import BlobNotFound, LocalBlobStore
from ....registry.stores import read_range
from ..access import check_read_digest
from ..deps import AnyPrincipal, ControllerDep, SessionDep
from ..problems import error_response, responses

router = APIRouter(prefix="/bundles", tags=["bundles"])
_RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})$")
Digest = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="sha256 of the bundle (64 lowercase hex)")]


@router.get("/{digest}", summary="Download a model bundle by its sha256 (supports Range)", response_class=Response,
            responses={200: {"content": {"application/x-tar": {}}}, **responses(416)})
def get_bundle(digest: Digest, request: Request, controller: ControllerDep, session: SessionDep,
               principal: AnyPrincipal) -> Response:
    check_read_digest(session, controller, principal, digest)
    store = controller.store
    try:
        if not store.exists(digest):
            raise BlobNotFound(digest)
        if isinstance(store, LocalBlobStore):
            return FileResponse(store.path(digest), media_type="application/x-tar")
        size = store.size(digest)
        match = _RANGE.match(request.headers.get("range", ""))
        if match is None:
            return Response(store.get(digest), media_type="application/x-tar", headers={"Accept-Ranges": "bytes"})
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size or end < start:
            return error_response(416, f"the range is outside the {size} bytes", headers={"Content-Range": f"bytes */{size}"})
        body = read_range(store, digest, start, end - start + 1)
        return Response(
            body, status_code=206, media_type="application/x-tar",
            headers={"Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes"},
        )
    except BlobNotFound:
        raise HTTPException(status_code=404, detail=f"no bundle {digest}") from None
