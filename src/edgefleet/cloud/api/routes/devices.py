"""/api/v1/devices — enrol and inspect devices."""

from __future__ import annotations

from fastapi import APIRouter

from ... import fleet
from ...models import DeviceCreate, DeviceCreated, DevicePublic
from ..deps import Admin, SessionDep, Viewer

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post("", response_model=DeviceCreated, summary="Enrol a device; returns its token once")
def enrol(body: DeviceCreate, session: SessionDep, _: Admin) -> DeviceCreated:
    token = fleet.enrol_device(session, body.id, body.hardware_id, body.tags)
    return DeviceCreated(id=body.id, token=token)


@router.get("", response_model=list[DevicePublic], summary="All devices with online state, slots, telemetry")
def list_devices(session: SessionDep, _: Viewer) -> list[DevicePublic]:
    return [fleet.device_public(session, d) for d in fleet.list_devices(session)]


@router.get("/{device_id}", response_model=DevicePublic, summary="One device")
def get_device(device_id: str, session: SessionDep, _: Viewer) -> DevicePublic:
    return fleet.device_public(session, fleet.get_device(session, device_id))
