"""/ui/fleet — counts first (by state, hardware profile, model version per slot), then one
page of devices: online state, stale signed state (with the reason), hardware, slots, last
telemetry, sparklines.

Filters come as query parameters, the same as ``GET /api/v1/devices``: ``tag=KEY=VALUE``
(repeatable, all must match), ``hw=PROFILE``, ``state=online|offline|never_seen|revoked``,
``stale=1|0``, ``model=SLOT=NAME:VERSION``; ``cursor`` and ``limit`` page. The page does
what the API does (cloud/devices/views.py): one SELECT for the page, batched queries for its
slots and sparklines, GROUP BY for the counts, so it costs the same at 100 devices and at
100,000. Sparklines plot the last ``SPARK_PERIODS`` telemetry periods (latency p99 and
shadow agreement). Every value reaches the page through autoescaped templates; the pager's
links are built here with ``urlencode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func
from sqlmodel import Session, col, select

from ... import catalog
from ...api.deps import SessionDep
from ...devices import views
from ...devices.cursor import BadCursor
from ...devices.telemetry_store import TelemetryPeriod
from ...tables import DevicePublic
from ..auth import PagePrincipal
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui")
NAV = NavItem("fleet", "Fleet", "/ui/fleet", "viewer", NAV_ORDER["fleet"])
SPARK_PERIODS = 30
PAGE_SIZE = 100


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
        parsed = views.parse_tag(v)
        if parsed:
            out[parsed[0]] = parsed[1]
    return out


def series_of(session: Session, device_ids: list[str], limit: int = SPARK_PERIODS) -> dict[str, list[TelemetryPeriod]]:
    """The last ``limit`` telemetry periods of each device, oldest first: one query for the page."""
    if not device_ids:
        return {}
    rank = func.row_number().over(partition_by=TelemetryPeriod.device_id,
                                  order_by=col(TelemetryPeriod.period_end).desc()).label("rank")
    inner = select(TelemetryPeriod.id, rank).where(col(TelemetryPeriod.device_id).in_(device_ids)).subquery()
    rows = session.exec(select(TelemetryPeriod).join(inner, col(TelemetryPeriod.id) == inner.c.id)
                        .where(inner.c.rank <= limit).order_by(TelemetryPeriod.device_id, TelemetryPeriod.period_end)).all()
    out: dict[str, list[TelemetryPeriod]] = {}
    for p in rows:
        out.setdefault(p.device_id, []).append(p)
    return out


def fleet_filter(tags: dict[str, str], hw: str | None, state: str | None, stale: str | None,
                 model: list[str]) -> views.DeviceFilter:
    """The page's query parameters as the API's filter; values that are not a filter are ignored."""
    return views.DeviceFilter(
        tags=tuple(sorted(tags.items())), profile=hw or None, state=state if state in views.STATES else None,
        stale={"1": True, "0": False}.get(stale or ""),
        models=tuple(m for m in map(views.parse_slot_model, model) if m))


def fleet_rows(session: Session, f: views.DeviceFilter, *, limit: int = PAGE_SIZE,
               cursor: str | None = None) -> tuple[list[DeviceRow], str | None, str | None]:
    """One page of rows for the filters and the (next, prev) cursors."""
    devices, nxt, prev = views.page_devices(session, f, limit=limit, cursor=cursor)
    series = series_of(session, [d.id for d in devices])
    rows = []
    for d, public in zip(devices, views.publics(session, devices)):
        periods = series.get(d.id, [])
        rows.append(DeviceRow(
            device=public, telemetry=d.telemetry or {},
            latency_series=[p.latency_p99 if p.frames else None for p in periods],
            agreement_series=[p.agreement for p in periods],
        ))
    return rows, nxt, prev


def _href(params: list[tuple[str, str]], **extra: str) -> str:
    return "/ui/fleet?" + urlencode(params + [(k, v) for k, v in extra.items() if v])


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, session: SessionDep, principal: PagePrincipal,
               tag: list[str] = Query(default=[]), hw: str | None = None, state: str | None = None,
               stale: str | None = None, model: list[str] = Query(default=[]), cursor: str | None = None,
               limit: int = Query(default=PAGE_SIZE, ge=1, le=views.MAX_LIMIT)) -> HTMLResponse:
    tags = parse_tags(tag)
    f = fleet_filter(tags, hw, state, stale, model)
    notice = None
    try:
        rows, nxt, prev = fleet_rows(session, f, limit=limit, cursor=cursor)
    except BadCursor:
        notice = "That page link does not fit these filters (or was altered); showing the first page."
        rows, nxt, prev = fleet_rows(session, f, limit=limit)
    counts = views.counts(session, f, installed=False)  # GROUP BYs over columns; no report JSON read
    overall = views.counts(session, views.DeviceFilter(), installed=False) if f.active else counts
    # blocked versions are not offered for deploy; devices still running one are counted and flagged
    versions = catalog.list_versions(session)
    models = [f"{mv.name}:{mv.version}" for mv in versions if mv.status != "blocked"]
    on_blocked = views.on_versions(session, f, [mv.digest for mv in versions if mv.status == "blocked"])
    params = ([("tag", f"{k}={v}") for k, v in sorted(tags.items())] + ([("hw", f.profile)] if f.profile else [])
              + ([("state", f.state)] if f.state else []) + ([("stale", stale or "")] if f.stale is not None else [])
              + [("model", f"{s}={n}:{v}") for s, n, v in f.models]
              + ([("limit", str(limit))] if limit != PAGE_SIZE else []))
    return render(request, "fleet.html", principal, active="fleet", rows=rows, counts=counts, overall=overall,
                  filtered=f.active, selected_tags=[f"{k}={v}" for k, v in tags.items()], selected_hw=f.profile or "",
                  selected_state=f.state or "", selected_stale=stale if f.stale is not None else "",
                  selected_models=[f"{s}={n}:{v}" for s, n, v in f.models], models=models, on_blocked=on_blocked,
                  states=views.STATES, notice=notice,
                  next_href=_href(params, cursor=nxt) if nxt else None,
                  prev_href=_href(params, cursor=prev) if prev else None,
                  state_href={s: _href([p for p in params if p[0] != "state"], state=s) for s in views.STATES},
                  profile_href={h: _href([p for p in params if p[0] != "hw"], hw=h) for h in overall.by_profile},
                  model_href={f"{slot}={ref}": _href([p for p in params if p[0] != "model"], model=f"{slot}={ref}")
                              for slot, per in overall.by_model.items() for ref in per},
                  stale_href=_href([p for p in params if p[0] != "stale"], stale="1"))
