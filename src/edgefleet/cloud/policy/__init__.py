"""Policies scoped to a selector or a rollout: capture, network, maintenance windows.

Public surface: ``resolve`` / ``Scope`` / ``Resolved`` (pure, ``resolve.py``: most specific
wins, with the source of each field), ``resolve_for`` (one device, from the database), ``load`` → ``Policies`` (read
once per batch, resolved per device in memory),
``ScopedPolicy`` and ``put``/``remove``/``set_fleet_windows`` (``store.py``), and the input
checks (``validate.py``).
"""

from .resolve import FLEET, Resolved, Scope, matching, resolve
from .store import (
           Policies,
           ScopedPolicy,
           fleet_windows,
           load,
           put,
           release_finished,
           remove,
           resolve_for,
           scopes,
           set_fleet_windows,
)

__all__ = ["FLEET", "Policies", "Resolved", "Scope", "ScopedPolicy", "fleet_windows", "load", "matching", "put", "release_finished", "remove",
           "resolve",
           "resolve_for", "scopes", "set_fleet_windows"]
