"""/api/v1/health — liveness and readiness, unauthenticated.

* ``GET /health/live``: 200 while the process serves HTTP (restart it when this fails).
* ``GET /health/ready``: 200 when the controller can do its work — the database answers
  (``SELECT 1``, with its latency), the broker connection is up, and ingest moves (the
  bridge consumes: its watchdog probe comes back and no message waits on a database
  outage), with the age of the last device message; 503 with the failing checks named
  otherwise (take the replica out of a load balancer; do not restart it for a database or
  broker outage).
* ``GET /health`` (kept as it was): 200 ``ok`` while the MQTT bridge's network thread
  consumes; 503 ``degraded`` when it does not — ingest has stopped even if the TCP
  connection to the broker is still up. A broker that is down is not ``degraded``:
  ``mqtt_connected`` is false while the bridge keeps reconnecting.
"""

from __future__ import annotations

import time
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


@router.get("/health/live", summary="Liveness: the process serves HTTP (no authentication)")
def live() -> Any:
    return {"status": "live"}


def readiness(controller: Any) -> tuple[bool, dict[str, Any]]:
    """The readiness checks as JSON-ready data; ``(ready, body)``."""
    database = controller.database_state()
    bridge = controller.bridge
    checks: dict[str, Any] = {"database": database}
    failing = [] if database["ok"] else ["database"]
    if bridge is not None:
        now = time.monotonic()
        b = bridge.health(now)
        checks["broker"] = {"ok": b["mqtt_connected"]}
        checks["ingest"] = {"ok": b["consuming"], "alive": b["ingest_alive"], "backlog": b["backlog"],
                            "backlog_qos1": b["backlog_qos1"], "last_message_age_s": b["last_message_age_s"], "probe_rtt_s": b["probe_rtt_s"],
                            "database_retrying_s": b["database_retrying_s"]}
        failing += [name for name in ("broker", "ingest") if not checks[name]["ok"]]
    body = {"status": "ready" if not failing else "not_ready", "failing": failing, "checks": checks,
            "hears_fleet": controller.ingest_watch.healthy}
    return not failing, body


@router.get(
    "/health/ready",
    summary="Readiness: database reachable, broker connected, ingest moving (no authentication)",
    responses={503: {"description": "not ready: `failing` names the checks (database, broker, ingest)"}},
)
def ready(controller: ControllerDep) -> Any:
    ok, body = readiness(controller)
    return body if ok else JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
