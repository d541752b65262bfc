"""The browser UI: server-rendered Jinja2 pages, a little vanilla JS, no front-end build.

``install_web(app)`` mounts everything on a FastAPI app: the page routers found in
``web/pages/`` (each module exposes ``router`` and optionally ``NAV``), the static files
under ``/ui/static``, and the handlers that turn "not logged in" into a 401 login page and
"role too low" into a 403 page. See docs/ui.md for adding a page.
"""

from .app import install_web, make_web_router
from .auth import COOKIE, LoginRequired, PageForbidden, page_principal
from .nav import NAV_ORDER, NavItem
from .render import render, templates

__all__ = [
    "COOKIE", "NAV_ORDER", "LoginRequired", "NavItem", "PageForbidden", "install_web", "make_web_router",
    "page_principal", "render", "templates",
]
