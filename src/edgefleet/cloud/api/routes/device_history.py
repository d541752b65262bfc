"""/api/v1/devices/{id}/history, /tags and /inventory — a device's story, its labels, what it is.

``GET …/history`` pages the device history (cloud/devices/history.py) oldest first: ``since``
(exclusive; pass the previous page's ``next_since``) and ``limit``. ``PATCH …/tags`` sets
and removes tags (validated here; selectors read them on the next reconcile pass, which
this call starts at once). ``GET …/inventory`` is what the device's last verified
``reported`` said it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...devices import fleet, history
from ...devices.protocols_view import inventory_of
from ...errors import BadRequest, Conflict
from ...tables import utcnow
from ..deps import ControllerDep, Operator, SessionDep, Viewer
from ..params import Timestamp
from .models import ErrorBody

router = APIRouter(prefix="/devices", tags=["devices"])

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
TAG_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"
TAG_VALUE = r"^[A-Za-z0-9_.:@/+\-]{1,128}$"
MAX_TAGS = 64
DeviceIdParam = Annotated[str, Path(pattern=DEVICE_ID, max_length=128, description="device id")]
TagKey = Annotated[str, Field(pattern=TAG_KEY, max_length=63)]
TagValue = Annotated[str, Field(pattern=TAG_VALUE, max_length=128)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "bad input", 401: "no or invalid token", 403: "the token's role does not allow it",
            404: "no such device", 409: "the device would have more than 64 tags",
            422: "the request does not match the schema"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


class TagsPatch(BaseModel):
    set: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=MAX_TAGS,
                                        description="tags to add or change (key: letters, digits, . _ - /; "
                                                    "value: letters, digits, . _ : @ / + -)")
    remove: list[TagKey] = Field(default_factory=list, max_length=MAX_TAGS, description="tag keys to remove")


class TagsResult(BaseModel):
    device: str
    tags: dict[str, str]
    changed: dict[str, str | None] = Field(description="key → new value (null: removed)")


class InventoryPublic(BaseModel):
    device: str
    reported_at: datetime | None
    inventory: dict[str, Any] | None = Field(description="agent_version, os, kernel, l4t, jetpack, python, tensorrt, "
                                                         "onnxruntime, providers, disk_*_bytes, memory_*_bytes")


@router.get("/{device_id}/history", response_model=history.HistoryPage, responses=_errors(401, 403, 404, 422),
            summary="A device's history: desired changes, signed metadata, phases, rollbacks, rollouts, tags, audit")
def device_history(device_id: DeviceIdParam, session: SessionDep, _: Viewer,
                   since: Annotated[Timestamp | None, Query(description="only entries after this time (exclusive)")] = None,
                   limit: Annotated[int, Query(ge=1, le=history.MAX_LIMIT)] = 100,
                   kind: Annotated[list[history.HistoryKind] | None, Query(description="only these kinds")] = None,
                   ) -> history.HistoryPage:
    fleet.get_device(session, device_id)
    return history.history(session, device_id, since=since, limit=limit, kinds=list(kind) if kind else None)


@router.patch("/{device_id}/tags", response_model=TagsResult, responses=_errors(400, 401, 403, 404, 409, 422),
              summary="Set and remove a device's tags; rollout selectors see the change at once")
def patch_tags(device_id: DeviceIdParam, body: TagsPatch, session: SessionDep, controller: ControllerDep,
               _: Operator) -> TagsResult:
    both = set(body.set) & set(body.remove)
    if both:
        raise BadRequest(f"tag(s) both set and removed: {', '.join(sorted(both))}")
    device = fleet.get_device(session, device_id)
    tags = dict(device.tags)
    changed: dict[str, str | None] = {}
    for key in body.remove:
        if key in tags:
            del tags[key]
            changed[key] = None
    for key, value in body.set.items():
        if tags.get(key) != value:
            tags[key] = value
            changed[key] = value
    if len(tags) > MAX_TAGS:
        raise Conflict(f"a device has at most {MAX_TAGS} tags")
    if changed:
        device.tags = tags
        session.add(device)
        history.record(session, device_id, "tags", "tags: " + ", ".join(
            f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(changed.items())),
            data={"changed": changed}, at=utcnow())
        session.commit()
        controller.wake()  # the next reconcile pass (selectors) runs now
    return TagsResult(device=device_id, tags=tags, changed=changed)


@router.get("/{device_id}/inventory", response_model=InventoryPublic, responses=_errors(401, 403, 404, 422),
            summary="What the device reported it is: agent, OS/JetPack, runtimes, providers, disk, memory")
def get_inventory(device_id: DeviceIdParam, session: SessionDep, _: Viewer) -> InventoryPublic:
    device = fleet.get_device(session, device_id)
    return InventoryPublic(device=device_id, reported_at=device.reported_at, inventory=inventory_of(device))
