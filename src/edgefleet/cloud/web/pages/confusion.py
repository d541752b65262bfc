"""/ui/confusion — control × candidate confusion matrix per model pair, and charts over time.

The matrix comes from the fleet's shadow statistics (``shadow_index.pair_detail``: frames
per [control label][candidate label], summed over devices' telemetry); each cell links to
the review queue filtered to that pair and cell. Beside each count: how many captures
(clips) the devices sent for it. Charts: agreement of the candidate and latency p99 of both
versions over time, from the telemetry history (``telemetry_store.version_series``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session, func, select

from ... import review, shadow_index
from ...api.deps import SessionDep
from ...devices import telemetry_store
from ...shadow_index import ShadowEvent, parse_pair, parse_ref
from ..auth import PagePrincipal
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui/confusion")
NAV = NavItem("confusion", "Confusion", "/ui/confusion", "viewer", NAV_ORDER["confusion"])
BUCKET = timedelta(seconds=10)


def pair_key(control: str, candidate: str) -> str:
    return f"{control}:{candidate}"


def capture_counts(session: Session, control: str, candidate: str) -> dict[tuple[str, str], int]:
    """Captures per (control label, candidate label) of one pair."""
    cn, cv = parse_ref(control)
    kn, kv = parse_ref(candidate)
    rows = session.exec(
        select(ShadowEvent.control_label, ShadowEvent.candidate_label, func.count())
        .where(ShadowEvent.control_name == cn, ShadowEvent.control_version == cv,
               ShadowEvent.candidate_name == kn, ShadowEvent.candidate_version == kv)
        .group_by(ShadowEvent.control_label, ShadowEvent.candidate_label)
    ).all()
    return {(str(a), str(b)): int(n) for a, b, n in rows if a is not None and b is not None}


def matrix(confusion: dict[str, dict[str, int]], captures: dict[tuple[str, str], int]) -> dict[str, Any]:
    """Rows, columns and cells (count, share of the row, captures) of one pair's matrix."""
    labels = set(confusion) | {c for row in confusion.values() for c in row}
    labels |= {a for a, _ in captures} | {b for _, b in captures}
    order = sorted(labels, key=lambda x: (len(x), x))
    cells = {}
    for r in order:
        total = sum(confusion.get(r, {}).values())
        for c in order:
            n = confusion.get(r, {}).get(c, 0)
            cells[(r, c)] = {"count": n, "share": n / total if total else 0.0, "captures": captures.get((r, c), 0)}
    return {"labels": order, "cells": cells,
            "row_totals": {r: sum(confusion.get(r, {}).values()) for r in order}}


def cell_color(share: float, diagonal: bool) -> str:
    alpha = 0.08 + 0.72 * share if share > 0 else 0.0
    return f"rgba(5,150,105,{alpha:.2f})" if diagonal else f"rgba(220,38,38,{alpha:.2f})"


def all_pairs(session: Session) -> list[dict[str, Any]]:
    pairs = {pair_key(p.control, p.candidate): p.to_dict() for p in shadow_index.list_pairs(session)}
    for key in review.facets(session)["pairs"]:  # pairs seen only in captures so far
        if key not in pairs:
            control, candidate = parse_pair(key)
            pairs[key] = {"control": control, "candidate": candidate, "frames": 0, "agreement": None,
                          "devices": 0, "disagreements": 0, "events": 0, "clips": 0, "updated_at": None}
    return list(pairs.values())


@router.get("", response_class=HTMLResponse)
def confusion_page(request: Request, session: SessionDep, principal: PagePrincipal,
                   pair: str | None = None) -> HTMLResponse:
    pairs = all_pairs(session)
    for p in pairs:
        p["key"] = pair_key(p["control"], p["candidate"])
        p["verdicts"] = review.verdict_counts(session, review.QueueFilter(pair=p["key"]))
    chosen = None
    if pair:
        control, candidate = parse_pair(pair)
        chosen = next((p for p in pairs if (p["control"], p["candidate"]) == (control, candidate)), None)
    elif pairs:
        chosen = pairs[0]
    ctx: dict[str, Any] = {"pairs": pairs, "chosen": chosen}
    if chosen is not None:
        control, candidate = chosen["control"], chosen["candidate"]
        detail = shadow_index.pair_detail(session, control, candidate) or {"confusion": {}, "per_class": {}, "devices": []}
        ctx["detail"] = detail
        ctx["m"] = matrix(detail["confusion"], capture_counts(session, control, candidate))
        cn, cv = parse_ref(control)
        kn, kv = parse_ref(candidate)
        as_shadow = telemetry_store.version_series(session, kn, kv, role="shadow", bucket=BUCKET)
        as_control = telemetry_store.version_series(session, cn, cv, role="control", bucket=BUCKET)
        ctx["agreement"] = {f"{candidate} vs {control}": [(p.t, p.agreement) for p in as_shadow]}
        ctx["latency"] = {f"{control} (control)": [(p.t, p.latency_p99) for p in as_control],
                          f"{candidate} (shadow)": [(p.t, p.latency_p99) for p in as_shadow]}
        ctx["link"] = lambda r, c: "/ui/review?" + urlencode(
            {"pair": chosen["key"], "control_label": r, "candidate_label": c})
    return render(request, "confusion.html", principal, active="confusion", color=cell_color, **ctx)
