"""Watchers: facts that are a *duration* or an *aggregate*, turned into webhook events.

Each runs on the webhook worker's thread (lease holder only), reads a bounded set of rows,
remembers what it announced in ``WebhookWatch`` and enqueues like any other fact:

* ``watch_offline`` — devices offline for longer than ``webhook_offline_after_s``: one
  ``device.offline`` per offline spell (keyed by the device's ``last_seen``).
* ``watch_drift`` — per model version running as control, the native drift score; one
  ``drift.breach`` when it reaches ``webhook_drift_threshold``, re-armed once it is back under.
* ``watch_captures`` — new ``shadow_event`` rows (what ``shadow_index.record_event``
  wrote) since the last pass, one ``capture.new`` per (control, candidate) pair with the
  count: batched per ``webhook_capture_batch_s``, nothing added to the ingest path.

``emit=False`` (no receiver subscribes) reads nothing, except that the capture cursor moves
so a receiver added later is not sent a backlog.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from ..settings import CloudSettings
from ..shadow_index import ShadowEvent
from ..tables import Device, ModelVersion, SlotAssignment
from .service import enqueue
from .tables import WebhookWatch
from .worker import set_watch, watch_value


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _watched(session: Session, keys: list[str], chunk: int = 1000) -> dict[str, str]:
    """key → value of the ``WebhookWatch`` rows among ``keys``, read ``chunk`` keys at a time."""
    out: dict[str, str] = {}
    for lo in range(0, len(keys), chunk):
        out.update(session.execute(sa_select(col(WebhookWatch.key), col(WebhookWatch.value))
                                   .where(col(WebhookWatch.key).in_(keys[lo:lo + chunk]))).tuples().all())
    return out


def watch_offline(session: Session, settings: CloudSettings, now: datetime, *, emit: bool = True) -> list[str]:
    if not emit:
        return []
    cutoff = now - timedelta(seconds=settings.webhook_offline_after_s)
    rows = session.exec(select(Device).where(Device.online == False)  # noqa: E712  # ix_device_unheard (0021)
                        .where(col(Device.revoked_at).is_(None)).where(col(Device.last_seen).is_not(None))
                        .where(col(Device.last_seen) < cutoff)).all()
    announced = _watched(session, [f"offline:{d.id}" for d in rows])  # one read per chunk, not one per device
    out = []
    for d in rows:
        assert d.last_seen is not None
        key, seen = f"offline:{d.id}", _aware(d.last_seen).isoformat()
        if announced.get(key) == seen:
            continue
        enqueue(session, "device.offline", {
            "device": d.id, "hardware_id": d.hardware_id, "tags": dict(d.tags), "last_seen": seen,
            "offline_for_s": round((now - _aware(d.last_seen)).total_seconds(), 1),
            "threshold_s": settings.webhook_offline_after_s})
        set_watch(session, key, seen)
        out.append(d.id)
    return out


def watch_drift(session: Session, settings: CloudSettings, now: datetime, *, emit: bool = True) -> list[str]:
    if not emit:
        return []
    from ..drift import DriftConfig, drift_score

    versions = session.exec(select(ModelVersion).where(
        col(ModelVersion.id).in_(select(SlotAssignment.model_version_id).where(SlotAssignment.slot == "control")))).all()
    config = DriftConfig(engine="native", threshold=settings.webhook_drift_threshold)
    out = []
    for mv in versions:
        label = f"{mv.name}:{mv.version}"
        result = drift_score(session, label, now, config=config)
        key = f"drift:{label}"[:256]
        is_open = watch_value(session, key) == "open"
        if result.status != "ok" or result.score is None:
            continue
        if result.drifted and not is_open:
            enqueue(session, "drift.breach", {
                "model": label, "score": round(result.score, 4), "threshold": config.threshold,
                "columns": [{"column": c.column, "score": round(c.score, 4)} for c in result.columns],
                "current_frames": result.current.frames, "reference_frames": result.reference.frames})
            set_watch(session, key, "open")
            out.append(label)
        elif not result.drifted and is_open:
            set_watch(session, key, "closed")
    return out


def watch_captures(session: Session, settings: CloudSettings, now: datetime, *, emit: bool = True) -> int:
    key = "capture:cursor"
    cursor_text = watch_value(session, key)
    top = session.exec(select(func.max(ShadowEvent.id))).one() or 0
    if cursor_text is None or not emit:
        set_watch(session, key, str(top))  # start at "now": no backlog
        return 0
    cursor = int(cursor_text)
    if top <= cursor:
        return 0
    E = ShadowEvent
    pair = (col(E.control_name), col(E.control_version), col(E.candidate_name), col(E.candidate_version))
    rows = session.execute(
        sa_select(*pair, func.count(), func.count(func.distinct(col(E.device_id))), func.min(col(E.ts)),
                  func.max(col(E.ts)))
        .where(col(E.id) > cursor).where(col(E.id) <= top).group_by(*pair)).all()
    for cn, cv, kn, kv, count, devices, first, last in rows:
        enqueue(session, "capture.new", {
            "control": f"{cn}:{cv}" if cn else None, "candidate": f"{kn}:{kv}" if kn else None,
            "count": int(count), "devices": int(devices),
            "first": _aware(first).isoformat() if first else None, "last": _aware(last).isoformat() if last else None,
            "review_url": "/ui/review"})
    set_watch(session, key, str(top))
    return len(rows)
