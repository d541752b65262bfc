"""Telemetry history: one row per device per telemetry period, for sparklines, charts and drift.

``Device.telemetry`` keeps only the latest period; this module keeps them all (until
``prune``). The controller's telemetry handler calls ``record_telemetry`` right after
``ingest.apply_telemetry``. Readers get plain ``TelemetryPeriod`` rows back:

* ``device_series`` — recent periods per device (the fleet page's sparklines),
* ``version_series`` — periods in which a model version ran as control or as shadow
  candidate, bucketed in time (the model page's latency/agreement charts),
* ``control_periods`` — the periods of a model version as control, oldest first
  (reference and current windows of the drift report).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, delete
from sqlmodel import Field, Session, SQLModel, col, select

from ...protocols import Telemetry


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class TelemetryPeriod(SQLModel, table=True):
    """One telemetry period of one device (see migration 0004)."""

    __tablename__ = "telemetry_period"
    __table_args__ = (
        Index("ix_telemetry_period_device_end", "device_id", "period_end"),
        Index("ix_telemetry_period_control", "control_name", "control_version", "period_end"),
        Index("ix_telemetry_period_candidate", "candidate_name", "candidate_version", "period_end"),
    )

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=128)
    period_start: datetime
    period_end: datetime
    received_at: datetime = Field(default_factory=_utcnow)
    control_name: str | None = Field(default=None, max_length=128)
    control_version: str | None = Field(default=None, max_length=64)
    candidate_name: str | None = Field(default=None, max_length=128)
    candidate_version: str | None = Field(default=None, max_length=64)
    frames: int = 0
    fps: float = 0.0
    errors: int = 0
    nan_outputs: int = 0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    latency_p99: float = 0.0
    shadow_frames: int = 0
    shadow_dropped: int = 0
    shadow_disagreements: int = 0
    agreement: float | None = None
    candidate_p99: float | None = None
    class_counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    confidence_histogram: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


def values_from_message(msg: Telemetry, now: datetime | None = None) -> dict[str, Any]:
    """The history row's column values for one telemetry message (pure; the batched ingest,
    ``devices.batch``, inserts many in one statement)."""
    shadow = msg.shadow
    candidate = shadow.candidate if shadow else None
    return dict(
        device_id=msg.device_id, period_start=msg.period_start, period_end=msg.period_end,
        received_at=now or _utcnow(),
        control_name=msg.control.name if msg.control else None,
        control_version=msg.control.version if msg.control else None,
        candidate_name=candidate.name if candidate else None,
        candidate_version=candidate.version if candidate else None,
        frames=msg.frames, fps=msg.fps, errors=msg.errors, nan_outputs=msg.nan_outputs,
        latency_p50=msg.latency_ms.p50, latency_p95=msg.latency_ms.p95, latency_p99=msg.latency_ms.p99,
        shadow_frames=shadow.frames if shadow else 0,
        shadow_dropped=shadow.dropped if shadow else 0,
        shadow_disagreements=shadow.disagreements if shadow else 0,
        agreement=shadow.agreement if shadow else None,
        candidate_p99=shadow.latency_ms.p99 if shadow and shadow.frames else None,
        class_counts=dict(msg.class_counts), confidence_histogram=list(msg.confidence_histogram),
    )


def row_from_message(msg: Telemetry, now: datetime | None = None) -> TelemetryPeriod:
    """The history row for one telemetry message (pure)."""
    return TelemetryPeriod(**values_from_message(msg, now))


def record_telemetry(session: Session, msg: Telemetry, now: datetime | None = None) -> TelemetryPeriod:
    """Append one period to the history (the hook in ``Controller._on_telemetry``)."""
    row = row_from_message(msg, now)
    session.add(row)
    session.commit()
    return row


def prune(session: Session, older_than: datetime) -> int:
    """Delete periods that ended before ``older_than``; returns how many."""
    result = session.exec(delete(TelemetryPeriod).where(col(TelemetryPeriod.period_end) < older_than))  # type: ignore[call-overload]
    session.commit()
    return int(result.rowcount or 0)


def device_series(
    session: Session, device_ids: Iterable[str], *, limit: int = 30, since: datetime | None = None,
) -> dict[str, list[TelemetryPeriod]]:
    """The last ``limit`` periods of each device, oldest first."""
    out: dict[str, list[TelemetryPeriod]] = {}
    for device_id in device_ids:
        q = select(TelemetryPeriod).where(TelemetryPeriod.device_id == device_id)
        if since is not None:
            q = q.where(col(TelemetryPeriod.period_end) >= since)
        rows = session.exec(q.order_by(col(TelemetryPeriod.period_end).desc()).limit(limit)).all()
        out[device_id] = list(reversed(rows))
    return out


def control_periods(
    session: Session, name: str, version: str, *, start: datetime | None = None, end: datetime | None = None,
    device_ids: Sequence[str] | None = None, limit: int | None = None, newest_first: bool = False,
) -> list[TelemetryPeriod]:
    """Periods in which ``name:version`` ran as control (optionally within [start, end])."""
    q = select(TelemetryPeriod).where(TelemetryPeriod.control_name == name).where(TelemetryPeriod.control_version == version)
    if start is not None:
        q = q.where(col(TelemetryPeriod.period_end) >= start)
    if end is not None:
        q = q.where(col(TelemetryPeriod.period_end) <= end)
    if device_ids is not None:
        q = q.where(col(TelemetryPeriod.device_id).in_(list(device_ids)))
    order = col(TelemetryPeriod.period_end).desc() if newest_first else col(TelemetryPeriod.period_end)
    q = q.order_by(order, col(TelemetryPeriod.id))
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q).all())


@dataclass(frozen=True)
class SeriesPoint:
    """One time bucket of one model version: frame-weighted figures over its periods."""

    t: datetime
    periods: int
    frames: int
    latency_p99: float | None  # mean p99 of the version's periods (as control, or in shadow)
    agreement: float | None  # shadow frames agreeing / shadow frames compared


def _bucket(t: datetime, bucket: timedelta) -> datetime:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    secs = bucket.total_seconds()
    return datetime.fromtimestamp((t.timestamp() // secs) * secs, timezone.utc)


def version_series(
    session: Session, name: str, version: str, *, role: str = "control", since: datetime | None = None,
    bucket: timedelta = timedelta(minutes=1), max_rows: int = 20000,
) -> list[SeriesPoint]:
    """Latency p99 and agreement over time of one version, as control or as shadow candidate."""
    if role == "control":
        q = select(TelemetryPeriod).where(TelemetryPeriod.control_name == name, TelemetryPeriod.control_version == version)
    else:
        q = select(TelemetryPeriod).where(TelemetryPeriod.candidate_name == name, TelemetryPeriod.candidate_version == version)
    if since is not None:
        q = q.where(col(TelemetryPeriod.period_end) >= since)
    rows = session.exec(q.order_by(col(TelemetryPeriod.period_end).desc()).limit(max_rows)).all()
    groups: dict[datetime, list[TelemetryPeriod]] = defaultdict(list)
    for r in rows:
        groups[_bucket(r.period_end, bucket)].append(r)
    points = []
    for t in sorted(groups):
        g = groups[t]
        if role == "control":
            lat_vals = [r.latency_p99 for r in g if r.frames > 0]
        else:
            lat_vals = [r.candidate_p99 for r in g if r.candidate_p99 is not None]
        compared = sum(r.shadow_frames for r in g if r.agreement is not None)
        agreeing = sum(r.shadow_frames - r.shadow_disagreements for r in g if r.agreement is not None)
        points.append(SeriesPoint(
            t=t, periods=len(g), frames=sum(r.frames for r in g),
            latency_p99=sum(lat_vals) / len(lat_vals) if lat_vals else None,
            agreement=agreeing / compared if compared else None,
        ))
    return points


def as_dict(row: TelemetryPeriod) -> dict[str, Any]:
    return row.model_dump(mode="json")
