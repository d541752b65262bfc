"""/ui/fleet — every device: online state, stale signed state (with the reason), hardware,
slots, last telemetry, sparklines.

Filters come as query parameters: ``tag=KEY=VALUE`` (repeatable, all must match) and
``hw=PROFILE``. Sparklines plot the last ``SPARK_PERIODS`` telemetry periods from the
telemetry history (latency p99 and shadow agreement).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from ... import catalog
from ...api.deps import SessionDep
from ...devices import fleet, telemetry_store
from ...tables import DevicePublic
from ..auth import PagePrincipal
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui")
NAV = NavItem("fleet", "Fleet", "/ui/fleet", "viewer", NAV_ORDER["fleet"])
SPARK_PERIODS = 30


@dataclass
class DeviceRow:
    device: DevicePublic
    telemetry: dict[str, Any]
    latency_series: list[float | None]
    agreement_series: list[float | None]

    @property
    def agreement(self) -> float | None:
        return (self.telemetry.get("shadow") or {}).get("agreement")


def parse_tags(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if sep and key:
            out[key] = val
    return out


def fleet_rows(session: Session, tags: dict[str, str], hw: str | None) -> tuple[list[DeviceRow], dict[str, Any]]:
    """Rows matching the filters, and the filter options (all tags and profiles in the fleet)."""
    devices = fleet.list_devices(session)
    options = {
        "tags": sorted({f"{k}={v}" for d in devices for k, v in d.tags.items()}),
        "hardware": sorted({d.hardware_id for d in devices}),
        "total": len(devices), "online": sum(1 for d in devices if d.online),
        "stale": sum(1 for d in devices if d.stale_since is not None and d.revoked_at is None),
    }
    chosen = [d for d in devices
              if (not hw or d.hardware_id == hw) and all(d.tags.get(k) == v for k, v in tags.items())]
    series = telemetry_store.device_series(session, [d.id for d in chosen], limit=SPARK_PERIODS)
    rows = []
    for d in chosen:
        periods = series.get(d.id, [])
        rows.append(DeviceRow(
            device=fleet.device_public(session, d), telemetry=d.telemetry or {},
            latency_series=[p.latency_p99 if p.frames else None for p in periods],
            agreement_series=[p.agreement for p in periods],
        ))
    return rows, options


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, session: SessionDep, principal: PagePrincipal,
               tag: list[str] = Query(default=[]), hw: str | None = None) -> HTMLResponse:
    tags = parse_tags(tag)
    rows, options = fleet_rows(session, tags, hw or None)
    # blocked versions are not offered for deploy; devices still running one are counted and flagged
    models = [f"{mv.name}:{mv.version}" for mv in catalog.list_versions(session) if mv.status != "blocked"]
    on_blocked = sum(1 for r in rows if any(s.model_status == "blocked" for s in r.device.slots.values()))
    return render(request, "fleet.html", principal, active="fleet", rows=rows, options=options,
                  selected_tags=[f"{k}={v}" for k, v in tags.items()], selected_hw=hw or "", models=models,
                  on_blocked=on_blocked)
