"""The rollout list a page at a time, each row's figures from one ``GROUP BY`` (issue 14).

``/ui/rollouts`` and ``GET /api/v1/rollouts`` list rollouts newest first. The list used to
fold every listed rollout's members (``service.status`` per row, or ``member_count`` per row),
so its cost grew with the whole history. Here:

* ``page_rollouts`` reads one keyset page of rollout rows, ordered by ``(created_at, id)``
  descending, after an opaque cursor (``devices.cursor``, bound to the state filter);
* ``row_figures`` reads, for every rollout on the page at once, the member counts the rows
  show: one ``GROUP BY (rollout, wave)`` over the hot member rows joined with their device
  rows, and a second one over the archive for archived rollouts. ``on_model`` is counted
  with what ``metrics.classify`` calls running (active or healthy): dispatched, the slot's
  verified report names the rollout's digest as installed, phase healthy/idle (or active
  while online), neither stale nor lagging — and only in waves that have started.

So a page costs a constant number of statements whatever the number of rollouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Table, and_, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from ...protocols import SLOTS
from ..devices import cursor as cursors
from ..tables import Device
from .store import state_of
from .tables import Rollout, RolloutMember, rollout_member_archive

_HOT: Table = RolloutMember.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RowFigures:
    """What a list row shows of its members."""

    members: int = 0  # member rows (``members.member_count``)
    devices: int = 0  # members whose device row exists (the status fold's ``devices``)
    on_model: int = 0  # members running the rollout's model (``RolloutStatus.on_model``)

    @property
    def progress(self) -> float:
        return self.on_model / self.devices if self.devices else 0.0


@dataclass(frozen=True)
class RolloutPage:
    rows: list[Rollout]
    next_cursor: str | None


def scope_of(state: str | None) -> str:
    return f"rollouts\x1f{state or ''}"


def page_rollouts(session: Session, *, state: str | None, limit: int, cursor: str | None) -> RolloutPage:
    """One page of rollout rows, newest first; one statement.

    Raises:
        BadCursor: the cursor is not one issued for this filter.
    """
    scope = scope_of(state)
    stmt = select(Rollout).order_by(col(Rollout.created_at).desc(), col(Rollout.id).desc()).limit(limit + 1)
    if state:
        stmt = stmt.where(col(Rollout.state) == state)
    if cursor:
        at, rid = _key(cursors.decode(cursor, scope).key)
        stmt = stmt.where(or_(col(Rollout.created_at) < at, and_(col(Rollout.created_at) == at, col(Rollout.id) < rid)))
    rows = list(session.execute(stmt).scalars().all())
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = cursors.encode(cursors.Cursor("after", json.dumps([last.created_at, last.id])), scope)
    return RolloutPage(rows, nxt)


def _key(text: str) -> tuple[float, str]:
    try:
        at, rid = json.loads(text)
        return float(at), str(rid)
    except (ValueError, TypeError) as exc:
        raise cursors.BadCursor("the cursor is not one this API issued for these filters") from exc


def _running(t: Table) -> ColumnElement[bool]:
    """The member counts as running the rollout's model (``classify``'s ACTIVE or HEALTHY)."""
    per_slot = []
    for slot in SLOTS:
        rep = col(Device.reported)
        digest = rep[("slots", slot, "installed", "digest")].as_string()
        phase = rep[("slots", slot, "phase")].as_string()
        ok = and_(digest == col(Rollout.digest),
                  or_(phase.is_(None), phase.in_(("healthy", "idle")),
                      and_(phase == "active", func.coalesce(col(Device.online), False).is_(True))))
        per_slot.append((col(Rollout.slot) == slot, ok))
    return and_(t.c.dispatched_at.is_not(None), col(Device.stale_since).is_(None),
                col(Device.lagging_since).is_(None), case(*per_slot, else_=False))  # type: ignore[arg-type]


def _grouped(session: Session, t: Table, ids: list[str]) -> dict[str, dict[int, tuple[int, int, int]]]:
    """rollout → wave → (member rows, with a device row, running): one statement."""
    if not ids:
        return {}
    q = (select(t.c.rollout_id, t.c.wave, func.count(), func.count(col(Device.id)),
                func.coalesce(func.sum(case((_running(t), 1), else_=0)), 0))
         .select_from(t)
         .join(Rollout, col(Rollout.id) == t.c.rollout_id)
         .outerjoin(Device, col(Device.id) == t.c.device_id)
         .where(t.c.rollout_id.in_(ids))
         .group_by(t.c.rollout_id, t.c.wave))
    out: dict[str, dict[int, tuple[int, int, int]]] = {}
    for rid, wave, n, with_device, running in session.execute(q).all():
        out.setdefault(str(rid), {})[int(wave)] = (int(n), int(with_device), int(running))
    return out


def row_figures(session: Session, rows: list[Rollout]) -> dict[str, RowFigures]:
    """Each listed rollout's member figures: at most two statements for the whole page."""
    ids = [r.id for r in rows]
    grouped = _grouped(session, _HOT, ids)
    archived = [i for i in ids if i not in grouped]  # no hot rows: read the archive (``members._table``)
    grouped.update(_grouped(session, rollout_member_archive, archived))
    out: dict[str, RowFigures] = {}
    for r in rows:
        try:
            started = set(state_of(r).wave_starts())
        except ValueError:
            started = set()
        waves = grouped.get(r.id, {})
        out[r.id] = RowFigures(
            members=sum(n for n, _, _ in waves.values()),
            devices=sum(d for _, d, _ in waves.values()),
            on_model=sum(run for w, (_, _, run) in waves.items() if w in started))
    return out


__all__ = ["RolloutPage", "RowFigures", "page_rollouts", "row_figures", "scope_of"]
