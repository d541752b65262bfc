"""/metrics — Prometheus exposition of the controller's metrics (viewer token required).

Served at the root (``/metrics``, where Prometheus looks by default), not under
``/api/v1``. It needs a viewer token like every other route except health: point
Prometheus at it with ``authorization: {credentials: <token>}`` in the scrape config.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...metrics import ensure_metrics
from ..deps import ControllerDep, Viewer

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics (viewer token)", response_class=Response)
def metrics(controller: ControllerDep, _: Viewer) -> Response:
    body, content_type = ensure_metrics(controller).exposition()
    return Response(body, media_type=content_type)
