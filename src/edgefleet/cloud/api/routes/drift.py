"""/api/v1/models/{name}/versions/{version}/drift — the drift of a version as control (JSON)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from ... import catalog
from ...drift import DriftConfig, DriftResult, drift_score
from ..deps import SessionDep, Viewer
from ..params import Timestamp
from .models import READ_ERRORS, NameParam, VersionParam

router = APIRouter(prefix="/models", tags=["models"])


@router.get("/{name}/versions/{version}/drift", response_model=DriftResult, responses=READ_ERRORS,
            summary="Drift of recent control confidence and classes against a reference window")
def get_drift(
    name: NameParam, version: VersionParam, session: SessionDep, _: Viewer,
    reference_periods: int = Query(30, ge=1, le=10000),
    current_periods: int = Query(30, ge=1, le=10000),
    threshold: float = Query(0.1, gt=0, le=1),
    reference_start: Annotated[Timestamp | None, Query(description="reference window start (ISO 8601)")] = None,
    reference_end: Annotated[Timestamp | None, Query(description="reference window end (ISO 8601)")] = None,
    engine: Literal["auto", "evidently", "native"] = Query("auto"),
) -> DriftResult:
    catalog.get_version(session, f"{name}:{version}")
    cfg = DriftConfig(reference_periods=reference_periods, current_periods=current_periods, threshold=threshold,
                      reference_start=reference_start, reference_end=reference_end, engine=engine)  # type: ignore[arg-type]
    return drift_score(session, f"{name}:{version}", config=cfg)
