"""Freshness: is what a device *signed* in step with what the director signed for it?

A device's verified ``reported`` says which director metadata it holds
(``director.version``) and which generation that metadata named (``generation``). It
*lags* while either is below what the controller signed for it (``Device.director_version``,
``desired_generation``): normal for the seconds a change takes to arrive, a problem when
it lasts — a device behind a man-in-the-middle that serves an old, validly signed
timestamp keeps running and reporting, but never learns of a change. Once the lag lasts
longer than ``[controller] stale_after_s`` the device is *stale*, with the reason (and the
device's own word from ``update_blocked``): the API, ``fleet device ls``, the fleet page
and the metrics show it, and rollouts never count it healthy.

Data flow: ``update(device, now)`` after every signature/publish and every verified
``reported`` opens or closes the lag (``lagging_since``); ``mark_stale(session, now,
stale_after_s)`` on the controller's loop turns lags older than the threshold into
``stale_since``/``stale_reason``, reading only rows that lag (never the whole fleet).
``lag_reason`` is pure.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlmodel import Session, col, select

from .. import webhooks
from ..tables import Device

log = logging.getLogger(__name__)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def held_director_version(device: Device) -> int | None:
    """The director version the device's last verified report says it holds (None: not said)."""
    held = (device.reported or {}).get("director")
    version = held.get("version") if isinstance(held, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def update_blocked(device: Device) -> dict[str, Any] | None:
    """The device's own reason why an update did not happen, from its last verified report."""
    blocked = (device.reported or {}).get("update_blocked")
    return blocked if isinstance(blocked, dict) and blocked.get("code") else None


def lag_reason(device: Device) -> str | None:
    """Why the device's signed state lags what the director signed for it; None when in step.

    A device that never reported, or is revoked, does not lag (there is nothing to compare).
    A report without director metadata (an agent that never verified any) is judged on its
    generation alone.
    """
    if device.reported is None or device.revoked_at is not None:
        return None
    reasons = []
    held = held_director_version(device)
    if held is not None and held < device.director_version:
        reasons.append(f"holds director metadata v{held}, the director signed v{device.director_version}")
    generation = device.reported_generation
    if generation is None or generation < device.desired_generation:
        reasons.append(f"reports generation {generation}, desired {device.desired_generation}")
    if not reasons:
        return None
    blocked = update_blocked(device)
    if blocked is not None:
        reasons.append(f"device says {blocked['code']}: {str(blocked.get('reason') or '')[:300]}")
    return "; ".join(reasons)


def is_stale(device: Device) -> bool:
    return device.stale_since is not None


def update(device: Device, now: datetime | None = None) -> bool:
    """Open or close the device's lag after its signed or reported state changed.
    Returns True when a field changed (the caller commits)."""
    now = now or datetime.now(timezone.utc)
    reason = lag_reason(device)
    before = (device.lagging_since, device.stale_since, device.stale_reason)
    if reason is None:
        if device.stale_since is not None:
            log.info("device %s is fresh again", device.id)
        device.lagging_since = device.stale_since = device.stale_reason = None
    elif device.lagging_since is None:
        device.lagging_since = now
    elif device.stale_since is not None:
        device.stale_reason = reason[:1024]
    return (device.lagging_since, device.stale_since, device.stale_reason) != before


def mark_stale(session: Session, now: datetime, stale_after_s: float) -> list[str]:
    """Devices whose lag began more than ``stale_after_s`` ago become stale; a row whose lag
    has meanwhile closed (a report committed by another thread) is cleared instead.
    Returns the ids newly marked stale."""
    cutoff = now - timedelta(seconds=stale_after_s)
    rows = session.exec(
        select(Device).where(col(Device.stale_since).is_(None)).where(col(Device.lagging_since).is_not(None))
        .where(col(Device.lagging_since) <= cutoff)  # only those due (ix_device_lag_due, migration 0021)
    ).all()
    marked = []
    for device in rows:
        if device.lagging_since is None or _aware(device.lagging_since) > cutoff:
            continue
        reason = lag_reason(device)
        if reason is None:
            device.lagging_since = None
        else:
            device.stale_since, device.stale_reason = now, reason[:1024]
            marked.append(device.id)
            webhooks.enqueue(session, "device.stale", {  # same transaction as the fact
                "device": device.id, "hardware_id": device.hardware_id, "reason": reason[:1024],
                "lagging_since": _aware(device.lagging_since).isoformat(), "stale_after_s": stale_after_s})
            log.warning("device %s is stale: %s (for more than %gs)", device.id, reason, stale_after_s)
        session.add(device)
    if rows:
        session.commit()
    return marked


def count_stale(session: Session) -> int:
    rows = session.exec(
        select(Device.id).where(col(Device.stale_since).is_not(None)).where(col(Device.revoked_at).is_(None))
    ).all()
    return len(rows)
