"""/api/v1/health — liveness, unauthenticated.

200 ``ok`` while the MQTT bridge's network thread consumes (the bridge's watchdog probe
comes back in time); 503 ``degraded`` when it does not — ingest has stopped even if the
TCP connection to the broker is still up. A broker that is down is not ``degraded``:
``mqtt_connected`` is false while the bridge keeps reconnecting, and restarting the
controller would not help.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..deps import ControllerDep

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Liveness, MQTT connection and ingest state (no authentication)",
    responses={503: {"description": "degraded: the MQTT bridge no longer consumes messages"}},
)
def health(controller: ControllerDep) -> Any:
    bridge = controller.bridge
    if bridge is None:  # started without MQTT
        return {"status": "ok", "mqtt_connected": False, "ingest_alive": None, "last_message_age_s": None}
    state = bridge.health()
    if not state["ingest_alive"]:
        return JSONResponse({"status": "degraded", **state}, status_code=503)
    return {"status": "ok", **state}
