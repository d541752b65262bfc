"""/ui/models and /ui/models/{name}/{version} — versions, where they run, charts and drift.

Where a version runs is counted in SQL (``devices.placement``), never by walking the fleet;
the version page links to the paged fleet view filtered by it. The version page shows latency p99 and agreement over time (as control and as shadow
candidate, from the telemetry history), the drift summary (``drift.drift_score``) and
Evidently's own report in an iframe (``…/drift/report``, when Evidently is installed). The
report is third-party HTML with inline scripts: it is served under ``REPORT_CSP`` (a CSP
``sandbox`` without ``allow-same-origin``, no network) and framed with
``sandbox="allow-scripts"``, so even a script in it cannot read the page, the cookie or the API.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from ... import catalog
from ...api.deps import SessionDep
from ...devices import telemetry_store
from ...devices.placement import device_count, placement_counts
from ...drift import (
    DriftConfig,
    DriftResult,
    DriftUnavailable,
    drift_report_html,
    drift_score,
    evidently_installed,
)
from ...errors import BadRequest
from ..auth import PagePrincipal
from ..charts import bars_svg
from ..nav import NAV_ORDER, NavItem
from ..render import render
from ..security import REPORT_CSP

router = APIRouter(prefix="/ui/models")
NAV = NavItem("models", "Models", "/ui/models", "viewer", NAV_ORDER["models"])


def fleet_href(slot: str, label: str) -> str:
    """The paged fleet view filtered by the devices assigned ``label`` in ``slot``."""
    return "/ui/fleet?" + urlencode([("model", f"{slot}={label}")])


def drift_charts(drift: DriftResult) -> tuple[Markup, Markup]:
    """Reference vs current: confidence histogram bars and class share bars."""
    ref, cur = drift.reference, drift.current
    n = len(ref.confidence_histogram) or len(cur.confidence_histogram)
    conf = bars_svg([f"{i / n:.1f}" for i in range(n)], {
        "reference": ref.confidence_histogram if len(ref.confidence_histogram) == n else [0] * n,
        "current": cur.confidence_histogram if len(cur.confidence_histogram) == n else [0] * n,
    }) if n else Markup("")
    labels = sorted(set(ref.class_counts) | set(cur.class_counts))
    classes = bars_svg(labels, {"reference": [ref.class_counts.get(x, 0) for x in labels],
                                "current": [cur.class_counts.get(x, 0) for x in labels]})
    return conf, classes


@router.get("", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep, principal: PagePrincipal) -> HTMLResponse:
    versions = catalog.list_versions(session)
    return render(request, "models.html", principal, active="models", versions=versions,
                  placement=placement_counts(session))


@router.get("/{name}/{version}", response_class=HTMLResponse)
def model_page(name: str, version: str, request: Request, session: SessionDep, principal: PagePrincipal) -> HTMLResponse:
    mv = catalog.get_version(session, f"{name}:{version}")
    label = f"{name}:{version}"
    bucket = timedelta(seconds=10)
    as_control = telemetry_store.version_series(session, name, version, role="control", bucket=bucket)
    as_shadow = telemetry_store.version_series(session, name, version, role="shadow", bucket=bucket)
    latency = {"as control": [(p.t, p.latency_p99) for p in as_control],
               "in shadow": [(p.t, p.latency_p99) for p in as_shadow]}
    agreement = {"in shadow": [(p.t, p.agreement) for p in as_shadow],
                 "as control (vs its candidate)": [(p.t, p.agreement) for p in as_control]}
    drift = drift_score(session, label, config=DriftConfig(wait_for_evidently=False))
    conf_bars, class_bars = drift_charts(drift)
    return render(request, "model.html", principal, active="models", mv=mv, label=label,
                  placement=placement_counts(session).get(label, {}), latency=latency, agreement=agreement,
                  drift=drift, conf_bars=conf_bars, class_bars=class_bars, evidently=evidently_installed(),
                  device_count=device_count(session), fleet_href=fleet_href)


@router.get("/{name}/{version}/drift/report", response_class=HTMLResponse)
def drift_report(name: str, version: str, request: Request, session: SessionDep, principal: PagePrincipal) -> Response:
    catalog.get_version(session, f"{name}:{version}")
    try:
        html = drift_report_html(session, f"{name}:{version}")
    except (DriftUnavailable, BadRequest) as exc:
        return render(request, "bare.html", principal, message=str(exc))
    return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP})
