"""Shadow results on the controller: capture events, stored clips, per-pair agreement.

What flows in, and from where:

* ``record_event(session, event)`` — a ``fleet.event/1`` record from MQTT ``events`` (bridge
  thread) or inside an upload (``record_clip``). Idempotent on (device, event_id): the
  same capture arriving by both paths is one row.
* ``record_clip(session, stored)`` — the upload endpoint's ``on_clip_stored``: a ``Clip``
  row (upsert on ``clip_id``) linked to its event row.
* ``record_pair_stats(session, telemetry)`` — every telemetry message with shadow stats:
  one cumulative row per (device, control, candidate), folded with ``merge_shadow_stats``.

What flows out: ``list_pairs`` / ``pair_detail`` (agreement, confusion, per device, per
class), ``list_events`` (filters for review), ``get_clip`` and ``pair_agreement`` — the
function the rollout gate calls::

    agreement, frames = pair_agreement(session, "digits:1.0", "digits:2.0", device_ids=[...])

Model references are ``NAME:VERSION`` strings (first ``:`` splits).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from ..protocols import Event, ShadowStats, Telemetry
from ..shadow import merge_into_wire, merge_shadow_stats
from .errors import BadRequest

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ----- tables (migration 0003) -----


class ShadowEvent(SQLModel, table=True):
    """One capture reported by a device (trigger, both outputs), by MQTT and/or upload."""

    __tablename__ = "shadow_event"
    __table_args__ = (
        UniqueConstraint("device_id", "event_id", name="uq_shadow_event_device_event"),
        Index("ix_shadow_event_pair", "control_name", "control_version", "candidate_name", "candidate_version", "ts"),
        Index("ix_shadow_event_ts", "ts"),
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=128)
    event_id: str = Field(max_length=64)
    ts: datetime
    received_at: datetime = Field(default_factory=_utcnow)
    trigger: str = Field(max_length=32)
    priority: int = 0
    control_name: str | None = Field(default=None, max_length=128)
    control_version: str | None = Field(default=None, max_length=64)
    control_digest: str | None = Field(default=None, max_length=64)
    control_label: str | None = Field(default=None, max_length=128)
    control_score: float | None = None
    candidate_name: str | None = Field(default=None, max_length=128)
    candidate_version: str | None = Field(default=None, max_length=64)
    candidate_digest: str | None = Field(default=None, max_length=64)
    candidate_label: str | None = Field(default=None, max_length=128)
    candidate_score: float | None = None
    device_clip_id: str | None = Field(default=None, max_length=64)
    clip_id: str | None = Field(default=None, max_length=64)
    clip_evicted: bool = False
    via_mqtt: bool = False
    via_upload: bool = False
    record: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Clip(SQLModel, table=True):
    """One stored clip (blob digests) of one capture."""

    __tablename__ = "clip"

    clip_id: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(max_length=128, index=True)
    event_id: str = Field(max_length=64, index=True)
    clip_digest: str = Field(max_length=64)
    clip_size: int = 0
    content_type: str = Field(default="video/webm", max_length=64)
    keyframe_digest: str | None = Field(default=None, max_length=64)
    keyframe_size: int = 0
    received_at: datetime = Field(default_factory=_utcnow)
    upload_id: str = Field(default="", max_length=128)


class ShadowPairStats(SQLModel, table=True):
    """Cumulative shadow statistics of one (device, control, candidate), from telemetry."""

    __tablename__ = "shadow_pair_stats"
    __table_args__ = (
        UniqueConstraint("device_id", "control_name", "control_version", "candidate_name", "candidate_version",
                         name="uq_shadow_pair_stats"),
        Index("ix_shadow_pair_stats_pair", "control_name", "control_version", "candidate_name", "candidate_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=128)
    control_name: str = Field(max_length=128)
    control_version: str = Field(max_length=64)
    candidate_name: str = Field(max_length=128)
    candidate_version: str = Field(max_length=64)
    frames: int = 0
    disagreements: int = 0
    dropped: int = 0
    periods: int = 0
    first_at: datetime = Field(default_factory=_utcnow)
    updated_at: datetime = Field(default_factory=_utcnow)
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# ----- references -----


def parse_ref(ref: str) -> tuple[str, str]:
    """``NAME:VERSION`` → (name, version). Raises BadRequest."""
    name, sep, version = ref.partition(":")
    if not sep or not name or not version:
        raise BadRequest(f"model must be NAME:VERSION, got {ref!r}")
    return name, version


def parse_pair(pair: str) -> tuple[str, str]:
    """A pair as ``CONTROL,CANDIDATE``, ``CONTROL..CANDIDATE`` or ``N1:V1:N2:V2``.

    Raises:
        BadRequest: none of those shapes.
    """
    for sep in (",", ".."):
        if sep in pair:
            a, _, b = pair.partition(sep)
            parse_ref(a)
            parse_ref(b)
            return a, b
    parts = pair.split(":")
    if len(parts) == 4 and all(parts):
        return f"{parts[0]}:{parts[1]}", f"{parts[2]}:{parts[3]}"
    raise BadRequest(f"pair must be CONTROL,CANDIDATE (each NAME:VERSION), got {pair!r}")


# ----- ingestion -----


def _event_columns(event: Event) -> dict[str, Any]:
    ctl, cand = event.control, event.candidate
    out: dict[str, Any] = {
        "ts": event.ts, "trigger": event.trigger, "priority": event.priority,
        "control_label": ctl.label, "control_score": ctl.score,
        "record": event.model_dump(mode="json", by_alias=True),
    }
    if ctl.model is not None:
        out.update(control_name=ctl.model.name, control_version=ctl.model.version, control_digest=ctl.model.digest)
    if cand is not None:
        out.update(candidate_label=cand.label, candidate_score=cand.score)
        if cand.model is not None:
            out.update(candidate_name=cand.model.name, candidate_version=cand.model.version,
                       candidate_digest=cand.model.digest)
    return out


def _find_event(session: Session, device_id: str, event_id: str) -> ShadowEvent | None:
    return session.exec(
        select(ShadowEvent).where(ShadowEvent.device_id == device_id).where(ShadowEvent.event_id == event_id)
    ).first()


def record_event(
    session: Session,
    event: Event,
    *,
    via: str = "mqtt",
    clip_id: str | None = None,
    clip_evicted: bool = False,
    now: datetime | None = None,
) -> ShadowEvent:
    """Insert or update the event row for (device, event_id); commits.

    ``via`` is ``"mqtt"`` or ``"upload"``; an upload also sets the controller's ``clip_id``.
    Safe against the other path inserting the same event at the same moment.
    """
    for attempt in range(3):
        row = _find_event(session, event.device_id, event.event_id)
        if row is None:
            row = ShadowEvent(device_id=event.device_id, event_id=event.event_id, received_at=now or _utcnow(),
                              **_event_columns(event))
        if via == "mqtt":
            row.via_mqtt = True
            row.device_clip_id = row.device_clip_id or event.clip_id
        else:
            row.via_upload = True
            if clip_id is not None:
                row.clip_id = clip_id
            row.clip_evicted = row.clip_evicted or clip_evicted
        session.add(row)
        try:
            session.commit()
            return row
        except IntegrityError:  # the other path inserted it first: update that row
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def record_clip(session: Session, stored: Any) -> Clip | None:
    """Index one ``uploads.StoredClip`` (upsert on ``clip_id``); commits.

    The event inside is recorded too (``via="upload"``). A marker of an evicted clip
    (``clip_digest`` None) records the event only and returns None.
    """
    event: Event = stored.event
    has_clip = stored.clip_digest is not None
    record_event(session, event, via="upload", clip_id=stored.clip_id if has_clip else None,
                 clip_evicted=stored.clip_evicted or not has_clip, now=stored.received_at)
    if not has_clip:
        return None
    row = session.get(Clip, stored.clip_id) or Clip(clip_id=stored.clip_id, device_id=stored.device_id,
                                                    event_id=event.event_id, clip_digest=stored.clip_digest)
    row.clip_digest = stored.clip_digest
    row.clip_size = stored.clip_size
    row.content_type = stored.clip_content_type or "video/webm"
    row.keyframe_digest = stored.keyframe_digest
    row.keyframe_size = stored.keyframe_size
    row.received_at = stored.received_at
    row.upload_id = stored.upload_id
    session.add(row)
    session.commit()
    return row


PairKey = tuple[str, str, str, str, str]  # (device, control name, version, candidate name, version)


def pair_key(msg: Telemetry) -> PairKey | None:
    """The (device, pair) row a telemetry period folds into; None when it carries nothing to fold."""
    shadow = msg.shadow
    if shadow is None or shadow.candidate is None or msg.control is None:
        return None
    if shadow.frames == 0 and shadow.dropped == 0:
        return None
    ctl, cand = msg.control, shadow.candidate
    return (msg.device_id, ctl.name, ctl.version, cand.name, cand.version)


def fold_pair_values(values: dict[str, Any] | None, msg: Telemetry, now: datetime) -> dict[str, Any]:
    """Fold one period's shadow stats into a pair row's column values (a new row's when None);
    pure. The caller checked ``pair_key(msg)`` is not None. The batched ingest
    (``devices.batch``) folds plain values and writes them with Core statements."""
    shadow = msg.shadow
    key = pair_key(msg)
    assert shadow is not None and key is not None
    if values is None:
        values = dict(device_id=key[0], control_name=key[1], control_version=key[2], candidate_name=key[3],
                      candidate_version=key[4], first_at=now, periods=0)
        stats = shadow.model_dump(mode="json")
    else:
        folded = merge_into_wire(values["stats"], shadow) if isinstance(values["stats"], dict) else None
        stats = folded if folded is not None else merge_shadow_stats(
            [ShadowStats.model_validate(values["stats"]), shadow]).model_dump(mode="json")
        values = dict(values)
    values.update(stats=stats, frames=stats["frames"], disagreements=stats["disagreements"],
                  dropped=stats["dropped"], periods=values["periods"] + 1, updated_at=now)
    return values


_FOLDED = ("stats", "frames", "disagreements", "dropped", "periods", "updated_at")


def fold_pair_stats(row: ShadowPairStats | None, msg: Telemetry, now: datetime) -> ShadowPairStats:
    """``fold_pair_values`` on a table row (a new one when None)."""
    if row is None:
        return ShadowPairStats(**fold_pair_values(None, msg, now))
    values = fold_pair_values({"stats": row.stats, "periods": row.periods}, msg, now)
    for name in _FOLDED:
        setattr(row, name, values[name])
    return row


def record_pair_stats(session: Session, msg: Telemetry, now: datetime | None = None) -> ShadowPairStats | None:
    """Fold one telemetry period's shadow stats into the (device, pair) row; commits."""
    key = pair_key(msg)
    if key is None:
        return None
    now = now or _utcnow()
    for attempt in range(3):
        row = session.exec(
            select(ShadowPairStats)
            .where(ShadowPairStats.device_id == key[0])
            .where(ShadowPairStats.control_name == key[1]).where(ShadowPairStats.control_version == key[2])
            .where(ShadowPairStats.candidate_name == key[3]).where(ShadowPairStats.candidate_version == key[4])
        ).first()
        row = fold_pair_stats(row, msg, now)
        session.add(row)
        try:
            session.commit()
            return row
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
    return None


# ----- queries -----


@dataclass(frozen=True)
class PairSummary:
    control: str
    candidate: str
    devices: int
    frames: int
    disagreements: int
    dropped: int
    agreement: float | None
    events: int
    clips: int
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _pair_rows(session: Session, control: str, candidate: str,
               device_ids: Sequence[str] | None = None) -> list[ShadowPairStats]:
    cn, cv = parse_ref(control)
    kn, kv = parse_ref(candidate)
    q = (select(ShadowPairStats).where(ShadowPairStats.control_name == cn)
         .where(ShadowPairStats.control_version == cv)
         .where(ShadowPairStats.candidate_name == kn).where(ShadowPairStats.candidate_version == kv))
    if device_ids is not None:
        q = q.where(col(ShadowPairStats.device_id).in_(list(device_ids)))
    return list(session.exec(q.order_by(ShadowPairStats.device_id)).all())


def pair_agreement(
    session: Session, control_ref: str, candidate_ref: str, device_ids: Iterable[str] | None = None
) -> tuple[float | None, int]:
    """Agreement of ``candidate_ref`` with ``control_ref`` over all (or the named) devices.

    Returns ``(agreement, frames)``: the fraction of compared frames on which they agreed
    (None when no frame was compared) and how many frames that is. Counts are exact sums of
    the devices' telemetry since each device first reported the pair.
    """
    rows = _pair_rows(session, control_ref, candidate_ref, list(device_ids) if device_ids is not None else None)
    frames = sum(r.frames for r in rows)
    disagreements = sum(r.disagreements for r in rows)
    return ((1.0 - disagreements / frames) if frames else None), frames


def _event_counts(session: Session) -> dict[tuple[Any, ...], tuple[int, int]]:
    # sqlmodel types select() for at most 4 columns: 6 here
    rows = session.exec(
        select(col(ShadowEvent.control_name), col(ShadowEvent.control_version),  # type: ignore[call-overload]
               col(ShadowEvent.candidate_name), col(ShadowEvent.candidate_version),
               func.count(), func.count(col(ShadowEvent.clip_id)))
        .group_by(ShadowEvent.control_name, ShadowEvent.control_version, ShadowEvent.candidate_name,
                  ShadowEvent.candidate_version)
    ).all()
    return {tuple(r[:4]): (int(r[4]), int(r[5])) for r in rows}


def list_pairs(session: Session) -> list[PairSummary]:
    """Every (control, candidate) pair seen in telemetry, most frames first."""
    groups: dict[tuple[str, str, str, str], list[ShadowPairStats]] = {}
    for row in session.exec(select(ShadowPairStats)).all():
        key = (row.control_name, row.control_version, row.candidate_name, row.candidate_version)
        groups.setdefault(key, []).append(row)
    counts = _event_counts(session)
    out: list[PairSummary] = []
    for key, rows in groups.items():
        frames = sum(r.frames for r in rows)
        dis = sum(r.disagreements for r in rows)
        events, clips = counts.get(key, (0, 0))
        out.append(PairSummary(
            control=f"{key[0]}:{key[1]}", candidate=f"{key[2]}:{key[3]}", devices=len(rows), frames=frames,
            disagreements=dis, dropped=sum(r.dropped for r in rows),
            agreement=(1.0 - dis / frames) if frames else None, events=events, clips=clips,
            updated_at=max(r.updated_at for r in rows),
        ))
    out.sort(key=lambda p: (-p.frames, p.control, p.candidate))
    return out


def pair_detail(session: Session, control: str, candidate: str,
                device_ids: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Agreement, confusion matrix, per-device and per-class figures of one pair (None: unseen)."""
    rows = _pair_rows(session, control, candidate, device_ids)
    if not rows:
        return None
    merged = merge_shadow_stats(ShadowStats.model_validate(r.stats) for r in rows)
    compared: Counter[str] = Counter()
    for label, row in merged.confusion.items():
        compared[label] += sum(row.values())
    per_class = {
        label: {"compared": n, "disagreements": merged.per_class_disagreements.get(label, 0),
                "rate": merged.per_class_disagreements.get(label, 0) / n if n else None}
        for label, n in sorted(compared.items())
    }
    for label, n in merged.per_class_disagreements.items():
        per_class.setdefault(label, {"compared": 0, "disagreements": n, "rate": None})
    cn, cv = parse_ref(control)
    kn, kv = parse_ref(candidate)
    q = (select(col(ShadowEvent.device_id), func.count(), func.count(col(ShadowEvent.clip_id)))
         .where(ShadowEvent.control_name == cn).where(ShadowEvent.control_version == cv)
         .where(ShadowEvent.candidate_name == kn).where(ShadowEvent.candidate_version == kv)
         .group_by(ShadowEvent.device_id))
    ev = {r[0]: (int(r[1]), int(r[2])) for r in session.exec(q).all()}
    devices = [
        {"device_id": r.device_id, "frames": r.frames, "disagreements": r.disagreements, "dropped": r.dropped,
         "agreement": (1.0 - r.disagreements / r.frames) if r.frames else None, "periods": r.periods,
         "events": ev.get(r.device_id, (0, 0))[0], "clips": ev.get(r.device_id, (0, 0))[1],
         "updated_at": r.updated_at}
        for r in rows
    ]
    return {
        "control": control, "candidate": candidate, "frames": merged.frames,
        "disagreements": merged.disagreements, "dropped": merged.dropped, "agreement": merged.agreement,
        "confusion": merged.confusion, "per_class": per_class, "devices": devices,
        "candidate_latency_ms": merged.latency_ms.model_dump(),
        "events": sum(v[0] for v in ev.values()), "clips": sum(v[1] for v in ev.values()),
    }


def list_events(
    session: Session,
    *,
    control: str | None = None,
    candidate: str | None = None,
    label: str | None = None,
    device_id: str | None = None,
    trigger: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    has_clip: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ShadowEvent]:
    """Events for review, newest first. ``label`` matches the control's or the candidate's label."""
    q = select(ShadowEvent)
    if control:
        n, v = parse_ref(control)
        q = q.where(ShadowEvent.control_name == n).where(ShadowEvent.control_version == v)
    if candidate:
        n, v = parse_ref(candidate)
        q = q.where(ShadowEvent.candidate_name == n).where(ShadowEvent.candidate_version == v)
    if label is not None:
        q = q.where((ShadowEvent.control_label == label) | (ShadowEvent.candidate_label == label))
    if device_id:
        q = q.where(ShadowEvent.device_id == device_id)
    if trigger:
        q = q.where(ShadowEvent.trigger == trigger)
    if since is not None:
        q = q.where(ShadowEvent.ts >= since)
    if until is not None:
        q = q.where(ShadowEvent.ts < until)
    if has_clip is True:
        q = q.where(col(ShadowEvent.clip_id).is_not(None))
    elif has_clip is False:
        q = q.where(col(ShadowEvent.clip_id).is_(None))
    q = q.order_by(col(ShadowEvent.ts).desc(), col(ShadowEvent.id).desc()).offset(offset).limit(limit)
    return list(session.exec(q).all())


def event_public(e: ShadowEvent) -> dict[str, Any]:
    """The wire shape of one event row (the record as sent, plus what the controller knows)."""
    return {
        "event_id": e.event_id, "device_id": e.device_id, "ts": e.ts, "received_at": e.received_at,
        "trigger": e.trigger, "priority": e.priority,
        "control": {"model": f"{e.control_name}:{e.control_version}" if e.control_name else None,
                    "label": e.control_label, "score": e.control_score},
        "candidate": ({"model": f"{e.candidate_name}:{e.candidate_version}" if e.candidate_name else None,
                       "label": e.candidate_label, "score": e.candidate_score}
                      if e.candidate_name or e.candidate_label else None),
        "clip_id": e.clip_id, "clip_evicted": e.clip_evicted,
        "frame_index": (e.record or {}).get("frame_index"),
        "via": [p for p, on in (("mqtt", e.via_mqtt), ("upload", e.via_upload)) if on],
    }


def get_clip(session: Session, clip_id: str) -> Clip | None:
    return session.get(Clip, clip_id)


def clips_per_device(session: Session) -> dict[str, int]:
    rows = session.exec(select(Clip.device_id, func.count()).group_by(Clip.device_id)).all()
    return {r[0]: int(r[1]) for r in rows}
