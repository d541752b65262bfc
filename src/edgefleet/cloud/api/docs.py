"""``/api/v1/openapi.json`` and ``/api/v1/docs`` (Swagger UI) for viewer tokens only.

The API's shape names every route and field, so it is shown to users, not to the world:
the token comes from ``Authorization: Bearer …`` or the UI's session cookie (so the docs
page opened from a logged-in browser works; Swagger UI fetches the schema with it).
Unauthenticated → 401, a device token → 403. ``FastAPI`` is built with its own docs routes
off; ``install_docs`` adds these and sets ``app.openapi_url``/``app.docs_url`` back so
that other middleware (the docs page's CSP) still finds the paths. The document is
FastAPI's, finished by ``problems.finish_openapi`` (every error status declared with the one
error body); operation ids are ``operation_id(route)``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials

from ..auth import role_allows
from ..web.auth import token_of
from .deps import Principal, SessionDep, authenticate_request
from .problems import finish_openapi

OPENAPI_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"


def docs_viewer(request: Request, session: SessionDep) -> Principal:
    token = token_of(request)
    creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None
    principal = authenticate_request(request, session, creds)
    if principal.kind != "user" or not role_allows(principal.role, "viewer"):
        raise HTTPException(status_code=403, detail="the API documentation needs the viewer role")
    return principal


DocsViewer = Annotated[Principal, Depends(docs_viewer)]


def operation_id(route: APIRoute) -> str:
    """``{tag}_{function}`` (``devices_enrol``, ``rollouts_pause_rollout``): stable names for
    generated clients; ``cloud/client.py`` maps each to a method (tests/contract)."""
    tag = str(route.tags[0]) if route.tags else "api"
    return f"{tag}_{route.name}".replace("-", "_")


def install_docs(app: FastAPI) -> None:
    """Add the token-protected schema and Swagger UI routes to ``app``."""

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, finished once (problems.finish_openapi: errors declared everywhere)."""
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(fastapi_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(OPENAPI_URL, include_in_schema=False)
    def openapi_json(_: DocsViewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(_: DocsViewer) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{app.title} — API")

    app.openapi_url, app.docs_url = OPENAPI_URL, DOCS_URL
    app.redoc_url = app.swagger_ui_oauth2_redirect_url = None
