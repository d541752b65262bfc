"""Report keys and hardware approval: ``/api/v1/devices/self/report-key`` (the device itself),
``/api/v1/devices/{id}/report-key`` and ``/api/v1/devices/{id}/approve-hardware`` (admin).

See ``cloud/devices/report_verify.py`` for what a registered key means for the device's reports.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ...devices import fleet, ingest, report_verify
from ...tables import DevicePublic
from ..deps import Admin, ControllerDep, SessionDep, device_id_of
from ..params import DeviceIdPath
from ..problems import responses

router = APIRouter(prefix="/devices", tags=["devices"])
DeviceId = Annotated[str, Depends(device_id_of)]


class ReportKeyBody(BaseModel):
    public_key: str = Field(min_length=1, max_length=512, description="Ed25519 public key: base64 of 32 bytes, or PEM")
    rotation_signature: str | None = Field(default=None, max_length=128,
                                           description="to replace a registered key: the current key's signature")


class ReportKeyState(BaseModel):
    device_id: str
    key_id: str | None
    changed: bool = False


@router.put("/self/report-key", response_model=ReportKeyState,
            summary="A device registers its report key (first time), or rotates it (signed by the current key)")
def register_report_key(body: ReportKeyBody, session: SessionDep, device_id: DeviceId) -> ReportKeyState:
    key_id, changed = report_verify.register_key(session, device_id, body.public_key, body.rotation_signature)
    return ReportKeyState(device_id=device_id, key_id=key_id, changed=changed)


@router.delete("/{device_id}/report-key", response_model=ReportKeyState,
               summary="Forget a device's report key; its next registration is taken as a first one")
def reset_report_key(device_id: DeviceIdPath, session: SessionDep, _: Admin) -> ReportKeyState:
    report_verify.reset_key(session, device_id)
    return ReportKeyState(device_id=device_id, key_id=None, changed=True)


@router.post("/{device_id}/approve-hardware", response_model=DevicePublic,
             responses=responses(409, _409="the device has reported no other hardware id"),
             summary="Make the hardware id the device reported its enrolled one (the director re-signs)")
def approve_hardware(device_id: DeviceIdPath, session: SessionDep, controller: ControllerDep, _: Admin) -> DevicePublic:
    device = ingest.approve_hardware(session, device_id)
    controller.publish_device(session, device)
    return fleet.device_public(session, device)
