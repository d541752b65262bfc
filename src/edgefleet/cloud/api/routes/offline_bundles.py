"""/api/v1/devices/{device_id}/offline-bundle — what one device needs to update without a link.

The answer is an uncompressed tar (``registry/tuf/offline.py``): the device's director
metadata chain, the image repository's chain and the bundles the director assigns, as the
device would fetch them under ``/tuf/``, plus a ``manifest.json``. It is written to a
temporary file first, so a missing blob is a clear error and never a truncated archive.
Operators and admins only; every export is appended to the audit log
(``device.offline_bundle``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from ....registry import BlobNotFound
from ....registry.tuf.errors import TufError
from ....registry.tuf.offline import export_files, write_tar
from ... import audit
from ...devices import fleet
from ..deps import ControllerDep, Operator, SessionDep
from ..params import DeviceIdPath
from ..problems import responses

router = APIRouter(prefix="/devices", tags=["devices"])
CHUNK = 1024 * 1024


def _stream(f: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    finally:
        f.close()


@router.get(
    "/{device_id}/offline-bundle",
    summary="Offline bundle of one device (director + image metadata and assigned bundles, as a tar)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}},
                     "description": "tar: manifest.json, director/, image/metadata/, image/targets/"},
               **responses(404, 409, _409="the device is revoked, or has no signed director metadata yet")},
)
def get_offline_bundle(device_id: DeviceIdPath, session: SessionDep, controller: ControllerDep,
                       principal: Operator) -> StreamingResponse:
    device = fleet.get_device(session, device_id)  # 404 for an unknown device
    if getattr(device, "revoked_at", None) is not None:
        raise HTTPException(status_code=409, detail=f"device {device_id!r} is revoked")
    try:
        files, manifest = export_files(controller.trust.resolver(), device_id)
    except TufError as exc:
        raise HTTPException(status_code=409, detail=f"no offline bundle for {device_id!r}: {exc}") from None
    out = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the stream that sends it)
    try:
        manifest = write_tar(files, manifest, controller.store.open, out)
    except BlobNotFound as exc:
        out.close()
        raise HTTPException(status_code=409, detail=f"a bundle of {device_id!r} is missing from the store: {exc}") from None
    except BaseException:
        out.close()
        raise
    size = out.tell()
    out.seek(0)
    audit.for_controller(controller).append(
        session, actor=principal.name, role=principal.role, action="device.offline_bundle", target=device_id,
        summary={"director_version": manifest.get("director_version"), "bytes": size,
                 "targets": [f"{t.get('model')}:{t.get('version')}" for t in manifest.get("targets", [])]})
    session.commit()
    filename = f"{device_id}-offline-{manifest.get('director_version')}.tar"
    return StreamingResponse(_stream(out), media_type="application/x-tar",
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": f'attachment; filename="{filename}"'})
