"""/api/v1/rollouts — staged rollouts: start (now or scheduled), list, status,
pause/resume/abort/rollback, and for a scheduled one reschedule/cancel.

Operators (``operator`` role) start rollouts and send commands; viewers read. Every
command is idempotent (repeating it changes nothing); one the rollout's state does not
allow is 409 with the reason, bad input is 400 with a pointer to the problem.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlmodel import Session

from ... import lifecycle
from ...devices import cursor as cursors
from ...rollout import members as rollout_members
from ...rollout import service
from ...rollout.service import RolloutCommand, RolloutReschedule, RolloutSummary
from ...rollout.store import spec_of, state_of
from ...tables import ModelVersion
from ..deps import ControllerDep, Operator, SessionDep, Viewer
from ..problems import responses
from .models import READ_ERRORS, WRITE_ERRORS
from .policies import RolloutStart
from .policies import start_rollout as start_with_policy

router = APIRouter(prefix="/rollouts", tags=["rollouts"])
RolloutId = Annotated[str, Path(min_length=1, max_length=64, description="the rollout's id (ro_…)")]
State = Literal["scheduled", "pending", "running", "soaking", "paused", "breached", "rolling_back", "rolled_back",
                "completed", "aborted", "superseded"]  # rollout.model.RolloutPhase


@router.post("", status_code=201, responses=WRITE_ERRORS,
             summary="Start a rollout (supersedes live rollouts of the same slot and devices; "
                     "409 E_MODEL_BLOCKED for a blocked version)")
def start(body: RolloutStart, session: SessionDep, controller: ControllerDep, who: Operator) -> dict[str, Any]:
    row = start_with_policy(session, body, time.time(), actor=who.name)  # its own windows/network (cloud/policy)
    controller.wake()
    out = service.status(session, row.id, time.time(), devices=False)
    mv = session.get(ModelVersion, row.model_version_id)
    out["warnings"] = lifecycle.check_deployable(mv) if mv is not None else []  # deprecated: said
    return out


NEXT_CURSOR_HEADER = "X-Next-Cursor"


@router.get("", response_model=list[RolloutSummary],
            responses={200: {"headers": {NEXT_CURSOR_HEADER: {
                "description": "the cursor of the next (older) page; absent on the last page",
                "schema": {"type": "string"}}}},
                **responses(400, _400="the cursor is not one this API issued for this filter: E_BAD_CURSOR")},
            summary="Rollouts, newest first, a page at a time (the next page's cursor in X-Next-Cursor)")
def list_rollouts(session: SessionDep, _: Viewer, response: Response, state: State | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  cursor: Annotated[str | None, Query(max_length=cursors.MAX_LENGTH,
                                                      description="X-Next-Cursor of the previous page, with the "
                                                                  "same state filter")] = None,
                  ) -> list[RolloutSummary]:
    rows, nxt = service.list_page(session, state=state, limit=limit, cursor=cursor)
    if nxt:
        response.headers[NEXT_CURSOR_HEADER] = nxt
    return [summary for summary, _ in rows]


@router.get("/{rollout_id}", summary="Status: waves, counts by device status, gate figures, progress",
            responses=READ_ERRORS)
def get_status(rollout_id: RolloutId, session: SessionDep, _: Viewer, devices: bool = True,
               events: Annotated[int, Query(ge=0, le=1000, description="the last N events")] = 30) -> dict[str, Any]:
    return service.status(session, rollout_id, time.time(), devices=devices, events=events)


class RolloutMemberPublic(BaseModel):
    """One member device of a rollout: its wave, status in the rollout and figures."""

    device: str
    hardware_id: str
    wave: int
    status: str
    online: bool
    installed: str | None = None
    phase: str | None = None
    error_code: str | None = None
    previous: str | None = None
    frames: int = 0
    nan_outputs: int = 0
    errors: int = 0
    p99_ms: float | None = None
    baseline_p99_ms: float | None = None


class RolloutDevicePage(BaseModel):
    """One page of a rollout's member devices in id order; follow ``next_cursor``."""

    items: list[RolloutMemberPublic]
    next_cursor: str | None = None
    prev_cursor: str | None = None
    limit: int
    total: int = Field(description="members matching the filters")


def member_page(members: list[dict[str, Any]], rollout_id: str, *, limit: int, cursor: str | None,
                status: str | None = None, wave: int | None = None) -> RolloutDevicePage:
    """Page member rows held in memory by device id (cursors bound to the filters, the same
    scopes as ``member_page_sql``, which the routes use)."""
    chosen = sorted((m for m in members if (status is None or m["status"] == status)
                     and (wave is None or m["wave"] == wave)), key=lambda m: m["device"])
    scope = rollout_members.scope_of(rollout_id, status, wave)
    part, nxt, prev = cursors.page_sorted([m["device"] for m in chosen], limit=limit, cursor=cursor, scope=scope)
    return RolloutDevicePage(items=[RolloutMemberPublic(**m) for m in chosen[part]], next_cursor=nxt,
                             prev_cursor=prev, limit=limit, total=len(chosen))


def member_page_sql(session: Session, rollout_id: str, now: float, *, limit: int, cursor: str | None,
                    status: str | None = None, wave: int | None = None) -> RolloutDevicePage:
    """One page of the rollout's members read by keyset from the database (``rollout.members``).

    Raises:
        NotFound: no such rollout. BadCursor: the cursor is not one issued for these filters.
    """
    row = service.get_row(session, rollout_id)
    page = rollout_members.page_members(session, row, spec_of(row), state_of(row), now, limit=limit,
                                        cursor=cursor, status=status, wave=wave)
    return RolloutDevicePage(items=[RolloutMemberPublic(**m) for m in page.items], next_cursor=page.next_cursor,
                             prev_cursor=page.prev_cursor, limit=limit, total=page.total)


@router.get("/{rollout_id}/devices", response_model=RolloutDevicePage,
            responses={**READ_ERRORS, **responses(400, _400="the cursor is not one this API issued for these "
                                                             "filters: E_BAD_CURSOR")},
            summary="The rollout's member devices, a page at a time (status in the rollout, wave, figures)")
def rollout_devices(rollout_id: RolloutId, session: SessionDep, _: Viewer,
                    limit: Annotated[int, Query(ge=1, le=1000, description="devices per page")] = 100,
                    cursor: Annotated[str | None, Query(max_length=cursors.MAX_LENGTH,
                                                        description="next_cursor or prev_cursor of the previous page")] = None,
                    status: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[a-z_]+$",
                                                        description="only members in this status (pending, healthy, …)")] = None,
                    wave: Annotated[int | None, Query(ge=1, le=1000, description="only members of this wave (1 = first)")] = None,
                    ) -> RolloutDevicePage:
    return member_page_sql(session, rollout_id, time.time(), limit=limit, cursor=cursor, status=status,
                           wave=None if wave is None else wave - 1)


@router.get("/{rollout_id}/events", summary="The rollout's event log", responses=READ_ERRORS)
def get_events(rollout_id: RolloutId, session: SessionDep, _: Viewer,
               limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> list[dict[str, Any]]:
    return service.events(session, rollout_id, limit)


@router.post("/{rollout_id}/reschedule", responses=WRITE_ERRORS,
             summary="Move a scheduled rollout's start time (409 once it has started)")
def reschedule_rollout(rollout_id: RolloutId, body: RolloutReschedule, session: SessionDep,
                       controller: ControllerDep, who: Operator) -> dict[str, Any]:
    service.reschedule_rollout(session, rollout_id, body.start_at, time.time(), actor=who.name)
    controller.wake()
    return service.status(session, rollout_id, time.time(), devices=False)


def _command(name: str):  # type: ignore[no-untyped-def]
    def handler(rollout_id: RolloutId, session: SessionDep, controller: ControllerDep, who: Operator,
                body: RolloutCommand | None = None) -> dict[str, Any]:
        service.run_command(session, rollout_id, name, time.time(), reason=body.reason if body else None,
                            actor=who.name)
        controller.wake()
        return service.status(session, rollout_id, time.time(), devices=False)

    handler.__name__ = f"{name}_rollout"
    return handler


for _name, _summary in (("pause", "Pause: no new devices are sent the model"),
                        ("resume", "Resume a paused or breached rollout (409 E_MODEL_BLOCKED when its model is blocked)"),
                        ("abort", "Abort: devices stay where they are"),
                        ("rollback", "Roll back: every device that was sent the model returns to its previous one"),
                        ("cancel", "Cancel a scheduled rollout before it starts (409 once it has started)")):
    router.add_api_route(f"/{{rollout_id}}/{_name}", _command(_name), methods=["POST"], summary=_summary,
                         responses=WRITE_ERRORS)
