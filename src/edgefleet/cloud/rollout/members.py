"""A rollout's member list from SQL, a page at a time (issue 14): no view loads the fleet.

* ``member_count`` — how many members a rollout has: one ``COUNT`` (the archive's for an
  archived rollout), for the rollout list.
* ``member_observations`` — the ``DeviceObservation`` of every member and only the members
  (member rows joined with their device rows and the slot's assignments), for the status
  folds: the cost grows with the rollout, not the fleet.
* ``member_row`` — one member's row as ``GET /api/v1/rollouts/{id}`` and the member list
  show it (its status in the rollout, figures); pure.
* ``page_members`` — one keyset page of the member list in device id order
  (``devices.cursor``; the same cursors and scopes as before): the wave filter is a
  ``WHERE``, the status filter a ``WHERE`` on what the status implies (dispatched or not,
  online or not, reverted, the wave started or not) and then ``member_row`` decides, so a
  page reads about a page of rows. Members whose device row is gone are not listed (as in
  the status fold).

Archived rollouts (``archive.py``) read the archive table the same way: a rollout with no
hot member rows is read from the archive, as ``store.members_of`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, false, func, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from ..devices import cursor as cursors
from ..tables import Device, ModelVersion, SlotAssignment
from . import member_rows
from .device_view import WIDTH, DeviceView, DeviceViews, raw_columns
from .metrics import DeviceStatus, classify, same_ref
from .model import DeviceObservation, RolloutSpec, RolloutState
from .store import observe, ref_cached, with_drift, with_latency
from .tables import Rollout, RolloutMember, rollout_member_archive

_HOT: Table = RolloutMember.__table__  # type: ignore[attr-defined]
_SETTLING = frozenset({"dispatched", "installing", "silent", "timed_out"})
#: every status a member row can have (``member_row``)
STATUSES = frozenset({s.value for s in DeviceStatus} | {"reverted"})
CHUNK = 500  # rows per read while a status filter looks for a page's worth
#: the members' devices as these views last read them: only the planner's columns, each
#: device decoded once per change of it, not an ORM ``Device`` per member per request
_VIEWS = DeviceViews()


def _table(session: Session, rollout_id: str) -> Table:
    """The hot member table, or the archive when the rollout has no hot rows (``members_of``)."""
    hot = session.execute(select(_HOT.c.device_id).where(_HOT.c.rollout_id == rollout_id).limit(1)).first()
    return _HOT if hot is not None else rollout_member_archive


def member_count(session: Session, rollout_id: str) -> int:
    """How many members the rollout has (hot rows, else archived ones): one or two COUNTs."""
    for table in (_HOT, rollout_member_archive):
        n = session.execute(select(func.count()).select_from(table).where(table.c.rollout_id == rollout_id)).scalar_one()
        if n:
            return int(n)
    return 0


def _member(r: Any) -> RolloutMember:
    """The member columns of a row (after the device's ``raw_columns``) as a read-only
    ``MemberRow``: building the SQLModel instance costs more than the rest of a row's work,
    and nothing here writes it."""
    return cast(RolloutMember, member_rows.from_values(r[WIDTH:]))


def _select(t: Table) -> Any:
    """Device (its planner columns, raw) and member columns of each member row."""
    return select(*raw_columns(), *member_rows.columns(t)).join(t, t.c.device_id == col(Device.id))


def _observations(session: Session, rows: Sequence[Any], slot: str,
                  desired: dict[str, Any] | None = None) -> list[DeviceObservation]:
    views: list[DeviceView] = _VIEWS.views_of(session, rows)
    desired = desired or {}
    return [observe(_VIEWS.fields_of(v, slot), _member(r), desired.get(v.id)) for v, r in zip(views, rows)]


def member_observations(session: Session, row: Rollout) -> list[DeviceObservation]:
    """Each member's observation (device id order), with the drift and latency figures its
    gates read — what ``store.observations`` gives for the members, without the rest."""
    t = _table(session, row.id)
    rows = session.connection().execute(_select(t).where(t.c.rollout_id == row.id).order_by(col(Device.id))).all()
    desired = {d: ref_cached({"name": n, "version": v, "digest": g}) for d, n, v, g in session.connection().execute(
        select(t.c.device_id, col(ModelVersion.name), col(ModelVersion.version), col(ModelVersion.digest))
        .join(SlotAssignment, and_(col(SlotAssignment.device_id) == t.c.device_id, col(SlotAssignment.slot) == row.slot))
        .join(ModelVersion, col(ModelVersion.id) == col(SlotAssignment.model_version_id))
        .where(t.c.rollout_id == row.id)).all()}
    out = _observations(session, rows, row.slot, desired)
    if any(str(g).startswith("drift") for g in row.gates or ()):
        out = with_drift(session, row, out)
    if any(str(g).startswith("latency_p99_ratio") for g in row.gates or ()):
        out = with_latency(session, row, out)
    return out


def member_row(o: DeviceObservation, spec: RolloutSpec, starts: dict[int, float], now: float) -> dict[str, Any]:
    """One member as the status and the member list show it (``o.wave`` is not None)."""
    assert o.wave is not None
    s = classify(o, model=spec.model, device_timeout_s=spec.device_timeout_s,
                 wave_started_at=starts.get(o.wave), now=now).value
    if o.reverted_at is not None and s in _SETTLING and not same_ref(o.installed, spec.model):
        s = "reverted"  # sent back to its previous model: neither in flight nor timed out
    return {"device": o.device_id, "hardware_id": o.hardware_id, "wave": o.wave,
            "status": s, "online": o.online,
            "installed": o.installed.label if o.installed else None,
            "phase": o.phase.value, "error_code": o.error_code,
            "previous": o.previous.label if o.previous else None,
            "frames": o.frames, "nan_outputs": o.nan_outputs, "errors": o.errors,
            "p99_ms": o.candidate_p99_ms, "baseline_p99_ms": o.baseline_p99_ms}


def status_where(t: Table, status: str | None, started: set[int]) -> list[ColumnElement[bool]]:
    """What ``status`` implies in SQL (a necessary condition; ``member_row`` decides)."""
    if status is None:
        return []
    if status not in STATUSES:
        return [false()]
    if status == DeviceStatus.WAITING.value:
        return [t.c.wave.notin_(sorted(started))] if started else []
    begun = t.c.wave.in_(sorted(started)) if started else false()
    online = func.coalesce(col(Device.online), False)
    if status == DeviceStatus.QUEUED.value:
        return [begun, t.c.dispatched_at.is_(None), online.is_(True)]
    if status in (DeviceStatus.PENDING.value, DeviceStatus.SKIPPED.value):
        return [begun, t.c.dispatched_at.is_(None), online.is_(False)]
    if status == "reverted":
        return [begun, t.c.dispatched_at.is_not(None), t.c.reverted_at.is_not(None)]
    return [begun, t.c.dispatched_at.is_not(None)]


@dataclass(frozen=True)
class MemberPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    total: int


def scope_of(rollout_id: str, status: str | None, wave: int | None) -> str:
    """The cursors' scope: the rollout and the filters (``wave`` 0-based)."""
    return f"rollout:{rollout_id}\x1f{status or ''}\x1f{'' if wave is None else wave}"


class _Reader:
    """Matching member rows of one rollout in device id order, read in chunks."""

    def __init__(self, session: Session, row: Rollout, spec: RolloutSpec, state: RolloutState, now: float,
                 status: str | None, wave: int | None) -> None:
        self.session, self.row, self.spec, self.now, self.status = session, row, spec, now, status
        self.starts = state.wave_starts()
        self.t = t = _table(session, row.id)
        self.where = [t.c.rollout_id == row.id, *status_where(t, status, set(self.starts))]
        if wave is not None:
            self.where.append(t.c.wave == wave)

    def _rows(self, ascending: bool, bound: str | None, chunk: int) -> Iterator[dict[str, Any]]:
        t = self.t
        while True:
            q = _select(t).where(*self.where)
            if bound is not None:
                q = q.where(t.c.device_id > bound if ascending else t.c.device_id < bound)
            q = q.order_by(t.c.device_id.asc() if ascending else t.c.device_id.desc()).limit(chunk)
            rows = self.session.connection().execute(q).all()
            for o in _observations(self.session, rows, self.row.slot):
                item = member_row(o, self.spec, self.starts, self.now)
                if self.status is None or item["status"] == self.status:
                    yield item
            if len(rows) < chunk:
                return
            bound = rows[-1][0]

    def take(self, ascending: bool, bound: str | None, n: int) -> list[dict[str, Any]]:
        chunk = n if self.status is None else max(n, CHUNK)
        out = []
        for item in self._rows(ascending, bound, chunk):
            out.append(item)
            if len(out) >= n:
                break
        return out

    def total(self) -> int:
        if self.status is None:
            t = self.t
            return int(self.session.execute(select(func.count()).select_from(t).join(Device, t.c.device_id == col(Device.id))
                                            .where(*self.where)).scalar_one())
        return sum(1 for _ in self._rows(True, None, CHUNK))


def page_members(session: Session, row: Rollout, spec: RolloutSpec, state: RolloutState, now: float, *,
                 limit: int, cursor: str | None, status: str | None = None, wave: int | None = None) -> MemberPage:
    """One page of the rollout's members in device id order (``wave`` 0-based).

    Raises:
        BadCursor: the cursor is not one issued for this rollout and these filters.
    """
    scope = scope_of(row.id, status, wave)
    at = cursors.decode(cursor, scope) if cursor else None
    reader = _Reader(session, row, spec, state, now, status, wave)
    if at is None or at.direction == "after":
        items = reader.take(True, at.key if at else None, limit + 1)
        more_after, items = len(items) > limit, items[:limit]
        more_before = at is not None and bool(items) and bool(reader.take(False, items[0]["device"], 1))
    else:
        items = reader.take(False, at.key, limit + 1)
        more_before, items = len(items) > limit, items[:limit][::-1]
        more_after = bool(items) and bool(reader.take(True, items[-1]["device"], 1))
    nxt = cursors.encode(cursors.Cursor("after", items[-1]["device"]), scope) if more_after else None
    prev = cursors.encode(cursors.Cursor("before", items[0]["device"]), scope) if more_before else None
    return MemberPage(items=items, next_cursor=nxt, prev_cursor=prev, total=reader.total())


__all__ = ["STATUSES", "MemberPage", "member_count", "member_observations", "member_row", "page_members",
           "scope_of", "status_where"]
