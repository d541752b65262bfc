"""A rollout's member rows as the reconciler reads them each pass: plain objects, not ORM rows.

A full pass reads every member of a rollout. Building a ``RolloutMember`` ORM instance per
member (pydantic private attributes, instrumented attributes, ``previous`` decoded from
JSON) cost about half of a 10,000-member pass (issue 14). ``read`` returns ``MemberRow``
objects (the same attribute names, slots, ``previous`` decoded once per distinct value);
the pass changes them freely. What it writes goes back as Core ``executemany`` statements,
after the pass has locked the devices it assigns, so the lock order stays device row, then
member rows: the columns an action changed (``write``: one statement per set of columns,
only those columns), and the phase columns ``store.track_phase`` moved on every other
member (``write_phases``). ``orm_rows`` loads members as ORM objects for other writers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Table, bindparam, select, type_coerce, update
from sqlalchemy import insert as sa_insert
from sqlalchemy.types import NullType
from sqlmodel import Session, col

from .tables import RolloutMember


@dataclass(slots=True)
class MemberRow:
    """One ``rollout_member`` row (the columns of ``RolloutMember``, same names)."""

    rollout_id: str
    device_id: str
    wave: int
    assigned_at: float
    dispatched_at: float | None = None
    previous: dict[str, Any] | None = None
    reverted_at: float | None = None
    timed_out_at: float | None = None
    seen_phase: str | None = None
    seen_target: str | None = None
    phase_since: float | None = None
    frames: int = 0
    errors: int = 0
    nan_outputs: int = 0
    candidate_p99_ms: float | None = None
    candidate_periods: int = 0
    baseline_p99_ms: float | None = None
    baseline_periods: int = 0
    agreement: float | None = None
    agreement_frames: int = 0


_HOT: Table = RolloutMember.__table__  # type: ignore[attr-defined]
FIELDS = tuple(f.name for f in fields(MemberRow))
PHASE_FIELDS = ("seen_phase", "seen_target", "phase_since")
_PREVIOUS: dict[str, Any] = {}  # ``previous`` as stored → decoded (a rollout names few models)


def decode_previous(raw: Any) -> Any:
    """A ``previous`` column read raw (JSON text), decoded once per distinct value; the dict
    returned is shared: read it, never change it."""
    if raw is None or not isinstance(raw, str):
        return raw
    value = _PREVIOUS.get(raw)
    if value is None:
        if len(_PREVIOUS) > 10_000:
            _PREVIOUS.clear()
        value = _PREVIOUS[raw] = json.loads(raw)
    return value


def columns(table: Table = _HOT) -> list[Any]:
    """The member columns in ``FIELDS`` order, ``previous`` raw (for ``decode_previous``)."""
    return [type_coerce(table.c[k], NullType()) if k == "previous" else table.c[k] for k in FIELDS]


_AT_PREVIOUS = FIELDS.index("previous")
_WRITABLE = frozenset(FIELDS) - {"rollout_id", "device_id"}


def from_values(values: Any) -> MemberRow:
    """A ``MemberRow`` from the values of ``columns()`` (in that order)."""
    v = list(values)
    v[_AT_PREVIOUS] = decode_previous(v[_AT_PREVIOUS])
    return MemberRow(*v)


def read(session: Session, rollout_id: str, device_ids: Iterable[str] | None = None,
         chunk: int = 500) -> dict[str, MemberRow]:
    """The rollout's (hot) member rows by device id: all of them, or those of ``device_ids``
    (``chunk`` ids a query)."""
    stmt = select(*columns()).where(_HOT.c.rollout_id == rollout_id)
    if device_ids is None:
        return {r[1]: from_values(r) for r in session.connection().execute(stmt).all()}
    ids = sorted(set(device_ids))
    out: dict[str, MemberRow] = {}
    for i in range(0, len(ids), chunk):
        for r in session.connection().execute(stmt.where(_HOT.c.device_id.in_(ids[i:i + chunk]))).all():
            out[r[1]] = from_values(r)
    return out


def orm_rows(session: Session, rollout_id: str, device_ids: Iterable[str]) -> dict[str, RolloutMember]:
    """The ORM rows of these members (500 ids a query), for the pass to change and flush."""
    ids = sorted(set(device_ids))
    out: dict[str, RolloutMember] = {}
    for i in range(0, len(ids), 500):
        for m in session.execute(select(RolloutMember).where(col(RolloutMember.rollout_id) == rollout_id)
                                 .where(col(RolloutMember.device_id).in_(ids[i:i + 500]))).scalars().all():
            out[m.device_id] = m
    return out


def insert(session: Session, rows: list[MemberRow]) -> int:
    """Insert ``rows`` (new members, every column) in one executemany; returns how many."""
    if not rows:
        return 0
    session.connection().execute(sa_insert(_HOT), [{k: getattr(m, k) for k in FIELDS} for m in rows])
    return len(rows)


def write(session: Session, rows: list[tuple[MemberRow, Iterable[str]]]) -> int:
    """Write the named columns of each row (``(row, columns)``): one executemany per set of
    columns, so a column an action did not change — a telemetry figure ingest moved
    meanwhile — is never written back. Returns how many rows."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for m, names in rows:
        key = tuple(sorted(set(names)))
        if not key:
            continue
        if not set(key) <= _WRITABLE:
            raise ValueError(f"not a member column that may be written: {sorted(set(key) - _WRITABLE)}")
        shapes.setdefault(key, []).append({"k_rollout": m.rollout_id, "k_device": m.device_id,
                                           **{f"v_{c}": getattr(m, c) for c in key}})
    n = 0
    for key, params in shapes.items():
        stmt = (update(_HOT).where(_HOT.c.rollout_id == bindparam("k_rollout"))
                .where(_HOT.c.device_id == bindparam("k_device"))
                .values({_HOT.c[c]: bindparam(f"v_{c}", type_=_HOT.c[c].type) for c in key}))
        session.connection().execute(stmt, params)
        n += len(params)
    return n


def write_phases(session: Session, rows: list[MemberRow]) -> int:
    """Write the phase columns of ``rows`` (one executemany); returns how many."""
    if not rows:
        return 0
    stmt = (update(_HOT).where(_HOT.c.rollout_id == bindparam("k_rollout"))
            .where(_HOT.c.device_id == bindparam("k_device"))
            .values(seen_phase=bindparam("v_phase"), seen_target=bindparam("v_target"),
                    phase_since=bindparam("v_since")))
    session.connection().execute(stmt, [{"k_rollout": m.rollout_id, "k_device": m.device_id, "v_phase": m.seen_phase,
                                         "v_target": m.seen_target, "v_since": m.phase_since} for m in rows])
    return len(rows)


__all__ = ["FIELDS", "PHASE_FIELDS", "MemberRow", "columns", "decode_previous", "from_values", "insert", "orm_rows", "read",
           "write", "write_phases"]
