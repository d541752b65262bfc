"""Jinja2 rendering shared by every page: templates, filters, and the context each page gets.

Every template extends ``base.html`` and receives ``principal``, ``role``, ``can(role)``
(true when the viewer's role includes ``role``), ``nav`` (items this role may see) and
``active`` (the current nav key). Autoescaping is on for every template: device-supplied
strings (tags, hardware ids, error texts, labels, …) reach pages only as escaped text, and
the only ``Markup`` a template gets is built here from escaped parts (``charts``,
``pages/review._json_script``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from ... import __version__
from ..api.deps import Principal
from ..auth import role_allows
from . import charts

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.autoescape = True  # every template, whatever its name; no |safe on device data
_NAV: list[Any] = []


def set_nav(items: list[Any]) -> None:
    _NAV[:] = sorted(items, key=lambda n: (n.order, n.label))


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """"12 s ago" style; "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    secs = max(0, int(((now or datetime.now(timezone.utc)) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit} ago"
    return f"{secs} s ago"


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


templates.env.filters.update(ago=ago, pct=pct, num=num)
templates.env.globals.update(sparkline=charts.sparkline_svg, line_chart=charts.line_chart_svg,
                             bars=charts.bars_svg, app_version=__version__)


def render(request: Request, template: str, principal: Principal | None, *, active: str = "",
           status_code: int = 200, **context: Any) -> HTMLResponse:
    role = principal.role if principal else None

    def can(needed: str) -> bool:
        return role is not None and role_allows(role, needed)

    nav = [n for n in _NAV if can(n.role)] if principal else []
    ctx = {"principal": principal, "role": role, "can": can, "nav": nav, "active": active, **context}
    return templates.TemplateResponse(request, template, ctx, status_code=status_code)
