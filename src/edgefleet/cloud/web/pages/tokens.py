"""/ui/tokens — API tokens (admin only): list, create (secret shown once), revoke.

Actions go through ``/ui/api/v1/tokens`` (the real API), so the page and the CLI obey the
same rules.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ...api.deps import SessionDep
from ...api.routes.tokens import list_tokens
from ...auth import ROLES
from ..auth import PageAdmin
from ..nav import NAV_ORDER, NavItem
from ..render import render

router = APIRouter(prefix="/ui")
NAV = NavItem("tokens", "Tokens", "/ui/tokens", "admin", NAV_ORDER["tokens"])


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, session: SessionDep, principal: PageAdmin) -> HTMLResponse:
    return render(request, "tokens.html", principal, active="tokens", tokens=list_tokens(session), roles=ROLES)
