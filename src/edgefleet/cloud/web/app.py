"""Assembling the UI: discover page modules, mount static files, map auth failures to pages.

Page modules live in ``edgefleet.cloud.web.pages``; each exposes ``router`` (an
``APIRouter``) and optionally ``NAV`` (a ``NavItem``). ``make_web_router`` includes every
one it finds, so a new page is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ..drift import warm_evidently
from . import pages
from .auth import LoginRequired, PageForbidden
from .nav import NavItem
from .render import HERE, render, set_nav
from .security import SecurityHeadersMiddleware


def page_modules() -> list[object]:
    return [importlib.import_module(f"{pages.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(pages.__path__), key=lambda m: m.name)]


def make_web_router() -> APIRouter:
    """Every page under ``/ui`` (plus ``/`` → ``/ui/fleet``); also fills the nav bar."""
    router = APIRouter(include_in_schema=False)
    nav: list[NavItem] = []
    for module in page_modules():
        sub = getattr(module, "router", None)
        if isinstance(sub, APIRouter):
            router.include_router(sub)
        item = getattr(module, "NAV", None)
        if isinstance(item, NavItem):
            nav.append(item)
    set_nav(nav)

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/fleet", status_code=303)

    @router.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/fleet", status_code=303)

    return router


def install_web(app: FastAPI, *, quiet: Callable[[], bool] | None = None) -> None:
    """Mount the UI on ``app``: pages, ``/ui/static``, the 401/403 page handlers, and the
    security headers (strict CSP, nosniff, …) on every response (``security.py``). Evidently
    is imported in the background once ``quiet()`` holds (``drift.warm_evidently``)."""
    app.add_middleware(SecurityHeadersMiddleware,
                       docs_paths=(app.docs_url or "", app.redoc_url or "", app.swagger_ui_oauth2_redirect_url or ""))
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.include_router(make_web_router())
    warm_evidently(quiet)  # the model page's drift report needs it; its import takes seconds

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> HTMLResponse:
        return render(request, "login.html", None, status_code=401, next_url=exc.next_url, error=exc.message)

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden) -> HTMLResponse:
        principal = getattr(request.state, "principal", None)
        return render(request, "error.html", principal, status_code=403, title="Not allowed",
                      message=f"This page needs the {exc.role} role; your token has the "
                              f"{principal.role if principal else 'no'} role.")
