"""/api/v1/rollouts — staged rollouts: start, list, status, pause/resume/abort/rollback.

Operators (``operator`` role) start rollouts and send commands; viewers read. Every
command is idempotent (repeating it changes nothing); one the rollout's state does not
allow is 409 with the reason, bad input is 400 with a pointer to the problem.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from ... import lifecycle
from ...models import ModelVersion
from ...rollout import service
from ...rollout.service import RolloutCommand, RolloutCreate, RolloutSummary
from ..deps import ControllerDep, Operator, SessionDep, Viewer
from .models import WRITE_ERRORS

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


@router.post("", status_code=201, responses=WRITE_ERRORS,
             summary="Start a rollout (supersedes live rollouts of the same slot and devices; "
                     "409 E_MODEL_BLOCKED for a blocked version)")
def start(body: RolloutCreate, session: SessionDep, controller: ControllerDep, who: Operator) -> dict[str, Any]:
    row = service.start_rollout(session, body, time.time(), actor=who.name)
    controller.wake()
    out = service.status(session, row.id, time.time(), devices=False)
    mv = session.get(ModelVersion, row.model_version_id)
    out["warnings"] = lifecycle.check_deployable(mv) if mv is not None else []  # deprecated: said
    return out


@router.get("", response_model=list[RolloutSummary], summary="Rollouts, newest first")
def list_rollouts(session: SessionDep, _: Viewer, state: str | None = None, limit: int = 100) -> list[RolloutSummary]:
    return service.list_rollouts(session, state=state, limit=min(max(limit, 1), 1000))


@router.get("/{rollout_id}", summary="Status: waves, counts by device status, gate figures, progress")
def get_status(rollout_id: str, session: SessionDep, _: Viewer, devices: bool = True, events: int = 30) -> dict[str, Any]:
    return service.status(session, rollout_id, time.time(), devices=devices, events=max(0, min(events, 1000)))


@router.get("/{rollout_id}/events", summary="The rollout's event log")
def get_events(rollout_id: str, session: SessionDep, _: Viewer, limit: int = 200) -> list[dict[str, Any]]:
    return service.events(session, rollout_id, max(1, min(limit, 5000)))


def _command(name: str):  # type: ignore[no-untyped-def]
    def handler(rollout_id: str, session: SessionDep, controller: ControllerDep, who: Operator,
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
                        ("rollback", "Roll back: every device that was sent the model returns to its previous one")):
    router.add_api_route(f"/{{rollout_id}}/{_name}", _command(_name), methods=["POST"], summary=_summary,
                         responses=WRITE_ERRORS)
