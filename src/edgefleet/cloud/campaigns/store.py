"""Capture campaigns on the controller: start, stop, what each device is told, the quota.

Flow::

    start(...)                 operator: checks the selector and condition (caret errors),
                               stores the campaign, bumps the selected devices' generation
    specs_for(session, dev)    Controller.device_settings: the running campaigns that select
                               ``dev``, as ``CampaignSpec``s for its signed settings
    record(session, event)     every event (MQTT or upload) naming a campaign: counted once
                               per (device, event); at the fleet quota the campaign completes
                               and its devices' generation is bumped, so each one drops it
    stop / expire              an operator's stop; ``--until`` passed

Progress is counted from what devices reported, each device's count capped at the
campaign's per-device quota (a device cannot fill the quota beyond its share). In-flight
captures when the quota is met are bounded by that per-device quota.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from ...protocols import Embedding, Event
from ...protocols.campaigns import (
    CAMPAIGN_NAME_PATTERN,
    LEGACY_VECTOR_DIM,
    MAX_L2_THRESHOLD,
    MAX_SETTINGS_EMBEDDING_BYTES,
    CampaignSpec,
    Like,
    Metric,
)
from ...protocols.conditions import ConditionError, parse_condition
from ...protocols.embedding import pack
from ..devices.fleet import DesiredPublisher
from ..errors import BadRequest, Conflict, NotFound
from ..rollout.errors import SpecError
from ..rollout.selector import DeviceInfo, Selector, parse_selector
from ..tables import Device, utcnow
from .tables import COMPLETED, ENDED, RUNNING, STOPPED, Campaign, CampaignCapture

log = logging.getLogger(__name__)

MAX_RUNNING = 16  # a device carries at most this many (DeviceSettings.campaigns)


@dataclass(frozen=True)
class StartRequest:
    """What ``fleet campaign start`` / ``POST /api/v1/campaigns`` asks for (already typed)."""

    name: str
    select: str = "all"
    when: str | None = None
    like_event: str | None = None
    threshold: float | None = None
    metric: Metric = "cosine"
    like_embedding: Embedding | None = None  # the reference itself, instead of a capture's
    quota: int = 100
    per_device: int | None = None
    until_s: float | None = None
    pre_seconds: float = 1.0
    post_seconds: float = 0.5
    frames_only: bool = False
    priority: int = 25
    max_per_minute: int = 30


def _aware(ts: datetime | None) -> datetime | None:
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


def _info(device: Device) -> DeviceInfo:
    return DeviceInfo(device_id=device.id, hardware_id=device.hardware_id, tags=dict(device.tags or {}))


def _selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SpecError as exc:
        raise BadRequest(f"--select: {exc}") from None


def like_embedding(session: Session, event_id: str) -> Embedding:
    """The embedding of a reviewed capture: the control model's manifest-named embedding in its
    record (with the tensor name and the model digest), else its class scores (output vector).

    Raises:
        NotFound: no capture with that event id. BadRequest: it carries neither.
    """
    from ..shadow_index import ShadowEvent

    row = session.exec(select(ShadowEvent).where(ShadowEvent.event_id == event_id)).first()
    if row is None:
        raise NotFound(f"no capture with event id {event_id!r}")
    record = row.record or {}
    control = record.get("control") or {}
    if record.get("embedding"):
        try:
            emb = Embedding.model_validate(record["embedding"])
        except ValidationError as exc:  # checked at ingest; a row written by hand or an older schema
            raise BadRequest(f"capture {event_id}: its embedding is not usable ({exc.errors()[0]['msg']})") from None
        if emb.model_digest is None:
            digest = (control.get("model") or {}).get("digest")
            emb = emb.model_copy(update={"model_digest": digest}) if isinstance(digest, str) else emb
        return emb
    scores = control.get("scores") or []
    vector = [float(v) for v in scores if isinstance(v, (int, float)) and not isinstance(v, bool)]
    try:
        # class scores: the same space for every model with these labels, so no model digest
        return pack(vector, dtype="float32")
    except ValueError:
        raise BadRequest(f"capture {event_id} carries no embedding or output vector of the control model "
                         "to compare with") from None


def like_vector(session: Session, event_id: str) -> list[float]:
    """The reference vector ``--like EVENT_ID`` sends (``like_embedding``'s values)."""
    return like_embedding(session, event_id).values()


def make_like(emb: Embedding, *, threshold: float, metric: Metric, source_event: str = "") -> Like:
    """The campaign's ``like``: the compact embedding, plus the plain ``vector`` for agents that
    predate it where it is as short as the old scores vectors were (cosine only: they knew no other).

    Raises:
        BadRequest: a threshold outside its metric's bounds.
    """
    if metric == "cosine" and not 0.0 < threshold <= 2.0:
        raise BadRequest(f"--threshold {threshold}: a cosine distance lies in (0, 2]")
    if metric == "l2" and not 0.0 < threshold <= MAX_L2_THRESHOLD:
        raise BadRequest(f"--threshold {threshold}: an l2 distance threshold lies in (0, {MAX_L2_THRESHOLD:g}]")
    # 7 significant digits give back the decimal a float32 was made from (0.1, not 0.10000000149)
    legacy = [float(f"{v:.7g}") for v in emb.values()] if emb.dim <= LEGACY_VECTOR_DIM and metric == "cosine" else None
    return Like(embedding=emb, vector=legacy, metric=metric, threshold=threshold, source_event=source_event)


def start(session: Session, publisher: DesiredPublisher | None, req: StartRequest, *, by: str,
          now: datetime | None = None) -> Campaign:
    """Check, store and send a new campaign.

    Raises:
        BadRequest: a selector or condition that does not parse (the message points at it),
            neither ``when`` nor ``like``, or bounds that do not hold together.
        Conflict: a campaign of that name exists, or too many are running.
        NotFound: ``like_event`` names no capture.
    """
    import re

    now = now or utcnow()
    if not re.match(CAMPAIGN_NAME_PATTERN, req.name):
        raise BadRequest(f"campaign name {req.name!r}: lower-case letters, digits, '_', '.', '-' (at most 63)")
    selector = _selector(req.select)
    condition = None
    if req.when is not None:
        try:
            condition = parse_condition(req.when)
        except ConditionError as exc:
            raise BadRequest(f"--when: {exc}") from None
    like: Like | None = None
    if req.like_event is not None and req.like_embedding is not None:
        raise BadRequest("--like takes an event id or an embedding, not both")
    if req.like_event is not None or req.like_embedding is not None:
        if req.threshold is None:
            raise BadRequest("--like needs --threshold (cosine distance, e.g. 0.05; or an l2 distance with --metric l2)")
        emb = req.like_embedding or like_embedding(session, req.like_event or "")
        like = make_like(emb, threshold=req.threshold, metric=req.metric, source_event=req.like_event or "")
    elif req.threshold is not None:
        raise BadRequest("--threshold goes with --like EVENT_ID")
    if condition is None and like is None:
        raise BadRequest("a campaign needs --when CONDITION or --like EVENT_ID (or both)")
    per_device = req.per_device if req.per_device is not None else req.quota
    if per_device > req.quota:
        raise BadRequest(f"--per-device ({per_device}) cannot exceed --quota ({req.quota})")
    if session.get(Campaign, req.name) is not None:
        raise Conflict(f"a campaign named {req.name!r} exists; pick another name")
    running = session.exec(select(func.count()).select_from(Campaign).where(Campaign.state == RUNNING)).one()
    if int(running) >= MAX_RUNNING:
        raise Conflict(f"{MAX_RUNNING} campaigns are running already; stop one first")
    if like is not None:
        _check_settings_room(session, like)
    row = Campaign(
        name=req.name, selector=str(selector), condition_text=req.when or "",
        condition=condition.to_json() if condition else None,
        like=like.model_dump(mode="json") if like else None, quota=req.quota, per_device_quota=per_device,
        max_per_minute=req.max_per_minute, priority=req.priority, pre_seconds=req.pre_seconds,
        post_seconds=req.post_seconds, frames_only=req.frames_only, created_at=now, created_by=by,
        ends_at=now + timedelta(seconds=req.until_s) if req.until_s else None,
    )
    spec(row)  # the wire form must hold (bounds the schema checks on the device too)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a campaign named {req.name!r} exists; pick another name") from None
    n = _republish(session, publisher, [row])
    log.info("campaign %s started by %s: select %s, when %r%s, quota %d (%d per device); sent to %d devices",
             row.name, by, row.selector, row.condition_text, " like " + req.like_event if req.like_event else "",
             row.quota, row.per_device_quota, n)
    return row


def _check_settings_room(session: Session, like: Like) -> None:
    """The like vectors of every running campaign and this one must fit one device's signed
    settings (``MAX_SETTINGS_EMBEDDING_BYTES``), whichever devices they select."""
    rows = session.exec(select(Campaign.like).where(Campaign.state == RUNNING)).all()
    used = 0
    for raw in rows:
        if raw:
            try:
                used += Like.model_validate(raw).nbytes
            except ValidationError:
                continue
    if used + like.nbytes > MAX_SETTINGS_EMBEDDING_BYTES:
        raise Conflict(f"the running campaigns' like vectors take {used} bytes; this one's {like.nbytes} would pass "
                       f"the {MAX_SETTINGS_EMBEDDING_BYTES} a device's signed settings carry — stop one first")


def spec(row: Campaign) -> CampaignSpec:
    """The campaign as devices get it."""
    return CampaignSpec(
        name=row.name, condition=row.condition, condition_text=row.condition_text,
        like=Like.model_validate(row.like) if row.like else None, priority=row.priority,
        per_device_quota=row.per_device_quota, max_per_minute=row.max_per_minute, pre_seconds=row.pre_seconds,
        post_seconds=row.post_seconds, frames_only=row.frames_only, ends_at=_aware(row.ends_at),
    )


def running(session: Session) -> list[Campaign]:
    return list(session.exec(select(Campaign).where(Campaign.state == RUNNING).order_by(col(Campaign.name))).all())


def specs_for(session: Session, device: Device, now: datetime | None = None) -> list[CampaignSpec]:
    """The running campaigns that select ``device`` (for its signed settings)."""
    return load_running(session, now).specs_for(device)


@dataclass(frozen=True)
class RunningCampaigns:
    """The running, unexpired campaigns, read and parsed once for a batch of devices
    (``load_running``); ``specs_for(device)`` is then pure. Never kept across batches."""

    entries: tuple[tuple[Selector, CampaignSpec], ...]

    def specs_for(self, device: Device) -> list[CampaignSpec]:
        info = _info(device)
        return [s for selector, s in self.entries if selector.matches(info)]


def load_running(session: Session, now: datetime | None = None) -> RunningCampaigns:
    now = now or utcnow()
    entries: list[tuple[Selector, CampaignSpec]] = []
    for row in running(session):
        ends = _aware(row.ends_at)
        if ends is not None and ends <= now:
            continue
        try:
            entries.append((parse_selector(row.selector), spec(row)))
        except (SpecError, ValueError) as exc:  # stored by a newer controller
            log.error("campaign %s is not usable by this controller (%s); not sent", row.name, exc)
    return RunningCampaigns(tuple(entries))


def selected_devices(session: Session, rows: Iterable[Campaign]) -> list[Device]:
    selectors = [parse_selector(r.selector) for r in rows]
    devices = session.exec(select(Device).where(col(Device.revoked_at).is_(None))).all()
    return [d for d in devices if any(s.matches(_info(d)) for s in selectors)]


def _republish(session: Session, publisher: DesiredPublisher | None, rows: list[Campaign]) -> int:
    """Bump the generation of every device the campaigns select and send each its settings."""
    devices = selected_devices(session, rows)
    for d in devices:
        d.desired_generation += 1
        session.add(d)
    session.commit()
    if publisher is not None:
        for d in devices:
            publisher.publish_device(session, d)
    return len(devices)


def _finish(session: Session, publisher: DesiredPublisher | None, name: str, state: str, by: str,
            now: datetime | None = None) -> bool:
    """Move a running campaign to ``state`` (once, whichever replica gets there first)."""
    result = session.execute(
        update(Campaign).where(col(Campaign.name) == name).where(col(Campaign.state) == RUNNING)
        .values(state=state, finished_at=now or utcnow(), finished_by=by)
    )
    session.commit()
    if getattr(result, "rowcount", 0) != 1:
        return False
    row = session.get(Campaign, name)
    assert row is not None
    session.refresh(row)
    n = _republish(session, publisher, [row])
    log.info("campaign %s %s (%s); %d devices told to stop", name, state, by, n)
    return True


def stop(session: Session, publisher: DesiredPublisher | None, name: str, *, by: str) -> Campaign:
    """Stop a running campaign. Raises NotFound, or Conflict when it is already over."""
    row = session.get(Campaign, name)
    if row is None:
        raise NotFound(f"no campaign named {name!r}")
    if row.state != RUNNING or not _finish(session, publisher, name, STOPPED, by):
        session.refresh(row)
        raise Conflict(f"campaign {name!r} is {row.state} already")
    session.refresh(row)
    return row


def expire(session: Session, publisher: DesiredPublisher | None, now: datetime | None = None) -> list[str]:
    """End the running campaigns whose ``--until`` passed; returns their names."""
    now = now or utcnow()
    ended = []
    for row in running(session):
        ends = _aware(row.ends_at)
        if ends is not None and ends <= now and _finish(session, publisher, row.name, ENDED, "until", now):
            ended.append(row.name)
    return ended


def counted(session: Session, row: Campaign) -> dict[str, int]:
    """Captures per device, each capped at the per-device quota."""
    rows = session.exec(
        select(CampaignCapture.device_id, func.count()).where(CampaignCapture.campaign == row.name)
        .group_by(col(CampaignCapture.device_id))
    ).all()
    return {device: min(int(n), row.per_device_quota) for device, n in rows}


def record(session: Session, publisher: DesiredPublisher | None, event: Event) -> bool:
    """Count one capture for its campaign (idempotent per device and event); True when this
    capture met the fleet quota and the campaign completed."""
    name = event.campaign
    if name is None:
        return False
    row = session.get(Campaign, name)
    if row is None:
        log.info("device %s: capture %s names campaign %s, which this controller does not know",
                 event.device_id, event.event_id, name)
        return False
    device = session.get(Device, event.device_id)
    if device is None or not parse_selector(row.selector).matches(_info(device)):
        log.warning("device %s: capture %s for campaign %s, which does not select it: not counted",
                    event.device_id, event.event_id, name)
        return False
    session.add(CampaignCapture(campaign=name, device_id=event.device_id, event_id=event.event_id))
    try:
        session.commit()
    except IntegrityError:  # the same capture by the other path (MQTT and upload)
        session.rollback()
        return False
    if row.state != RUNNING:
        return False
    total = sum(counted(session, row).values())
    if total >= row.quota:
        return _finish(session, publisher, name, COMPLETED, f"quota of {row.quota} met")
    return False


# ----- views -----


@dataclass
class Progress:
    campaign: Campaign
    captured: int
    devices: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)  # hardware profile -> devices, captured


def progress(session: Session, row: Campaign) -> Progress:
    per_device = counted(session, row)
    groups: dict[str, dict[str, int]] = {}
    selected = selected_devices(session, [row])
    seen = Counter[str]()
    for d in selected:
        g = groups.setdefault(d.hardware_id, {"devices": 0, "captured": 0})
        g["devices"] += 1
        g["captured"] += per_device.get(d.id, 0)
        seen[d.id] += 1
    for device_id, n in per_device.items():  # devices no longer selected (tags changed) still counted
        if device_id not in seen:
            g = groups.setdefault("(no longer selected)", {"devices": 0, "captured": 0})
            g["devices"] += 1
            g["captured"] += n
    return Progress(row, sum(per_device.values()), per_device, groups)


def get(session: Session, name: str) -> Campaign:
    row = session.get(Campaign, name)
    if row is None:
        raise NotFound(f"no campaign named {name!r}")
    return row


def list_all(session: Session, state: str | None = None) -> list[Campaign]:
    q = select(Campaign).order_by(col(Campaign.created_at).desc(), col(Campaign.name))
    if state is not None:
        q = q.where(Campaign.state == state)
    return list(session.exec(q).all())


def _like_public(raw: dict[str, Any]) -> dict[str, Any]:
    emb = raw.get("embedding") or {}
    vector = raw.get("vector") or []
    return {"event_id": raw.get("source_event") or None, "threshold": raw.get("threshold"),
            "metric": raw.get("metric") or "cosine", "dim": emb.get("dim") or len(vector) or None,
            "output": emb.get("output") or None, "model_digest": emb.get("model_digest")}


def skipped(session: Session, row: Campaign) -> dict[str, str]:
    """Selected devices that do not compare this campaign's embedding, and why: their control
    model (as last reported) is not the one the embedding came from. Empty without one."""
    like = row.like or {}
    want = (like.get("embedding") or {}).get("model_digest")
    if not want:
        return {}
    out: dict[str, str] = {}
    for d in selected_devices(session, [row]):
        installed = (((d.reported or {}).get("slots") or {}).get("control") or {}).get("installed") or {}
        have = installed.get("digest")
        if have != want:
            what = f"{installed.get('name')}:{installed.get('version')} ({str(have)[:12]})" if have else "no control model"
            out[d.id] = f"control model {what} is not the model the embedding came from ({want[:12]}); like not compared"
    return out


def as_dict(row: Campaign) -> dict[str, Any]:
    return {
        "name": row.name, "state": row.state, "select": row.selector, "when": row.condition_text or None,
        "like": _like_public(row.like) if row.like else None,
        "quota": row.quota, "per_device": row.per_device_quota, "max_per_minute": row.max_per_minute,
        "priority": row.priority, "clip": [row.pre_seconds, row.post_seconds], "frames_only": row.frames_only,
        "created_at": _aware(row.created_at), "created_by": row.created_by, "ends_at": _aware(row.ends_at),
        "finished_at": _aware(row.finished_at), "finished_by": row.finished_by or None,
    }
