"""/api/v1/deployments — direct assignment of a model version to a slot (no waves)."""

from __future__ import annotations

from fastapi import APIRouter

from ... import catalog, lifecycle
from ...devices import fleet
from ...errors import BadRequest
from ...tables import DeploymentCreate, DeploymentResult
from ..deps import ControllerDep, Operator, SessionDep
from .models import WRITE_ERRORS

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.post("", response_model=DeploymentResult, responses=WRITE_ERRORS,
             summary="Assign a model to a slot on devices now (409 E_MODEL_BLOCKED for a blocked version)")
def deploy(body: DeploymentCreate, session: SessionDep, controller: ControllerDep, _: Operator) -> DeploymentResult:
    if not body.all and not body.devices:
        raise BadRequest("name devices or set all=true")
    mv = catalog.get_version(session, body.model)
    warnings = lifecycle.check_deployable(mv)  # blocked: 409; deprecated: allowed, said
    ids = fleet.deploy(session, controller, mv, body.slot, None if body.all else body.devices)
    return DeploymentResult(model=body.model, slot=body.slot, devices=ids, warnings=warnings)
