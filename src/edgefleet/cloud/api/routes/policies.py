"""/api/v1/policies — capture, network and maintenance-window policies scoped to a selector.

``GET /policies`` (viewer) lists the scopes and the fleet-wide windows; ``PUT
/policies/{name}`` (operator) creates or replaces one scope; ``DELETE /policies/{name}``
(operator) removes it; ``PUT /settings/windows`` (operator) sets the fleet-wide windows;
``GET /devices/{id}/policy`` (viewer) shows what one device gets and which scope each field
came from. Every change bumps the desired generation of exactly the devices the scope
matched before or matches now, and sends their settings signed by the director. Bad input
(an unknown time zone, ``25:00``, a duration without unit, an unknown day) is a 400 naming
the field; nothing is changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ....protocols import CapturePolicy
from ....protocols.messages import InterfaceName, NetworkPolicy
from ....protocols.windows import MaintenanceWindow, format_duration
from ... import policy
from ...devices import fleet
from ...policy import store, validate
from ...rollout import service as rollout_service
from ...rollout.tables import Rollout
from ..deps import ControllerDep, Operator, SessionDep, Viewer
from .device_history import DeviceIdParam
from .settings import CapturePatch, _json_int

router = APIRouter(tags=["policies"])

PolicyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="policy name")]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]


class WindowBody(BaseModel):
    """One window: ``days`` (mon … sun, or ranges such as ``mon-fri``, or ``daily``), local
    ``start`` ``HH:MM``, ``duration`` with a unit (``2h``, ``90m``), ``timezone`` (an IANA
    name, or ``device`` for each device's own zone)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"days": ["mon-fri"], "start": "02:00", "duration": "2h", "timezone": "Europe/Berlin"}]})

    days: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(min_length=1, max_length=7)
    start: Annotated[str, Field(min_length=1, max_length=8)]
    duration: Annotated[str, Field(min_length=1, max_length=16)]
    timezone: ShortText = "device"


class NetworkPatch(BaseModel):
    """The network fields this scope sets (the others come from less specific scopes)."""

    model_config = ConfigDict(extra="forbid")

    download: Literal["any", "unmetered", "interfaces"] = None  # type: ignore[assignment]
    interfaces: list[InterfaceName] = Field(default=None, max_length=32)  # type: ignore[assignment, arg-type]
    max_download_bps: Annotated[int, Field(ge=1024, le=2**53), BeforeValidator(_json_int)] | None = None
    max_upload_bps: Annotated[int, Field(ge=1024, le=2**53), BeforeValidator(_json_int)] | None = None


class PolicyBody(BaseModel):
    """A scope: the devices it applies to (``select``, the selector language), its
    ``priority`` (higher wins, then more selector terms, then the name), and what it sets."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"select": "hw:jetson-orin-nano", "priority": 0, "capture": {"sample_rate": 0.05},
         "network": {"download": "unmetered"},
         "windows": [{"days": ["sat", "sun"], "start": "01:00", "duration": "3h", "timezone": "device"}]}]})

    select: Annotated[str, Field(min_length=1, max_length=1000)]
    priority: Annotated[int, Field(ge=-1000, le=1000), BeforeValidator(_json_int)] = 0
    capture: CapturePatch | None = None
    network: NetworkPatch | None = None
    windows: list[WindowBody] | None = Field(default=None, max_length=32)


class WindowPublic(BaseModel):
    days: list[str]
    start: str
    duration: str
    duration_s: int
    timezone: str


def _window(w: MaintenanceWindow) -> WindowPublic:
    return WindowPublic(days=list(w.days), start=w.start, duration=format_duration(w.duration_s),
                        duration_s=w.duration_s, timezone=w.timezone)


class PolicyPublic(BaseModel):
    name: str
    select: str
    priority: int
    capture: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    windows: list[WindowPublic] | None = None
    rollout_id: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    devices_notified: int | None = None


class PolicyList(BaseModel):
    policies: list[PolicyPublic]
    fleet_windows: list[WindowPublic]


class FleetWindowsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    windows: list[WindowBody] = Field(max_length=32)


class FleetWindows(BaseModel):
    windows: list[WindowPublic]
    devices_notified: int | None = None


class Removed(BaseModel):
    name: str
    devices_notified: int


class DevicePolicy(BaseModel):
    """What one device gets, and which scope each field came from (``fleet``: fleet-wide)."""

    device_id: str
    capture: CapturePolicy
    network: NetworkPolicy
    windows: list[WindowPublic]
    sources: dict[str, str]
    scopes: list[str]


def _public(row: store.ScopedPolicy, notified: int | None = None) -> PolicyPublic:
    windows = [_window(MaintenanceWindow.model_validate(w)) for w in row.windows] if row.windows is not None else None
    return PolicyPublic(name=row.name, select=row.selector, priority=row.priority, capture=row.capture,
                        network=row.network, windows=windows, rollout_id=row.rollout_id, updated_at=row.updated_at,
                        updated_by=row.updated_by, devices_notified=notified)


def checked_row(name: str, body: PolicyBody) -> store.ScopedPolicy:
    """The row a body describes, every field checked (400 naming the field)."""
    validate.check_name(name)
    selector = validate.check_selector(body.select)
    windows = None if body.windows is None else validate.check_windows([w.model_dump() for w in body.windows])
    network = None if body.network is None else validate.check_network(body.network.model_dump(exclude_unset=True))
    capture = None if body.capture is None else validate.check_capture(body.capture.model_dump(exclude_unset=True))
    return store.ScopedPolicy(
        name=name, selector=str(selector), priority=body.priority, capture=capture or None, network=network or None,
        windows=None if windows is None else [w.model_dump(mode="json") for w in windows])


@router.get("/policies", response_model=PolicyList, summary="The scoped policies and the fleet-wide windows")
def list_policies(session: SessionDep, _: Viewer) -> PolicyList:
    return PolicyList(policies=[_public(r) for r in store.list_rows(session)],
                      fleet_windows=[_window(w) for w in store.fleet_windows(session)])


@router.get("/policies/{name}", response_model=PolicyPublic, summary="One scoped policy")
def get_policy(name: PolicyName, session: SessionDep, _: Viewer) -> PolicyPublic:
    return _public(store.get_row(session, name))


@router.put("/policies/{name}", response_model=PolicyPublic,
            summary="Create or replace a scoped policy and send the result, signed, to the devices it matches")
def put_policy(name: PolicyName, body: PolicyBody, session: SessionDep, controller: ControllerDep,
               principal: Operator) -> PolicyPublic:
    row = checked_row(name, body)
    n = store.put(session, controller, row, by=principal.name)
    return _public(store.get_row(session, name), notified=n)


@router.delete("/policies/{name}", response_model=Removed, summary="Remove a scoped policy")
def delete_policy(name: PolicyName, session: SessionDep, controller: ControllerDep, principal: Operator) -> Removed:
    return Removed(name=name, devices_notified=store.remove(session, controller, name, by=principal.name))


@router.get("/settings/windows", response_model=FleetWindows, summary="The fleet-wide maintenance windows")
def get_fleet_windows(session: SessionDep, _: Viewer) -> FleetWindows:
    return FleetWindows(windows=[_window(w) for w in store.fleet_windows(session)])


@router.put("/settings/windows", response_model=FleetWindows,
            summary="Set the fleet-wide maintenance windows (empty: switch any time) and send them to every device")
def put_fleet_windows(body: FleetWindowsBody, session: SessionDep, controller: ControllerDep,
                      principal: Operator) -> FleetWindows:
    windows = validate.check_windows([w.model_dump() for w in body.windows])
    n = store.set_fleet_windows(session, controller, windows, by=principal.name)
    return FleetWindows(windows=[_window(w) for w in windows], devices_notified=n)


@router.get("/devices/{device_id}/policy", response_model=DevicePolicy,
            summary="What one device gets from the scoped policies, and which scope gave each field")
def device_policy(device_id: DeviceIdParam, session: SessionDep, controller: ControllerDep, _: Viewer) -> DevicePolicy:
    device = fleet.get_device(session, device_id)
    got = policy.resolve_for(session, device, controller.capture_policy)
    return DevicePolicy(device_id=device.id, capture=got.capture, network=got.network,
                        windows=[_window(w) for w in got.maintenance.windows], sources=got.sources,
                        scopes=list(got.scopes))


class RolloutStart(rollout_service.RolloutCreate):
    """``POST /rollouts``, with the rollout's own maintenance windows and network fields:
    they apply to its devices while it runs (above every scoped policy), then end."""

    windows: list[WindowBody] | None = Field(default=None, max_length=32, description=(
        "maintenance windows of this rollout's devices while it runs (the device switches only inside one)"))
    network: NetworkPatch | None = Field(default=None, description="network fields for its devices while it runs")


def start_rollout(session: SessionDep, body: RolloutStart, now: float, *, actor: str) -> Rollout:
    """Start a rollout; with windows/network, its own policy is stored first (checked: a 400
    names the field, and no rollout starts), so no device is sent the model without it."""
    plain = rollout_service.RolloutCreate.model_validate(body.model_dump(exclude={"windows", "network"}))
    if body.windows is None and body.network is None:
        return rollout_service.start_rollout(session, plain, now, actor=actor)
    windows = None if body.windows is None else validate.check_windows([w.model_dump() for w in body.windows])
    network = None if body.network is None else validate.check_network(body.network.model_dump(exclude_unset=True))
    rid = rollout_service.new_rollout_id()
    store.put_rollout_policy(session, rid, windows=windows, network=network, by=actor)
    try:
        return rollout_service.start_rollout(session, plain, now, actor=actor, rollout_id=rid)
    except BaseException:
        session.rollback()
        store.drop_rollout_policy(session, rid)
        raise
