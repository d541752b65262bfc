"""``create_app(controller)``: the FastAPI application, errors mapped to HTTP status codes.

Hygiene on every request: JSON bodies bounded in depth and size before FastAPI parses them
(``hygiene.py``), failed authentication throttled (``throttle.py``), the OpenAPI schema and
docs for viewer tokens only (``docs.py``), device tokens confined to their own metadata and
bundles (``access.py``).
"""

from __future__ import annotations

from fastapi import FastAPI

from ... import __version__
from ..metrics import HttpMetricsMiddleware, ensure_metrics
from ..runtime import Controller
from ..web import install_web
from .access import tuf_authorizer
from .deps import any_principal, device_id_of
from .docs import install_docs, operation_id
from .hygiene import JsonBodyLimitMiddleware
from .problems import RETRY_AFTER_S, install_error_handlers
from .routes import api_router
from .routes import metrics as metrics_routes
from .throttle import AuthThrottle

__all__ = ["RETRY_AFTER_S", "create_app"]


def create_app(controller: Controller) -> FastAPI:
    app = FastAPI(
        title="edgefleet controller",
        version=__version__,
        description="Admin API: models, devices, deployments, rollouts. Authenticate with `Authorization: Bearer <token>`.",
        openapi_url=None, docs_url=None, redoc_url=None,  # install_docs: the same paths, behind a viewer token
        generate_unique_id_function=operation_id,  # {tag}_{function}: what cloud/client.py maps
    )
    app.state.controller = controller
    s = controller.settings
    app.state.auth_throttle = AuthThrottle(max_failures=s.auth_max_failures, window_s=s.auth_failure_window_s)
    install_docs(app)

    install_error_handlers(app)  # every error body is problems.ErrorBody

    app.include_router(api_router)
    app.include_router(_uploads_router(controller), prefix="/api/v1")
    app.include_router(metrics_routes.router)  # /metrics (viewer token)
    app.include_router(_tuf_router(controller))  # /tuf/… (device or API token; devices see only their own)
    app.add_middleware(JsonBodyLimitMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=ensure_metrics(controller))
    install_web(app, quiet=controller.ingest_quiet)  # /ui pages, /ui/static, login
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
