"""/api/v1/models — push and list model versions."""

from __future__ import annotations

import json

from fastapi import APIRouter, File, Form, UploadFile

from ... import catalog
from ...errors import BadRequest
from ...models import MODEL_NAME_PATTERN, ModelVersionPublic
from ..deps import ControllerDep, Operator, SessionDep, Viewer

router = APIRouter(prefix="/models", tags=["models"])
MAX_MODEL_BYTES = 2 * 1024 * 1024 * 1024


@router.post("", response_model=ModelVersionPublic, summary="Push a model version (ONNX + optional manifest)")
async def push_model(
    session: SessionDep,
    controller: ControllerDep,
    _: Operator,
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
        provenance=provenance_obj, trust=controller.trust,
    )
    return ModelVersionPublic.of(mv)


@router.get("", response_model=list[ModelVersionPublic], summary="List model versions")
def list_models(session: SessionDep, _: Viewer) -> list[ModelVersionPublic]:
    return [ModelVersionPublic.of(mv) for mv in catalog.list_versions(session)]


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic, summary="One model version")
def get_model(name: str, version: str, session: SessionDep, _: Viewer) -> ModelVersionPublic:
    return ModelVersionPublic.of(catalog.get_version(session, f"{name}:{version}"))


@router.get("/{name}/versions/{version}/manifest", summary="The manifest of one model version")
def get_manifest(name: str, version: str, session: SessionDep, _: Viewer) -> dict:
    return catalog.get_version(session, f"{name}:{version}").manifest
