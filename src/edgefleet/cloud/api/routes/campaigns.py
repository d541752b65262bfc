"""/api/v1/campaigns — capture campaigns: start (operator), list and progress (viewer), stop (operator).

A campaign asks the devices ``select`` picks for the frames ``when`` matches (a condition,
``protocols/conditions.py``) or the frames near a reviewed capture (``like_event`` with
``threshold``), up to ``quota`` captures fleet-wide. Errors in ``select`` or ``when`` come
back as 400 with the text and a caret under the problem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ....protocols import Embedding
from ....protocols.campaigns import CAMPAIGN_NAME_PATTERN, MAX_L2_THRESHOLD, Metric
from ...campaigns import store
from ...campaigns.tables import STATES
from ...errors import BadRequest
from ...rollout.errors import DurationSyntaxError
from ...rollout.model import parse_duration
from ..deps import ControllerDep, Operator, SessionDep, Viewer
from ..problems import responses

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

NameParam = Annotated[str, Path(pattern=CAMPAIGN_NAME_PATTERN, max_length=63, description="campaign name")]
State = Literal["running", "completed", "stopped", "ended"]
assert set(STATES) == {"running", "completed", "stopped", "ended"}


class CampaignCreate(BaseModel):
    """``fleet campaign start``'s options as JSON."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "left-turns", "select": "tag:site=depot-7", "when": "context.steering_deg < -20", "quota": 200}]})

    name: str = Field(pattern=CAMPAIGN_NAME_PATTERN, max_length=63)
    select: str = Field(default="all", min_length=1, max_length=1000, description="device selector (as rollouts)")
    when: str | None = Field(default=None, min_length=1, max_length=1000, description="condition on each frame")
    like_event: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                   description="event id of a capture: frames near its embedding")
    like_embedding: Embedding | None = Field(default=None, description="the reference itself (base64 float16/float32 "
                                             "little-endian, dim, output, model_digest), instead of like_event")
    threshold: float | None = Field(default=None, gt=0.0, le=MAX_L2_THRESHOLD,
                                    description="distance for like: cosine in (0, 2], l2 in (0, 1e6]")
    metric: Metric = Field(default="cosine", description="like distance: cosine or l2")
    quota: int = Field(ge=1, le=1_000_000, description="captures wanted fleet-wide")
    per_device: int | None = Field(default=None, ge=1, le=1_000_000, description="at most this many per device")
    until: str | None = Field(default=None, min_length=1, max_length=32, description="ends after (30m, 2h, 7d)")
    pre_seconds: float = Field(default=1.0, ge=0.0, le=30.0)
    post_seconds: float = Field(default=0.5, ge=0.0, le=30.0)
    frames_only: bool = Field(default=False, description="one frame per capture, no clip")
    priority: int = Field(default=25, ge=0, le=100, description="against standing triggers (10..40)")
    max_per_minute: int = Field(default=30, ge=1, le=6000, description="per device")


class LikePublic(BaseModel):
    event_id: str | None
    threshold: float | None
    metric: Metric = "cosine"
    dim: int | None = None
    output: str | None = Field(default=None, description="the embedding's tensor; none: the class scores")
    model_digest: str | None = Field(default=None, description="the control model the embedding came from")


class CampaignPublic(BaseModel):
    name: str
    state: State
    select: str
    when: str | None
    like: LikePublic | None
    quota: int
    per_device: int
    max_per_minute: int
    priority: int
    clip: list[float]
    frames_only: bool
    created_at: datetime
    created_by: str
    ends_at: datetime | None
    finished_at: datetime | None
    finished_by: str | None
    captured: int = Field(description="captures counted so far (each device capped at per_device)")
    devices_notified: int | None = None


class GroupProgress(BaseModel):
    devices: int
    captured: int


class CampaignStatus(CampaignPublic):
    devices: dict[str, int] = Field(description="captures counted per device")
    groups: dict[str, GroupProgress] = Field(description="per hardware profile: devices selected, captures")
    skipped: dict[str, str] = Field(default_factory=dict, description="devices that do not compare the like "
                                    "embedding (another control model), and why")


def _public(session: Any, row: store.Campaign, cls: type[CampaignPublic] = CampaignPublic, **extra: Any) -> Any:
    p = store.progress(session, row)
    body: dict[str, Any] = {**store.as_dict(row), "captured": p.captured, **extra}
    if cls is CampaignStatus:
        body.update(devices=p.devices, groups=p.groups, skipped=store.skipped(session, row))
    return cls.model_validate(body)


@router.post("", response_model=CampaignPublic, status_code=201, responses=responses(404, 409),
             summary="Start a capture campaign on the devices a selector picks")
def start_campaign(session: SessionDep, controller: ControllerDep, principal: Operator,
                   body: CampaignCreate) -> CampaignPublic:
    until_s = None
    if body.until is not None:
        try:
            until_s = parse_duration(body.until, require_unit=True)
        except DurationSyntaxError as exc:
            raise BadRequest(f"until: {exc}") from None
        if until_s <= 0 or until_s > 366 * 86400:
            raise BadRequest("until: between 1s and 366d")
    req = store.StartRequest(
        name=body.name, select=body.select, when=body.when, like_event=body.like_event, threshold=body.threshold,
        metric=body.metric, like_embedding=body.like_embedding,
        quota=body.quota, per_device=body.per_device, until_s=until_s, pre_seconds=body.pre_seconds,
        post_seconds=body.post_seconds, frames_only=body.frames_only, priority=body.priority,
        max_per_minute=body.max_per_minute,
    )
    row = store.start(session, controller, req, by=principal.name)
    return _public(session, row, devices_notified=len(store.selected_devices(session, [row])))  # type: ignore[no-any-return]


@router.get("", response_model=list[CampaignPublic], summary="Campaigns, newest first")
def list_campaigns(session: SessionDep, controller: ControllerDep, _: Viewer,
                   state: Annotated[State | None, Query(description="only campaigns in this state")] = None,
                   ) -> list[CampaignPublic]:
    store.expire(session, controller)
    return [_public(session, r) for r in store.list_all(session, state)]


@router.get("/{name}", response_model=CampaignStatus, responses=responses(404),
            summary="One campaign with its progress per device and per hardware profile")
def get_campaign(session: SessionDep, controller: ControllerDep, _: Viewer, name: NameParam) -> CampaignStatus:
    store.expire(session, controller)
    return _public(session, store.get(session, name), CampaignStatus)  # type: ignore[no-any-return]


@router.post("/{name}/stop", response_model=CampaignPublic, responses=responses(404, 409),
             summary="Stop a running campaign: every device it selects is told at once")
def stop_campaign(session: SessionDep, controller: ControllerDep, principal: Operator,
                  name: NameParam) -> CampaignPublic:
    row = store.stop(session, controller, name, by=principal.name)
    return _public(session, row)  # type: ignore[no-any-return]
