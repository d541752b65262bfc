"""/ui/audit — the audit log (admin only): filter by actor, action prefix and time; verify.

Server-rendered: the filters are a plain GET form, paging is links, and "Verify the chain"
is a link that adds ``verify=1`` (a full walk of the chain, so only on request). Every
value is escaped by the template; there is no script on this page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ... import audit
from ...api.deps import ControllerDep, SessionDep
from ...errors import BadRequest
from ..auth import PageAdmin
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui")
NAV = NavItem("audit", "Audit", "/ui/audit", "admin", NAV_ORDER.get("audit", 95))
PAGE = 100


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time such as 2026-01-31T12:00, got {value[:40]!r}") from None


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request, session: SessionDep, controller: ControllerDep, principal: PageAdmin,
    actor: Annotated[str, Query(max_length=128)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
    verify: bool = False,
) -> HTMLResponse:
    filters: dict[str, Any] = dict(actor=actor or None, action=action or None,
                                   since=_time(since, "since"), until=_time(until, "until"))
    rows = audit.list_entries(session, **filters, limit=PAGE + 1, offset=offset)
    report = None
    if verify:
        log = audit.for_controller(controller)
        report = audit.verify(session, log.signer.keys() if log.signer else {})
    query = {k: v for k, v in dict(actor=actor, action=action, since=since, until=until).items() if v}
    return render(request, "audit.html", principal, active="audit",
                  entries=[audit.entry_dict(e) for e in rows[:PAGE]], more=len(rows) > PAGE, offset=offset,
                  page=PAGE, query=query, report=report, actor=actor, action=action, since=since, until=until)
