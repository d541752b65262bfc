"""/api/v1/devices — enrol, inspect, revoke devices and rotate their credentials.

Admins enrol (``POST``), revoke (``DELETE``) and ask for a rotation; viewers read. The
two ``/devices/self/credentials`` routes are the device's side of a rotation
(cloud/devices/identity.py): it asks with its current token and confirms with the new one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import StringConstraints

from ...devices import cursor as cursors
from ...devices import fleet, identity, views
from ...devices.views import DeviceCounts, DevicePage, DeviceState
from ...errors import BadRequest, Conflict
from ...tables import Device, DeviceCreate, DeviceCreated, DevicePublic
from ..deps import (
    PENDING_DEVICE,
    Admin,
    ControllerDep,
    Credentials,
    SessionDep,
    Viewer,
    authenticate_request,
    device_id_of,
)
from ..params import DeviceIdPath
from ..problems import responses

router = APIRouter(prefix="/devices", tags=["devices"])
DeviceId = Annotated[str, Depends(device_id_of)]
_TAG = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}=[A-Za-z0-9_.:@/+\-]{1,128}$"  # KEY=VALUE as tables.DeviceCreate allows
_SLOT_MODEL = r"^(control|shadow)=[A-Za-z0-9][A-Za-z0-9_.-]{0,127}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def device_filter(
    tag: Annotated[list[Annotated[str, StringConstraints(pattern=_TAG, max_length=192)]], Query(
        max_length=16, description="KEY=VALUE; repeatable, all must match")] = [],  # noqa: B006 (FastAPI copies it)
    profile: Annotated[str | None, Query(min_length=1, max_length=128, description="hardware profile id")] = None,
    state: Annotated[DeviceState | None, Query(description="revoked, else online, else offline (seen before), "
                                                           "else never_seen")] = None,
    stale: Annotated[bool | None, Query(description="true: only stale devices (signed state lags); "
                                                    "false: only fresh ones")] = None,
    model: Annotated[list[Annotated[str, StringConstraints(pattern=_SLOT_MODEL, max_length=200)]], Query(
        max_length=2, description="SLOT=NAME:VERSION assigned by the controller, e.g. control=digits:2.0")] = [],  # noqa: B006
    installed: Annotated[list[Annotated[str, StringConstraints(pattern=_SLOT_MODEL, max_length=200)]], Query(
        max_length=2, description="SLOT=NAME:VERSION the device's verified report says is installed")] = [],  # noqa: B006
) -> views.DeviceFilter:
    """The filters of the device views, validated at the schema."""
    return views.DeviceFilter(
        tags=tuple(t for t in map(views.parse_tag, tag) if t), profile=profile, state=state, stale=stale,
        models=tuple(m for m in map(views.parse_slot_model, model) if m),
        installed=tuple(m for m in map(views.parse_slot_model, installed) if m))


Filters = Annotated[views.DeviceFilter, Depends(device_filter)]


def _created(creds: identity.Credentials) -> DeviceCreated:
    return DeviceCreated(
        id=creds.device_id, token=creds.token, mqtt_username=creds.mqtt_username,
        mqtt_password=creds.mqtt_password, credentials_epoch=creds.credentials_epoch,
        cert_pem=creds.cert_pem, key_pem=creds.key_pem,
    )


def _certificate(controller: ControllerDep, device_id: str) -> tuple[str, str, str]:
    if controller.pki is None:
        raise Conflict("this controller has no fleet CA (fleet cloud init creates one); enrol without a certificate")
    issued = controller.issue_device_certificate(device_id)
    return issued.cert_pem, issued.key_pem, str(issued.serial)


@router.post("", response_model=DeviceCreated, summary="Enrol a device; returns its credentials once",
             responses=responses(409, _409="certificate asked for but the controller has no fleet CA"))
def enrol(body: DeviceCreate, session: SessionDep, controller: ControllerDep, _: Admin) -> DeviceCreated:
    if not fleet.is_valid_device_id(body.id):
        raise BadRequest(f"invalid device id {body.id!r}: use letters, digits, '.', '_' or '-'")
    cert = _certificate(controller, body.id) if body.certificate else None
    creds = fleet.enrol(session, body.id, body.hardware_id, body.tags, cert=cert,
                        report_public_key=body.report_public_key)
    controller.sync_broker_auth()
    return _created(creds)


@router.get("", response_model=DevicePage, responses=responses(400, _400="the cursor is not one this API issued "
                                                                         "for these filters: E_BAD_CURSOR"),
            summary="One page of devices in id order (online state, slots, telemetry); follow next_cursor")
def list_devices(session: SessionDep, _: Viewer, filters: Filters,
                 limit: Annotated[int, Query(ge=1, le=views.MAX_LIMIT, description="devices per page")] = views.DEFAULT_LIMIT,
                 cursor: Annotated[str | None, Query(max_length=cursors.MAX_LENGTH,
                                                     description="next_cursor or prev_cursor of the previous page, "
                                                                 "with the same filters")] = None,
                 ) -> DevicePage:
    return views.page(session, filters, limit=limit, cursor=cursor)


@router.get("/counts", response_model=DeviceCounts,
            summary="How many devices match the filters, by state, hardware profile and model version per slot")
def device_counts(session: SessionDep, _: Viewer, filters: Filters) -> DeviceCounts:
    return views.counts(session, filters)


@router.post("/self/credentials", response_model=DeviceCreated,
             summary="Device: new credentials for a requested rotation (pending until confirmed)")
def start_rotation(device_id: DeviceId, session: SessionDep) -> DeviceCreated:
    device = fleet.get_device(session, device_id)
    creds = identity.start_rotation(device)
    session.add(device)
    session.commit()
    return _created(creds)


@router.post("/self/credentials/confirm", response_model=DevicePublic,
             summary="Device: prove it holds the new token; the new credentials replace the old")
def confirm_rotation(request: Request, session: SessionDep, controller: ControllerDep, creds: Credentials) -> DevicePublic:
    principal = authenticate_request(request, session, creds)
    if principal.kind != PENDING_DEVICE:
        raise HTTPException(status_code=403, detail="confirm with the new token from /devices/self/credentials")
    device = fleet.get_device(session, principal.name)
    identity.confirm_rotation(device)
    session.add(device)
    session.commit()
    controller.sync_broker_auth()
    return fleet.device_public(session, device)


@router.get("/{device_id}", response_model=DevicePublic, summary="One device")
def get_device(device_id: DeviceIdPath, session: SessionDep, _: Viewer) -> DevicePublic:
    return fleet.device_public(session, fleet.get_device(session, device_id))


@router.delete("/{device_id}", response_model=DevicePublic,
               summary="Revoke a device: token, broker account, certificate and director metadata withdrawn")
def revoke(device_id: DeviceIdPath, session: SessionDep, controller: ControllerDep, _: Admin) -> DevicePublic:
    device = identity.revoke(session, device_id)
    session.commit()
    controller.on_device_revoked(session, device)
    return fleet.device_public(session, device)


@router.post("/{device_id}/rotate-credentials", response_model=DeviceCreated | DevicePublic,
             summary="Rotate a device's credentials: the agent fetches new ones (or, with now=true, they are issued here)")
def rotate(device_id: DeviceIdPath, session: SessionDep, controller: ControllerDep, _: Admin,
           now: Annotated[bool, Query(description="issue new credentials at once and invalidate the old "
                                                  "(re-provision the device with them)")] = False,
           ) -> DeviceCreated | DevicePublic:
    device: Device = fleet.get_device(session, device_id)
    if now:
        cert = _certificate(controller, device_id) if device.cert_serial and controller.pki is not None else None
        old_serial = device.cert_serial
        creds = identity.issue(device, cert=cert)
        session.add(device)
        session.commit()
        if old_serial and cert is not None:
            controller.revoke_certificate(old_serial)
        controller.sync_broker_auth()
        return _created(creds)
    identity.request_rotation(session, device_id)
    session.commit()
    controller.publish_device(session, device)
    return fleet.device_public(session, device)
