"""Can the controller hear the fleet, and which devices has it not heard from?

Two small pieces the controller's loop drives:

* ``IngestWatch`` follows the controller's *own* ingest (broker connection, the bridge
  consuming, the database taking writes). While it is unhealthy, and for a grace period
  after it recovers, silence proves nothing about a device: ``hold_reason`` says so, and
  the rollout reconciler then counts no device timeout (the rollout shows *held:
  controller cannot hear the fleet* and resumes by itself). ``heard_from`` is the moment
  since which the controller could hear devices (start, or the end of the last outage).
* ``mark_unheard`` turns online devices that have not been heard (``last_seen``: status,
  reported, telemetry) for ``window_s`` into offline, even when no last will arrived; a
  device heard again is online again (``ingest.apply_*``). It reads only rows past the
  cutoff, never the whole fleet.

Times are seconds since the epoch (``now`` passed in).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from ..tables import Device

log = logging.getLogger(__name__)

HOLD_PREFIX = "held: controller cannot hear the fleet"


class IngestWatch:
    """Args:
        started_at: when the controller started (it has heard nothing before that).
    """

    def __init__(self, started_at: float):
        self.started_at = started_at
        self.unhealthy_since: float | None = None
        self.reason: str | None = None
        self.recovered_at: float | None = None
        self.last_reason: str | None = None  # the reason of the last outage (for the grace message)
        self.outages = 0
        self._lock = threading.Lock()

    def observe(self, healthy: bool, reason: str | None, now: float) -> None:
        with self._lock:
            if not healthy:
                if self.unhealthy_since is None:
                    self.unhealthy_since, self.outages = now, self.outages + 1
                    log.warning("%s: %s", HOLD_PREFIX, reason)
                self.reason = self.last_reason = reason or "ingest unhealthy"
            elif self.unhealthy_since is not None:
                log.warning("controller hears the fleet again after %.1fs (%s)", now - self.unhealthy_since, self.reason)
                self.unhealthy_since, self.reason, self.recovered_at = None, None, now

    @property
    def healthy(self) -> bool:
        return self.unhealthy_since is None

    def heard_from(self) -> float:
        """Since when the controller could hear devices without a break."""
        with self._lock:
            return max(self.started_at, self.recovered_at or 0.0)

    def hold_reason(self, now: float, grace_s: float) -> str | None:
        """Why device silence must not count now (None: it counts)."""
        with self._lock:
            if self.unhealthy_since is not None:
                return f"{HOLD_PREFIX} ({self.reason})"
            if self.recovered_at is not None and now - self.recovered_at < grace_s:
                until = datetime.fromtimestamp(self.recovered_at + grace_s, timezone.utc).strftime("%H:%M:%SZ")
                return f"{HOLD_PREFIX} (recovering from: {self.last_reason}; device timeouts count again at {until})"
            return None


def mark_unheard(session: Session, now: float, window_s: float, *, heard_from: float) -> list[str]:
    """Online devices not heard for ``window_s`` become offline; returns their ids (committed).

    Nothing is marked until the controller has been able to hear devices for ``window_s``
    (``heard_from``: its start or the end of its last ingest outage).
    """
    if now - heard_from < window_s:
        return []
    cutoff = datetime.fromtimestamp(now - window_s, timezone.utc)
    online = col(Device.online).is_(True)
    rows = session.exec(  # one index range per OR term (ix_device_unheard, migration 0021): only those due
        select(Device).where(col(Device.revoked_at).is_(None))
        .where(or_(and_(online, col(Device.last_seen) < cutoff), and_(online, col(Device.last_seen).is_(None))))
    ).all()
    marked = []
    for device in rows:
        seen = device.last_seen
        if seen is not None and seen.tzinfo is None:
            seen = seen.replace(tzinfo=timezone.utc)
        if seen is not None and seen >= cutoff:  # heard meanwhile (another thread committed)
            continue
        device.online = False
        session.add(device)
        marked.append(device.id)
        ago = "never" if seen is None else f"{(datetime.fromtimestamp(now, timezone.utc) - seen).total_seconds():.0f}s ago"
        log.info("device %s not heard for %gs (last %s): offline", device.id, window_s, ago)
    if marked:
        session.commit()
    return marked


__all__ = ["HOLD_PREFIX", "IngestWatch", "mark_unheard"]
