"""The navigation bar: one ``NavItem`` per page module, shown only to roles that may see it.

EXTENSION POINT — pages other sessions add (docs/ui.md): put a module in ``web/pages/``
with ``router`` and ``NAV = NavItem(...)``; it is found automatically. Reserved orders:
"""

from __future__ import annotations

from dataclasses import dataclass

NAV_ORDER = {
    "fleet": 10,
    "rollouts": 20,   # EXTENSION POINT: web/pages/rollouts.py (staged rollouts session)
    "review": 30,     # EXTENSION POINT: web/pages/review.py (shadow capture / review session)
    "confusion": 40,  # EXTENSION POINT: web/pages/confusion.py (confusion matrix per model pair)
    "models": 50,
    "tokens": 90,
}


@dataclass(frozen=True)
class NavItem:
    key: str  # also the ``active`` name templates pass to highlight the item
    label: str
    path: str
    role: str = "viewer"  # the lowest role that sees the item
    order: int = 100
