"""Dirty marks: which devices changed since the reconciler last looked (issue 14).

A reconcile pass over a rollout where nothing changed must do work in proportion to what
changed, not to the fleet. Writers do nothing special for it: one session event
(``after_flush``, every ORM session of the process) notices the devices whose
planner-relevant state moved in that flush —

* a ``Device`` row added, removed, or changed in what the planner reads (reported state,
  presence, tags, hardware, desired generation, freshness, revocation, and ``last_seen``
  while the device is offline: the clock an offline member's timeout runs from — an
  online device's ``last_seen`` moves with every message and the planner does not read it);
* a ``SlotAssignment`` made, changed or removed (what the controller wants);
* a ``RolloutMember`` row changed (phase seen, dispatch, telemetry figures) —

and upserts one ``reconcile_dirty`` row per such device *in the same transaction*, so the
mark commits with the change or not at all. Each upsert bumps the row's ``version``; the
reconciler reads the marks at the start of a pass (``read``) and, after the pass, deletes
exactly the (device, version) pairs it read (``clear``): a device marked again meanwhile
keeps its mark for the next pass. No clock is involved, so replicas with skewed clocks
cannot lose a mark.

Marks are written on every database that has the table (checked once per engine and
remembered; ``enable`` says so up front — the reconciler does on every pass), so a process
that writes the database directly (a CLI command) marks too, and a database without the
table (one that never migrated) is never written to. A writer that bypasses the ORM (a Core ``update()``)
calls ``mark(session, device_ids)`` itself; the reconciler's periodic full pass is the
safety net for anything missed.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, delete, event, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session as OrmSession

from ..tables import Device, SlotAssignment
from .tables import ReconcileDirty, RolloutMember

#: Device columns the planner reads (store.observation, selector, freshness, eligibility).
DEVICE_FIELDS = ("reported", "online", "tags", "hardware_id", "desired_generation", "lagging_since",
                 "stale_since", "revoked_at")
_TABLE = ReconcileDirty.__table__  # type: ignore[attr-defined]
_enabled: weakref.WeakSet[Engine] = weakref.WeakSet()
_absent: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()  # engine → when seen without
RECHECK_S = 30.0  # a database without the table is looked at again after this long (it may be migrated)


def enable(engine: Engine) -> None:
    """Write dirty marks on ``engine`` from now on (its schema has ``reconcile_dirty``)."""
    _enabled.add(engine)
    _absent.pop(engine, None)


def enabled(session: OrmSession) -> bool:
    """Whether the session's database takes marks (has ``reconcile_dirty``)."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    if engine in _enabled:
        return True
    seen = _absent.get(engine)  # type: ignore[arg-type]
    if seen is not None and time.monotonic() - seen < RECHECK_S:
        return False
    if inspect(session.connection()).has_table(_TABLE.name):
        enable(engine)  # type: ignore[arg-type]
        return True
    _absent[engine] = time.monotonic()  # type: ignore[index]
    return False


def _changed(obj: object, fields: Iterable[str]) -> bool:
    """Whether the flush may write one of ``fields`` of ``obj``: the attribute was set since
    the last flush (its committed value is kept in ``committed_state``). Setting a column
    to the value it had counts too; a spare mark costs the reconciler one device, and this
    avoids ``state.attrs[…].history``, which builds every attribute's state (a tenth of a
    wave's reconcile CPU at 10,000 devices)."""
    committed = inspect(obj).committed_state
    return bool(committed) and any(f in committed for f in fields)


def devices_in_flush(session: OrmSession) -> set[str]:
    """The device ids whose planner-relevant state this flush writes (pure over the session)."""
    out: set[str] = set()
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Device):
            out.add(obj.id)
        elif isinstance(obj, (SlotAssignment, RolloutMember)):
            out.add(obj.device_id)
    for obj in session.dirty:
        if isinstance(obj, Device):
            if _changed(obj, DEVICE_FIELDS) or (not obj.online and _changed(obj, ("last_seen",))):
                out.add(obj.id)
        elif (isinstance(obj, SlotAssignment) and _changed(obj, ("model_version_id", "rollout_id"))) \
                or (isinstance(obj, RolloutMember) and inspect(obj).committed_state):
            out.add(obj.device_id)
    out.discard(None)  # type: ignore[arg-type]
    return out


def _upsert(conn: Connection, device_ids: list[str]) -> None:
    rows = [{"device_id": d, "version": 1} for d in device_ids]
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        stmt = insert(_TABLE)
        conn.execute(stmt.on_conflict_do_update(index_elements=[_TABLE.c.device_id],
                                                set_={"version": _TABLE.c.version + 1}), rows)
        return
    for d in device_ids:  # other databases: update, else insert
        if conn.execute(_TABLE.update().where(_TABLE.c.device_id == d)
                        .values(version=_TABLE.c.version + 1)).rowcount == 0:
            conn.execute(_TABLE.insert().values(device_id=d, version=1))


def mark(session: OrmSession, device_ids: Iterable[str]) -> None:
    """Mark devices dirty in the session's transaction (for writers that bypass the ORM)."""
    ids = sorted(set(device_ids))  # one order for every writer: no deadlock between two markers
    if ids and enabled(session):
        _upsert(session.connection(), ids)


@event.listens_for(OrmSession, "after_flush")
def _after_flush(session: OrmSession, _ctx: Any) -> None:
    ids = devices_in_flush(session)
    if ids and enabled(session):
        _upsert(session.connection(), sorted(ids))


def read(session: OrmSession, limit: int = 100_000) -> dict[str, int]:
    """The marks now: device id → version (at most ``limit``; more means "everything")."""
    rows = session.execute(select(_TABLE.c.device_id, _TABLE.c.version).limit(limit)).all()
    return {d: v for d, v in rows}


def clear(session: OrmSession, marks: dict[str, int], chunk: int = 500) -> int:
    """Delete the marks read (unless bumped since); returns how many went (as the driver
    counts an executemany). Commits."""
    items = [{"d": d, "v": v} for d, v in sorted(marks.items())]
    stmt = delete(_TABLE).where(_TABLE.c.device_id == bindparam("d"), _TABLE.c.version == bindparam("v"))
    gone = 0
    conn = session.connection()
    for i in range(0, len(items), chunk):  # one statement, many parameter sets (no OR of thousands)
        part = items[i:i + chunk]
        gone += max(conn.execute(stmt, part).rowcount, 0)  # type: ignore[attr-defined]
    session.commit()
    return gone
