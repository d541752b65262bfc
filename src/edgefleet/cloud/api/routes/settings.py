"""/api/v1/settings/capture — the capture policy every device gets (fleet-wide).

``GET`` (viewer) shows the policy in force and where it comes from; ``PATCH`` (operator)
changes the fields it names (``null`` puts a device-side field back to the device's own
value) and sends the result to every device; ``DELETE`` (operator) returns to the
controller's default (``[capture]`` in controller.toml).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ....protocols import CapturePolicy
from ...devices import fleet_settings
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


def _json_int(value: Any) -> Any:
    """JSON Schema's integer: 3 or 3.0, never true or "3" (pydantic's lax int takes both)."""
    if isinstance(value, bool | str):
        raise ValueError("expected an integer")
    return value


Bool = Annotated[bool, Field(strict=True)]


def _no_defaults(schema: dict[str, Any]) -> None:
    """A field left out is left alone: no default to show."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["examples"] = [{"max_per_minute": 10, "sample_rate": 0.001, "cooldown_s": None}]


class CapturePatch(BaseModel):
    """The fields to change (CapturePolicy's, same bounds); ``null`` for ``cooldown_s``,
    ``dedupe_threshold`` or ``near_band`` gives the device its own value back."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: _no_defaults(schema))

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        unknown = sorted(set(data) - set(cls.model_fields)) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(f"unknown capture setting(s) {', '.join(map(str, unknown))[:300]}; "
                             f"known: {', '.join(cls.model_fields)}")
        return data

    low_confidence: Bool = None  # type: ignore[assignment]
    disagreement: Bool = None  # type: ignore[assignment]
    sample_rate: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = None  # type: ignore[assignment]
    max_per_minute: Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_json_int)] = None  # type: ignore[assignment]
    max_per_hour: Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_json_int)] = None  # type: ignore[assignment]
    max_per_day: Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(_json_int)] = None  # type: ignore[assignment]
    max_bytes_per_day: Annotated[int, Field(ge=0, le=2**53), BeforeValidator(_json_int)] = None  # type: ignore[assignment]
    pre_seconds: Annotated[float, Field(strict=True, ge=0, le=3600)] = None  # type: ignore[assignment]
    post_seconds: Annotated[float, Field(strict=True, ge=0, le=3600)] = None  # type: ignore[assignment]
    cooldown_s: Annotated[float, Field(strict=True, ge=0, le=30 * 86400)] | None = None
    dedupe_threshold: Annotated[float, Field(strict=True, ge=0, le=1e9)] | None = None
    near_band: Annotated[float, Field(strict=True, ge=0, le=1)] | None = None


@router.get("/capture", response_model=CaptureSettings, summary="The capture policy devices get")
def get_capture(session: SessionDep, controller: ControllerDep, _: Viewer) -> CaptureSettings:
    return _current(session, controller)


@router.patch("/capture", response_model=CaptureSettings,
              summary="Change fields of the capture policy and send it to every device")
def patch_capture(
    session: SessionDep,
    controller: ControllerDep,
    principal: Operator,
    changes: CapturePatch,
) -> CaptureSettings:
    current = fleet_settings.capture_policy(session, default=controller.capture_policy)
    policy = fleet_settings.merge_capture_policy(current, changes.model_dump(exclude_unset=True))
    n = fleet_settings.set_capture_policy(session, controller, policy, by=principal.name)
    return _current(session, controller, notified=n)


@router.delete("/capture", response_model=CaptureSettings,
               summary="Return to the controller's default capture policy (controller.toml)")
def reset_capture(session: SessionDep, controller: ControllerDep, principal: Operator) -> CaptureSettings:
    n = fleet_settings.reset_capture_policy(session, controller, by=principal.name)
    return _current(session, controller, notified=n)
