"""FastAPI router serving TUF metadata and targets under ``/tuf/`` (cloud side only).

``tuf_router(resolver, blobs)`` returns an ``APIRouter`` for the controller to include:
metadata comes back as bytes with cache headers from ``TufResolver``; targets stream
from the blob store with HTTP Range support (Starlette's ``FileResponse`` for a local
store, a ranged stream for any other ``BlobStore``). FastAPI is imported lazily: the
device never imports this module.
"""


from collections.abc import Iterator
from typing import Any

from ..blobstore import BlobStore, LocalBlobStore
from .server import TufResolver, parse_range


def tuf_router(resolver: TufResolver, blobs: BlobStore, *, prefix: str = "/tuf") -> Any:
    from fastapi import APIRouter, HTTPException, Request
    from fastapi.responses import FileResponse, Response, StreamingResponse

    router = APIRouter(prefix=prefix, tags=["tuf"])

    @router.get("/{path:path}", include_in_schema=False)
    def tuf_file(path: str, request: Request) -> Response:
        res = resolver.resolve(path)
        if res is None:
            raise HTTPException(status_code=404)
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
