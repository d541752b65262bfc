"""``create_app(controller)``: the FastAPI application, errors mapped to HTTP status codes.

Hygiene on every request: JSON bodies bounded in depth and size before FastAPI parses them
(``hygiene.py``), failed authentication throttled (``throttle.py``), the OpenAPI schema and
docs for viewer tokens only (``docs.py``), device tokens confined to their own metadata and
bundles (``access.py``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from ... import __version__
from ..db import is_unavailable
from ..errors import CloudError, DatabaseUnavailable
from ..metrics import HttpMetricsMiddleware, ensure_metrics
from ..runtime import Controller
from ..web import install_web
from .access import tuf_authorizer
from .deps import any_principal, device_id_of
from .docs import install_docs
from .hygiene import JsonBodyLimitMiddleware, json_safe
from .routes import api_router
from .routes import metrics as metrics_routes
from .throttle import AuthThrottle

RETRY_AFTER_S = 5  # Retry-After of a 503 during a database outage


def create_app(controller: Controller) -> FastAPI:
    app = FastAPI(
        title="edgefleet controller",
        version=__version__,
        description="Admin API: models, devices, deployments, rollouts. Authenticate with `Authorization: Bearer <token>`.",
        openapi_url=None, docs_url=None, redoc_url=None,  # install_docs: the same paths, behind a viewer token
    )
    app.state.controller = controller
    s = controller.settings
    app.state.auth_throttle = AuthThrottle(max_failures=s.auth_max_failures, window_s=s.auth_failure_window_s)
    install_docs(app)

    @app.exception_handler(CloudError)
    async def _cloud_error(_request: Request, exc: CloudError) -> JSONResponse:
        body = {"detail": str(exc), **({"code": exc.code} if exc.code else {})}
        return JSONResponse(status_code=exc.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": json_safe(exc.errors())})

    @app.exception_handler(SQLAlchemyError)
    async def _database(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # an outage is the service's state, not a fault in the request: 503 with the reason, retry later
        if not is_unavailable(exc):
            raise exc
        return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}, content={
            "code": DatabaseUnavailable.code, "retry_after_s": RETRY_AFTER_S,
            "detail": "the controller's database is unavailable; nothing was changed, retry later"})

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, _exc: OverflowError) -> JSONResponse:
        # a number past what the database stores (e.g. ?limit=10**30): the client's input, not a fault
        return JSONResponse(status_code=400, content={"detail": "a number in the request is out of range"})

    app.include_router(api_router)
    app.include_router(_uploads_router(controller), prefix="/api/v1")
    app.include_router(metrics_routes.router)  # /metrics (viewer token)
    app.include_router(_tuf_router(controller))  # /tuf/… (device or API token; devices see only their own)
    app.add_middleware(JsonBodyLimitMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=ensure_metrics(controller))
    install_web(app)  # /ui pages, /ui/static, login
    return app


def _tuf_router(controller: Controller):  # type: ignore[no-untyped-def]
    """Signed TUF metadata (image repository, per-device director) and image targets."""
    from ...registry.tuf.http import tuf_router

    return tuf_router(controller.trust.resolver(), controller.store,
                      principal=any_principal, authorize=tuf_authorizer(controller))


def _uploads_router(controller: Controller):  # type: ignore[no-untyped-def]
    """Device clip uploads (docs/uploads.md): device auth, blob store, clip index."""
    from ..uploads import make_uploads_router

    router = make_uploads_router(
        staging_dir=controller.settings.data_dir / "uploads-staging",
        blob_store=controller.store,
        authenticate_device=device_id_of,
        on_clip_stored=controller.on_clip_stored,
        max_open_sessions=controller.settings.upload_max_open_sessions,
        max_open_bytes=controller.settings.upload_max_open_bytes,
    )
    controller.upload_store = router.upload_store  # type: ignore[attr-defined]
    return router
