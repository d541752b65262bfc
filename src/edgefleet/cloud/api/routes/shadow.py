"""/api/v1/shadow/pairs and /api/v1/events — shadow agreement per (control, candidate), captures.

Reads only (viewer role). Figures come from ``cloud.shadow_index``: per-pair rows folded
from telemetry, event rows from MQTT ``events`` and uploads (one row per capture).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ... import shadow_index
from ...errors import NotFound
from ..deps import SessionDep, Viewer
from ..params import ModelRef, ModelRefPath, Offset, PairRef, Timestamp

router = APIRouter(tags=["shadow"])


@router.get("/shadow/pairs", summary="Every (control, candidate) pair: agreement, frames, disagreements, clips")
def list_pairs(session: SessionDep, _: Viewer) -> list[dict[str, Any]]:
    return [p.to_dict() for p in shadow_index.list_pairs(session)]


@router.get(
    "/shadow/pairs/{control}/{candidate}",
    summary="One pair (each NAME:VERSION): confusion matrix, per-device and per-class figures",
)
def get_pair(
    control: ModelRefPath, candidate: ModelRefPath, session: SessionDep, _: Viewer,
    device: Annotated[list[str] | None, Query(description="only these devices (repeatable)")] = None,
) -> dict[str, Any]:
    detail = shadow_index.pair_detail(session, control, candidate, device)
    if detail is None:
        raise NotFound(f"no shadow statistics for {control} vs {candidate}")
    return detail


@router.get("/events", summary="Capture events for review, newest first")
def list_events(
    session: SessionDep, _: Viewer,
    pair: Annotated[PairRef | None, Query(description="CONTROL,CANDIDATE (each NAME:VERSION)")] = None,
    control: Annotated[ModelRef | None, Query(description="control model NAME:VERSION")] = None,
    candidate: Annotated[ModelRef | None, Query(description="candidate model NAME:VERSION")] = None,
    class_: Annotated[str | None, Query(alias="class", max_length=128, description="control or candidate label")] = None,
    device: Annotated[str | None, Query(max_length=128)] = None,
    trigger: Annotated[str | None, Query(max_length=32, description="disagreement, low_confidence, near_threshold, sample")] = None,
    since: Annotated[Timestamp | None, Query(description="captures at or after (ISO 8601)")] = None,
    until: Annotated[Timestamp | None, Query(description="captures before (ISO 8601)")] = None,
    has_clip: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[dict[str, Any]]:
    if pair:  # filters combine: a pair that disagrees with control/candidate matches nothing
        pair_control, pair_candidate = shadow_index.parse_pair(pair)
        if (control or pair_control) != pair_control or (candidate or pair_candidate) != pair_candidate:
            return []
        control, candidate = pair_control, pair_candidate
    rows = shadow_index.list_events(
        session, control=control, candidate=candidate, label=class_, device_id=device, trigger=trigger,
        since=since, until=until, has_clip=has_clip, limit=limit, offset=offset,
    )
    return [shadow_index.event_public(e) for e in rows]
