"""Who is looking at a page: the API token kept in an HttpOnly cookie (or a Bearer header).

Login pastes a token; ``/ui/login`` checks it with the API's own ``authenticate`` and sets
the cookie (HttpOnly, SameSite=Strict, Secure behind HTTPS). Pages depend on
``page_principal`` (any user role) or ``page_role("operator")``; failures raise
``LoginRequired`` (→ 401 with the login form) or ``PageForbidden`` (→ 403 page).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from ..api.deps import Principal, SessionDep, authenticate
from ..auth import role_allows

COOKIE = "edgefleet_token"


class LoginRequired(Exception):
    def __init__(self, next_url: str = "/ui/fleet", message: str = ""):
        self.next_url, self.message = next_url, message


class PageForbidden(Exception):
    def __init__(self, role: str):
        self.role = role


def token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


def principal_for_token(session: SessionDep, token: str | None) -> Principal | None:
    if not token:
        return None
    try:
        principal = authenticate(session, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))
    except HTTPException:
        return None
    return principal if principal.kind == "user" else None


def _next_of(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def page_principal(request: Request, session: SessionDep) -> Principal:
    principal = principal_for_token(session, token_of(request))
    if principal is None:
        had = bool(request.cookies.get(COOKIE))
        raise LoginRequired(_next_of(request), "your session token is no longer valid" if had else "")
    request.state.principal = principal
    return principal


def page_role(role: str) -> Callable[..., Principal]:
    def dep(request: Request, principal: Annotated[Principal, Depends(page_principal)]) -> Principal:
        if not role_allows(principal.role, role):
            raise PageForbidden(role)
        return principal

    return dep


PagePrincipal = Annotated[Principal, Depends(page_principal)]
PageAdmin = Annotated[Principal, Depends(page_role("admin"))]


def safe_next(url: str | None) -> str:
    """Only same-site paths under /ui are followed after login (no open redirect)."""
    if url and url.startswith("/ui/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/ui/fleet"
