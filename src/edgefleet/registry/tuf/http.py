"""FastAPI router serving TUF metadata and targets under ``/tuf/`` (cloud side only).

``tuf_router(resolver, blobs)`` returns an ``APIRouter`` for the controller to include:
metadata comes back as bytes with cache headers from ``TufResolver``; targets stream
from the blob store with HTTP Range support (Starlette's ``FileResponse`` for a local
store, a ranged stream for any other ``BlobStore``). FastAPI is imported lazily: the
device never imports this module.

Access control stays with the integrator: ``principal`` is a FastAPI dependency naming
who asks (or refusing with 401), and ``authorize(principal, access)`` raises (e.g. an
``HTTPException(403)``) when that principal may not read ``access`` — a ``TufAccess``
saying what the path is: image metadata, an image target (with its blob digest, known
after resolving) or one device's director metadata (checked before anything is read).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..blobstore import BlobStore, LocalBlobStore
from .server import TufResolver, parse_range

AccessKind = Literal["image-metadata", "image-target", "director", "other"]


@dataclass(frozen=True)
class TufAccess:
    """What a request under ``/tuf/`` reads (``path`` relative to the mount point)."""

    kind: AccessKind
    path: str
    device_id: str | None = None  # director: whose metadata
    digest: str | None = None  # image-target: the blob's sha256


def classify(path: str) -> TufAccess:
    parts = path.lstrip("/").split("/", 2)
    if len(parts) == 3 and parts[0] == "image" and parts[1] == "metadata":
        return TufAccess("image-metadata", path)
    if len(parts) == 3 and parts[0] == "image" and parts[1] == "targets":
        return TufAccess("image-target", path)
    if len(parts) == 3 and parts[0] == "director":
        return TufAccess("director", path, device_id=parts[1])
    return TufAccess("other", path)


def _nobody() -> None:
    return None


def tuf_router(
    resolver: TufResolver,
    blobs: BlobStore,
    *,
    prefix: str = "/tuf",
    principal: Callable[..., Any] | None = None,
    authorize: Callable[[Any, TufAccess], None] | None = None,
) -> Any:
    """Args:
        principal: FastAPI dependency returning who asks (raise 401 inside it to refuse).
        authorize: ``(principal, access)``; raises to refuse that principal that file.
    """
    from fastapi import APIRouter, Depends, HTTPException, Request
    from fastapi.responses import FileResponse, Response, StreamingResponse

    router = APIRouter(prefix=prefix, tags=["tuf"])
    who = Depends(principal or _nobody)

    @router.get("/{path:path}", include_in_schema=False)
    def tuf_file(path: str, request: Request, caller: Any = who) -> Response:
        access = classify(path)
        if authorize is not None and access.kind != "image-target":
            authorize(caller, access)
        res = resolver.resolve(path)
        if res is None:
            raise HTTPException(status_code=404)
        if authorize is not None and access.kind == "image-target":
            authorize(caller, TufAccess("image-target", path, digest=res.blob_digest))
        headers = {"Cache-Control": res.cache_control, "Accept-Ranges": "bytes"}
        if res.data is not None:
            return Response(content=res.data, media_type=res.content_type, headers=headers)
        assert res.blob_digest is not None
        if isinstance(blobs, LocalBlobStore):
            return FileResponse(blobs.path(res.blob_digest), media_type=res.content_type, headers=headers)
        try:
            rng = parse_range(request.headers.get("range"), res.length)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{res.length}"})
        start, end = rng if rng else (0, res.length - 1)
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end}/{res.length}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(
            _stream(blobs, res.blob_digest, start, end), status_code=206 if rng else 200,
            media_type=res.content_type, headers=headers,
        )

    return router


def _stream(blobs: BlobStore, digest: str, start: int, end: int) -> Iterator[bytes]:
    with blobs.open(digest) as f:
        f.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = f.read(min(1024 * 1024, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
