"""/ui/rollouts and /ui/rollouts/{id} — staged rollouts: list, waves, gates, operator commands.

Both pages read ``rollout.service`` (what ``/api/v1/rollouts`` serves). The detail page
shows per wave its members, device counts by status, each gate's figure against its limit,
and a progress bar; operators get the commands the rollout's state allows (pause, resume,
abort, roll back), which post to ``/ui/api/v1/rollouts/{id}/{command}`` — the API checks
the role and the state again.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ...api.deps import SessionDep
from ...api.routes.rollouts import member_page_sql
from ...devices.cursor import BadCursor
from ...rollout import listing, service
from ...rollout.gates import evidence_text
from ...rollout.store import spec_of
from ..auth import PagePrincipal
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui/rollouts")
NAV = NavItem("rollouts", "Rollouts", "/ui/rollouts", "viewer", NAV_ORDER["rollouts"])

#: command → (button label, states it is offered in, button class, confirmation) — mirrors rollout/commands.py.
COMMANDS: dict[str, tuple[str, tuple[str, ...], str, str | None]] = {
    "pause": ("Pause", ("pending", "running", "soaking"), "primary", None),
    "resume": ("Resume", ("paused", "breached"), "primary", None),
    "abort": ("Abort", ("pending", "running", "soaking", "paused", "breached"), "danger",
              "Abort this rollout? Devices stay where they are."),
    "rollback": ("Roll back", ("pending", "running", "soaking", "paused", "breached", "completed", "aborted"),
                 "danger", "Roll back? Every device that was sent the model returns to its previous one."),
}
STATUS_ORDER = ("waiting", "pending", "queued", "dispatched", "installing", "silent", "stale", "active", "healthy",
                "failed", "rolled_back", "timed_out", "skipped")


def allowed_commands(state: str) -> list[str]:
    return [c for c, (_label, states, _cls, _confirm) in COMMANDS.items() if state in states]


def when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def gate_text(g: dict[str, Any]) -> str:
    """``failure 0.013 (limit <= 0.02)``: the wave's figure against the gate's limit."""
    value = "no data" if g.get("value") is None else f"{g['value']:.3g}"
    return f"{g['metric']} {value} (limit {g['op']} {g['limit']:g})"


ROLLOUTS_PER_PAGE = 100


@router.get("", response_class=HTMLResponse)
def rollouts_page(request: Request, session: SessionDep, principal: PagePrincipal,
                  state: str | None = None, cursor: str | None = None) -> HTMLResponse:
    """A page of rollouts, newest first: a constant number of statements (``rollout.listing``),
    each row's progress from one GROUP BY over the page's members, not a status fold per row."""
    state = state or None
    notice = None
    try:
        page = listing.page_rollouts(session, state=state, limit=ROLLOUTS_PER_PAGE, cursor=cursor)
    except BadCursor:
        notice = "That page link does not fit this list (or was altered); showing the newest rollouts."
        page = listing.page_rollouts(session, state=state, limit=ROLLOUTS_PER_PAGE, cursor=None)
    figures = listing.row_figures(session, page.rows)
    rows = []
    for r in page.rows:
        f = figures[r.id]
        rows.append({"summary": service.summary(session, r, devices=f.members),
                     "status": {"waves": spec_of(r).waves, "progress": f.progress, "on_model": f.on_model,
                                "devices": f.devices, "gates_spec": list(r.gates or ())}})
    keep = [("state", state)] if state else []
    return render(request, "rollouts.html", principal, active="rollouts", rows=rows, state=state or "",
                  when=when, commands=COMMANDS, allowed=allowed_commands, notice=notice,
                  next_href="/ui/rollouts?" + urlencode(keep + [("cursor", page.next_cursor)])
                  if page.next_cursor else None,
                  first_href="/ui/rollouts?" + urlencode(keep) if cursor and notice is None else None)


MEMBERS_PER_PAGE = 100


@router.get("/{rollout_id}", response_class=HTMLResponse)
def rollout_page(rollout_id: str, request: Request, session: SessionDep, principal: PagePrincipal,
                 cursor: str | None = None, status: str | None = None) -> HTMLResponse:
    now = time.time()
    st = service.status(session, rollout_id, now, devices=False, events=50)
    present = {k for w in st["waves"] for k, n in w["counts"].items() if n}
    statuses = [s for s in STATUS_ORDER if s in present]
    statuses += sorted(present - set(statuses))
    status = status if status in present else None
    notice = None
    try:  # the member list a page at a time, read by keyset like GET /api/v1/rollouts/{id}/devices
        page = member_page_sql(session, rollout_id, now, limit=MEMBERS_PER_PAGE, cursor=cursor, status=status)
    except BadCursor:
        notice = "That page link does not fit this list (or was altered); showing the first page."
        page = member_page_sql(session, rollout_id, now, limit=MEMBERS_PER_PAGE, cursor=None, status=status)
    base = f"/ui/rollouts/{quote(rollout_id, safe='')}?"
    keep = [("status", status)] if status else []
    return render(request, "rollout.html", principal, active="rollouts", r=st, statuses=statuses, when=when,
                  commands=COMMANDS, allowed=allowed_commands(st["state"]), gate_text=gate_text,
                  evidence_text=evidence_text, members=page.items, members_total=page.total, notice=notice,
                  next_href=base + urlencode(keep + [("cursor", page.next_cursor)]) if page.next_cursor else None,
                  prev_href=base + urlencode(keep + [("cursor", page.prev_cursor)]) if page.prev_cursor else None)
