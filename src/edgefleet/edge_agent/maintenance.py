"""The device side of maintenance windows: may a staged model be switched to now?

The signed ``MaintenancePolicy`` (``DeviceSettings.maintenance``) comes with the device's
settings; ``WindowGate.wait(policy)`` answers None (switch now: no windows, or one is open)
or a ``WindowWait`` with the next window start. The clock and the device's own time zone
are passed in (tests simulate time); by default they are the system clock and the zone of
``$TZ`` or ``/etc/localtime``. The updater downloads and verifies whenever the network
policy allows and asks the gate only before the switch (``updater.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..protocols.messages import utcnow
from ..protocols.windows import MaintenancePolicy, UnknownZone, is_open, next_open

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def device_zone(env: dict[str, str] | None = None, localtime: Path = Path("/etc/localtime")) -> tzinfo:
    """The device's own zone: ``$TZ`` (an IANA name), else ``/etc/localtime``, else UTC."""
    name = (os.environ if env is None else env).get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            log.warning("TZ=%r is not a time zone known here; using /etc/localtime", name)
    try:
        with localtime.open("rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


@dataclass(frozen=True)
class WindowWait:
    """Why a switch waits: the next window start (None: none known, see ``reason``)."""

    opens_at: datetime | None
    reason: str


class WindowGate:
    def __init__(self, clock: Clock = utcnow, zone: tzinfo | None = None):
        self.clock = clock
        self.zone = zone if zone is not None else device_zone()

    def now(self) -> datetime:
        return self.clock()

    def wait(self, policy: MaintenancePolicy) -> WindowWait | None:
        """None when the device may switch now, else when it may next."""
        if not policy.windows:
            return None
        now = self.clock()
        try:
            if is_open(policy, now, self.zone):
                return None
            opens = next_open(policy, now, self.zone)
        except UnknownZone as exc:  # the controller checks names; an older tz database here may not know one
            return WindowWait(None, f"{exc} on this device: no window can open; waiting for another policy")
        when = opens.isoformat(timespec="minutes") if opens else "never"
        return WindowWait(opens, f"outside the maintenance window; next window opens at {when}")
