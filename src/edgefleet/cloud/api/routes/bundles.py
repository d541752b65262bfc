"""/api/v1/bundles/{digest} — bundle bytes for devices (HTTP Range for resumed downloads)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

from ....registry import BlobNotFound, LocalBlobStore
from ..deps import AnyPrincipal, ControllerDep

router = APIRouter(prefix="/bundles", tags=["bundles"])


@router.get("/{digest}", summary="Download a model bundle by its sha256", response_class=Response)
def get_bundle(digest: str, controller: ControllerDep, _: AnyPrincipal) -> Response:
    store = controller.store
    try:
        if not store.exists(digest):
            raise BlobNotFound(digest)
        if isinstance(store, LocalBlobStore):
            return FileResponse(store.path(digest), media_type="application/x-tar")
        return Response(store.get(digest), media_type="application/x-tar")
    except BlobNotFound:
        raise HTTPException(status_code=404, detail=f"no bundle {digest}") from None
