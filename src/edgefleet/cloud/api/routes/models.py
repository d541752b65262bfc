"""/api/v1/models — push, list and show model versions; their lifecycle (deprecate, block,
unblock, yank: cloud/lifecycle.py, cloud/yank.py).

Operators change a version's status; viewers read. Every version shows who pushed it, its
provenance, its status and how many devices run it per slot (their signed reports).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile
from pydantic import BaseModel, Field

from ....protocols import SLOTS
from ... import audit, catalog, lifecycle, yank
from ...devices.placement import running_counts, running_on
from ...errors import BadRequest
from ...tables import MODEL_NAME_PATTERN, ModelStatus, ModelVersionPublic
from .. import problems
from ..deps import ControllerDep, Operator, SessionDep, Viewer

router = APIRouter(prefix="/models", tags=["models"])
MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024
NameParam = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=128, description="model name")]
VersionParam = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=64, description="model version")]


ErrorBody = problems.ErrorBody  # every error body (api/problems.py); kept here for the routes that import it


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "bad input", 401: "no or invalid token", 403: "the token's role does not allow it",
            404: "no such model version", 409: "conflict: the version is blocked (code E_MODEL_BLOCKED) or changing",
            422: "the request does not match the schema"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


READ_ERRORS = _errors(401, 403, 404, 422)
WRITE_ERRORS = _errors(400, 401, 403, 404, 409, 422)


class StatusRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=lifecycle.MAX_REASON, description="why; shown to whoever deploys it")


class UnblockRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=lifecycle.MAX_REASON)


class StatusResult(BaseModel):
    model: ModelVersionPublic
    previous_status: ModelStatus
    aborted_rollouts: list[str] = []  # live rollouts of it, aborted by the block
    still_running: dict[str, list[str]] = {}  # slot → devices still running it (signed reports)


class ModelVersionDetail(ModelVersionPublic):
    devices: dict[str, list[str]] = {}  # slot → devices running it now (first 500 per slot)
    rollouts: list[dict[str, Any]] = []  # rollouts of this version, newest first (last 20)


@router.post("", response_model=ModelVersionPublic, summary="Push a model version (ONNX + optional manifest)",
             responses=WRITE_ERRORS)
async def push_model(
    session: SessionDep,
    controller: ControllerDep,
    who: Operator,
    name: str = Form(..., pattern=MODEL_NAME_PATTERN, max_length=128),
    version: str = Form(..., pattern=MODEL_NAME_PATTERN, max_length=64),
    model: UploadFile = File(..., description="the ONNX file"),
    manifest: str | None = Form(None, description="manifest JSON; inferred from the graph when absent"),
    labels: str | None = Form(None, description="comma-separated class labels"),
    provenance: str | None = Form(None, description="JSON object recorded in the manifest and the signed target (e.g. MLflow run id)"),
) -> ModelVersionPublic:
    data = await model.read(MAX_MODEL_BYTES + 1)
    if len(data) > MAX_MODEL_BYTES:
        raise BadRequest("model file too large")
    manifest_obj = None
    if manifest:
        try:
            manifest_obj = json.loads(manifest)
        except ValueError as exc:
            raise BadRequest(f"manifest is not valid JSON: {exc}") from None
    label_list = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    provenance_obj = None
    if provenance:
        try:
            provenance_obj = json.loads(provenance)
        except ValueError as exc:
            raise BadRequest(f"provenance is not valid JSON: {exc}") from None
        if not isinstance(provenance_obj, dict):
            raise BadRequest("provenance must be a JSON object")
    mv, _created = catalog.push_model(
        session, controller.store, data, name=name, version=version, manifest=manifest_obj, labels=label_list,
        provenance=provenance_obj, trust=controller.trust, pushed_by=who.name,
    )
    # allowed, but said: this version, or the same ONNX bytes under another, is blocked/deprecated
    return ModelVersionPublic.of(mv, notes=lifecycle.same_bytes_notes(session, mv))


@router.get("", response_model=list[ModelVersionPublic], summary="List model versions (status, provenance, devices per slot)",
            responses=_errors(401, 403))
def list_models(session: SessionDep, _: Viewer) -> list[ModelVersionPublic]:
    running = running_counts(session)  # GROUP BY per slot: no device row is loaded
    return [ModelVersionPublic.of(mv, running={slot: running.get(mv.digest, {}).get(slot, 0) for slot in SLOTS})
            for mv in catalog.list_versions(session)]


@router.get("/{name}/versions/{version}", response_model=ModelVersionDetail,
            summary="One model version: status, provenance, the devices running it, its rollouts", responses=READ_ERRORS)
def get_model(name: NameParam, version: VersionParam, session: SessionDep, _: Viewer) -> ModelVersionDetail:
    from ...rollout.service import list_rollouts_of

    mv = catalog.get_version(session, f"{name}:{version}")
    running = running_counts(session).get(mv.digest, {})  # counts in SQL, the first 500 ids per slot
    base = ModelVersionPublic.of(mv, running={slot: running.get(slot, 0) for slot in SLOTS})
    return ModelVersionDetail(**base.model_dump(), devices=running_on(session, mv.digest, limit=500),
                              rollouts=list_rollouts_of(session, mv.id or 0, limit=20))


@router.get("/{name}/versions/{version}/manifest", summary="The manifest of one model version", responses=READ_ERRORS)
def get_manifest(name: NameParam, version: VersionParam, session: SessionDep, _: Viewer) -> dict:
    return catalog.get_version(session, f"{name}:{version}").manifest


def _set_status(name: str, version: str, status: str, reason: str | None, session: SessionDep,
                controller: ControllerDep, who: Any) -> StatusResult:
    mv = catalog.get_version(session, f"{name}:{version}")
    change = lifecycle.set_status(session, mv, status, reason=reason, actor=who.name, role=who.role, now=time.time(),
                                  audit_log=audit.for_controller(controller))
    if change.aborted_rollouts:
        controller.wake()
    return StatusResult(model=ModelVersionPublic.of(mv, running=lifecycle.counts(change.running)),
                        previous_status=change.previous,  # type: ignore[arg-type]
                        aborted_rollouts=change.aborted_rollouts, still_running=change.running)


@router.post("/{name}/{version}/deprecate", response_model=StatusResult, responses=WRITE_ERRORS,
             summary="Deprecate: deploys and rollouts still work, with a warning")
def deprecate(name: NameParam, version: VersionParam, body: StatusRequest, session: SessionDep,
              controller: ControllerDep, who: Operator) -> StatusResult:
    return _set_status(name, version, "deprecated", body.reason, session, controller, who)


@router.post("/{name}/{version}/block", response_model=StatusResult, responses=WRITE_ERRORS,
             summary="Block: never deployed or rolled out again (409 E_MODEL_BLOCKED); live rollouts of it are aborted")
def block(name: NameParam, version: VersionParam, body: StatusRequest, session: SessionDep,
          controller: ControllerDep, who: Operator) -> StatusResult:
    return _set_status(name, version, "blocked", body.reason, session, controller, who)


@router.post("/{name}/{version}/unblock", response_model=StatusResult, responses=WRITE_ERRORS,
             summary="Unblock (or undeprecate): the version is active again")
def unblock(name: NameParam, version: VersionParam, session: SessionDep, controller: ControllerDep,
            who: Operator, body: UnblockRequest | None = None) -> StatusResult:
    return _set_status(name, version, "active", body.reason if body else None, session, controller, who)


@router.post("/{name}/{version}/yank", response_model=yank.YankResult, responses=WRITE_ERRORS,
             summary="Yank: block it and roll every device off it (to its last known good, or `to`) in gated waves")
def yank_version(name: NameParam, version: VersionParam, body: yank.YankRequest, session: SessionDep,
                 controller: ControllerDep, who: Operator) -> yank.YankResult:
    mv = catalog.get_version(session, f"{name}:{version}")
    result = yank.yank(session, mv, body, actor=who.name, role=who.role, now=time.time(), publisher=controller,
                       audit_log=audit.for_controller(controller))
    controller.wake()
    return result
