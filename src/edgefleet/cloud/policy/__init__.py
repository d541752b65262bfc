"""Policies scoped to a selector or a rollout: capture, network, maintenance windows.

Public surface: ``resolve`` / ``Scope`` / ``Resolved`` (pure, ``resolve.py``: most specific
wins, with the source of each field), ``resolve_for`` (one device, from the database),
``ScopedPolicy`` and ``put``/``remove``/``set_fleet_windows`` (``store.py``), and the input
checks (``validate.py``).
"""

from .resolve import FLEET, Resolved, Scope, matching, resolve
from .store import (
           ScopedPolicy,
           fleet_windows,
           put,
           release_finished,
           remove,
           resolve_for,
           scopes,
           set_fleet_windows,
)

__all__ = ["FLEET", "Resolved", "Scope", "ScopedPolicy", "fleet_windows", "matching", "put", "release_finished", "remove",
           "resolve",
           "resolve_for", "scopes", "set_fleet_windows"]
