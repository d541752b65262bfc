"""/ui/login and /ui/logout: paste an API token; it is kept in an HttpOnly cookie.

Failed logins count against the same throttle as the API (``api/throttle.py``): while the
client's address or the token's prefix is locked, a wrong token gets 429 and Retry-After.
"""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...api import throttle
from ...api.deps import SessionDep
from ..auth import COOKIE, principal_for_token, safe_next
from ..render import render

router = APIRouter(prefix="/ui")
COOKIE_MAX_AGE = 12 * 3600


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/fleet") -> HTMLResponse:
    return render(request, "login.html", None, next_url=safe_next(next), error="")


@router.post("/login", response_model=None)
def login(request: Request, session: SessionDep, token: str = Form(""), next: str = Form("/ui/fleet")) -> Response:
    token = token.strip()
    principal = principal_for_token(session, token)
    if principal is None:
        wait = throttle.refused(request, token)
        if wait is not None:
            refusal = throttle.too_many(wait)
            page = render(request, "login.html", None, status_code=429, next_url=safe_next(next), error=refusal.detail)
            page.headers.update(refusal.headers or {})
            return page
        return render(request, "login.html", None, status_code=401, next_url=safe_next(next),
                      error="That token is not valid (revoked, mistyped, or a device token).")
    resp = RedirectResponse(safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/")
    return resp


@router.post("/logout")
def logout() -> RedirectResponse:
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp
