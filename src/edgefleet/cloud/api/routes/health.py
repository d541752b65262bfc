"""/api/v1/health — liveness, unauthenticated."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import ControllerDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and MQTT connection state (no authentication)")
def health(controller: ControllerDep) -> dict:
    bridge = controller.bridge
    return {"status": "ok", "mqtt_connected": bool(bridge and bridge.connected.is_set())}
