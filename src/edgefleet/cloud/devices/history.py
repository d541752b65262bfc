"""Device history: what happened to one device, when — for the day a truck misbehaves.

Written where the facts are applied, one INSERT in the fact's own transaction
(``record``): ``fleet.assign`` (desired model per slot, with the rollout that asked),
``signing.sign_device`` (director metadata signed: generation, slots, settings),
``ingest.apply_reported`` (phase transitions with error code; a local rollback),
the rollout reconciler (membership: joined a rollout's wave) and tag edits.
Read (``history``) merged with what other tables already hold: the audit log entries
that name the device (enrol, revoke, credential rotation, hardware approval, report-key
reset …), oldest first, paged by time (``since`` exclusive, ``limit``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import JSON, Column, Index, Text, and_, cast
from sqlalchemy import insert as sa_insert
from sqlmodel import Field, Session, SQLModel, col, or_, select

HistoryKind = Literal["desired", "signed", "phase", "rollback", "rollout", "tags", "audit"]
KINDS: tuple[str, ...] = ("desired", "signed", "phase", "rollback", "rollout", "tags", "audit")
MAX_LIMIT = 500
BODY_ACTIONS = ("deploy",)  # audit actions that name devices in their body, not their target


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


class DeviceHistory(SQLModel, table=True):
    __tablename__ = "device_history"
    __table_args__ = (Index("ix_device_history_device_at", "device_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=128)
    at: datetime = Field(default_factory=_now)
    kind: str = Field(max_length=16)
    slot: str | None = Field(default=None, max_length=16)
    message: str = Field(max_length=1024)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class HistoryEntry(BaseModel):
    at: datetime
    kind: HistoryKind
    slot: str | None = None
    message: str
    actor: str | None = None  # audit entries: who acted
    data: dict[str, Any] = {}


class HistoryPage(BaseModel):
    device: str
    entries: list[HistoryEntry]
    next_since: datetime | None = None  # pass as ?since= for the next page (None: no more)


def record(session: Session, device_id: str, kind: str, message: str, *, slot: str | None = None,
           data: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    """Add one history row to the caller's transaction (no commit)."""
    session.add(DeviceHistory(device_id=device_id, kind=kind, slot=slot, message=message[:1024],
                              data=data or {}, at=at or _now()))


def new_row(device_id: str, kind: str, message: str, *, slot: str | None = None,
        data: dict[str, Any] | None = None, at: datetime | None = None) -> dict[str, Any]:
    """The column values of one history row (``insert_rows`` writes many in one statement)."""
    return {"device_id": device_id, "kind": kind, "slot": slot, "message": message[:1024],
            "data": data or {}, "at": at or _now()}


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Many history rows (``new_row``) in one executemany, in the caller's transaction; no ORM
    object per row (building one costs more than the insert: issue 14)."""
    if rows:
        session.execute(sa_insert(DeviceHistory.__table__), rows)  # type: ignore[attr-defined]


def model_label(ref: dict[str, Any] | None) -> str:
    if not ref:
        return "-"
    return f"{ref.get('name')}:{ref.get('version')}"


def reported_rows(device_id: str, previous: dict[str, Any], slots: dict[Any, Any],
                  at: datetime | None = None, *, late_seq: int | None = None) -> list[dict[str, Any]]:
    """The history rows (column values) for the phase transitions of a verified ``reported``
    (``slots``: slot → SlotReport) against the previous report's slots (dicts). Pure: the
    batched ingest (``devices.batch``) inserts them in one statement.

    ``late_seq``: the report is late (its seq below the highest accepted, cloud/devices/
    replay_window.py) and ``previous`` is the *current*, newer report: a row for each slot
    whose phase differs from it, marked ``late`` with the seq (data ``late``, ``seq``,
    ``current``; ``from`` unknown), so the phase the device passed through is not lost."""
    rows = []
    for slot, rep in slots.items():
        before = (previous.get(slot) or {}).get("phase")
        phase = rep.phase.value
        if before == phase:
            continue
        if late_seq is not None:
            rows.append(_late_row(device_id, slot, rep, before, late_seq, at))
            continue
        installed = rep.installed.model_dump(mode="json") if rep.installed else None
        target = rep.target.model_dump(mode="json") if rep.target else None
        data = {"from": before, "to": phase, "error_code": rep.error_code, "error": (rep.error or "")[:500] or None,
                "installed": model_label(installed) if installed else None,
                "target": model_label(target) if target else None}
        text = f"{slot}: {before or '-'} → {phase}"
        if rep.error_code:
            text += f" ({rep.error_code}: {(rep.error or '')[:200]})"
        kind = "rollback" if phase == "rolled_back" else "phase"
        if kind == "rollback":
            text = f"{slot}: rolled back locally to {data['installed'] or '-'}" + (
                f" ({rep.error_code}: {(rep.error or '')[:200]})" if rep.error_code else "")
        rows.append({"device_id": device_id, "kind": kind, "slot": slot, "message": text[:1024], "data": data,
                     "at": at or _now()})
    return rows


def _late_row(device_id: str, slot: str, rep: Any, current: str | None, seq: int, at: datetime | None) -> dict[str, Any]:
    phase = rep.phase.value
    installed = rep.installed.model_dump(mode="json") if rep.installed else None
    target = rep.target.model_dump(mode="json") if rep.target else None
    data = {"from": None, "to": phase, "current": current, "late": True, "seq": seq, "error_code": rep.error_code,
            "error": (rep.error or "")[:500] or None, "installed": model_label(installed) if installed else None,
            "target": model_label(target) if target else None}
    text = f"{slot}: was {phase} (late report seq {seq}, applied after a newer one; now {current or '-'})"
    if rep.error_code:
        text += f" ({rep.error_code}: {(rep.error or '')[:200]})"
    kind = "rollback" if phase == "rolled_back" else "phase"
    return {"device_id": device_id, "kind": kind, "slot": slot, "message": text[:1024], "data": data, "at": at or _now()}


def record_reported(session: Session, device_id: str, previous: dict[str, Any], slots: dict[Any, Any],
                    at: datetime | None = None, *, late_seq: int | None = None) -> int:
    """Phase transitions of a verified ``reported`` (``slots``: slot → SlotReport), against
    the previous report's slots (dicts; a late one: the current report's, ``reported_rows``).
    Returns how many rows were added."""
    rows = reported_rows(device_id, previous, slots, at, late_seq=late_seq)
    for row in rows:
        session.add(DeviceHistory(**row))
    return len(rows)


def history(session: Session, device_id: str, *, since: datetime | None = None, limit: int = 100,
            kinds: list[str] | None = None) -> HistoryPage:
    """The device's history, oldest first, after ``since`` (exclusive), at most ``limit``."""
    from ..audit import AuditEntry

    limit = max(1, min(limit, MAX_LIMIT))
    q = select(DeviceHistory).where(DeviceHistory.device_id == device_id)
    if since is not None:
        q = q.where(col(DeviceHistory.at) > since)
    if kinds:
        q = q.where(col(DeviceHistory.kind).in_(kinds))
    rows = session.exec(q.order_by(col(DeviceHistory.at), col(DeviceHistory.id)).limit(limit + 1)).all()
    entries = [HistoryEntry(at=_aware(r.at), kind=r.kind, slot=r.slot, message=r.message, data=r.data)  # type: ignore[arg-type]
               for r in rows]
    if not kinds or "audit" in kinds:
        quoted = '%"' + device_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
        aq = select(AuditEntry).where(or_(
            col(AuditEntry.target) == device_id, col(AuditEntry.target).startswith(device_id + "/", autoescape=True),
            # a deployment names its devices in the request body (target: the model)
            and_(col(AuditEntry.action).in_(BODY_ACTIONS), cast(AuditEntry.summary, Text).like(quoted, escape="\\"))))
        aq = aq.where(col(AuditEntry.action) != "denied")
        if since is not None:
            aq = aq.where(col(AuditEntry.ts) > since)
        for a in session.exec(aq.order_by(col(AuditEntry.seq)).limit(limit + 1)).all():
            body = (a.summary or {}).get("body")
            entries.append(HistoryEntry(at=_aware(a.ts), kind="audit", message=a.action, actor=a.actor,
                                        data={"seq": a.seq, **({"body": body} if isinstance(body, dict) else {})}))
    entries.sort(key=lambda e: e.at)
    if len(entries) <= limit:
        return HistoryPage(device=device_id, entries=entries)
    # ``since`` is exclusive: never end a page between two entries of the same time
    cut = limit
    while cut > 0 and entries[cut].at == entries[cut - 1].at:
        cut -= 1
    if cut == 0:  # more than a page at one instant: all of them (each source read limit + 1)
        cut = sum(1 for e in entries if e.at == entries[0].at)
    page = entries[:cut]
    return HistoryPage(device=device_id, entries=page, next_since=page[-1].at)
