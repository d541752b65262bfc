"""/api/v1/settings/capture — the capture policy every device gets (fleet-wide).

``GET`` (viewer) shows the policy in force and where it comes from; ``PATCH`` (operator)
changes the fields it names (``null`` puts a device-side field back to the device's own
value) and sends the result to every device; ``DELETE`` (operator) returns to the
controller's default (``[capture]`` in controller.toml).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Body
from pydantic import BaseModel

from ....protocols import CapturePolicy
from ... import fleet_settings
from ..deps import ControllerDep, Operator, SessionDep, Viewer

router = APIRouter(prefix="/settings", tags=["settings"])


class CaptureSettings(BaseModel):
    policy: CapturePolicy
    source: Literal["default", "operator"]
    updated_at: datetime | None = None
    updated_by: str | None = None
    devices_notified: int | None = None


def _current(session: Any, controller: Any, notified: int | None = None) -> CaptureSettings:
    row = fleet_settings.stored_capture_policy(session)
    policy = fleet_settings.capture_policy(session, default=controller.capture_policy)
    if row is None:
        return CaptureSettings(policy=policy, source="default", devices_notified=notified)
    return CaptureSettings(policy=policy, source="operator", updated_at=row.updated_at,
                           updated_by=row.updated_by, devices_notified=notified)


@router.get("/capture", response_model=CaptureSettings, summary="The capture policy devices get")
def get_capture(session: SessionDep, controller: ControllerDep, _: Viewer) -> CaptureSettings:
    return _current(session, controller)


@router.patch("/capture", response_model=CaptureSettings,
              summary="Change fields of the capture policy and send it to every device")
def patch_capture(
    session: SessionDep,
    controller: ControllerDep,
    principal: Operator,
    changes: dict[str, Any] = Body(..., examples=[{"max_per_minute": 10, "sample_rate": 0.001, "cooldown_s": None}]),
) -> CaptureSettings:
    current = fleet_settings.capture_policy(session, default=controller.capture_policy)
    policy = fleet_settings.merge_capture_policy(current, changes)
    n = fleet_settings.set_capture_policy(session, controller, policy, by=principal.name)
    return _current(session, controller, notified=n)


@router.delete("/capture", response_model=CaptureSettings,
               summary="Return to the controller's default capture policy (controller.toml)")
def reset_capture(session: SessionDep, controller: ControllerDep, principal: Operator) -> CaptureSettings:
    n = fleet_settings.reset_capture_policy(session, controller, by=principal.name)
    return _current(session, controller, notified=n)
