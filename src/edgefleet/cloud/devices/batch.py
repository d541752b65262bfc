"""Batched ingest: many device messages applied in one transaction (group commit).

The bridge's ingest thread takes what is queued (up to ``ingest_batch_max`` messages, or
what arrived within ``ingest_batch_wait_s``), decodes and validates each, and hands the
``status``, ``reported`` and ``telemetry`` messages here in arrival order. ``apply`` runs
them in one transaction and returns one result per message; the bridge acknowledges the
batch (MQTT 5) only after it committed.

Inside the transaction:

1. one ``SELECT … WHERE id IN (…)`` of the batch's device rows (no per-message round trip);
2. ``_stage``, in memory and in order: each message is admitted, verified and folded into
   its device's row by the same pure functions as the per-message path
   (``ingest.admitted``/``*_onto``, ``report_verify.check_*``, ``freshness.update``,
   ``history.reported_rows``, ``telemetry_store.values_from_message``,
   ``shadow_index.fold_pair_values``). A device's anti-replay windows and period end advance
   in memory, so a replay of a message in the same batch is refused like any other. A late
   message (its seq below the highest, ``replay_window``) changes only what
   ``report_verify`` says it does; the late periods are checked against the counted ones
   with one query for the whole batch (``report_verify.counted_periods``, before staging:
   the signed telemetry whose seq is below one already seen for its device);
3. ``_write``: per changed device one UPDATE of the columns that changed, guarded like
   ``report_verify._advance`` (a compare-and-set: each window the batch moved is still the
   (highest seq, bitmap) pair it read), grouped into one executemany per statement shape; one
   executemany INSERT each for device history, telemetry history and new pair statistics
   (existing ones: one executemany UPDATE by id); the rollout members
   (``rollout.store.record_telemetry_many``, one SELECT) flushed; the reconciler's dirty marks (``rollout.dirty.mark``) for devices whose planner-relevant
   columns moved, in the same transaction.

Isolation: a refusal (``ingest.Refused``) is that message's result and costs the others
nothing. A message that raises while staged is taken out (its result: the exception) and
the batch is staged again without it. A write that fails for a reason that is not an
outage is retried one message at a time, so only the bad message is lost. A guard that
does not hold (another replica accepted one of the devices' reports meanwhile: the batch
is staged again on what it committed, so its message, now late, still counts), or a lost
race (deadlock), retries the batch; after ``CONFLICT_RETRIES`` the messages go one at a
time. A database outage (``db.is_unavailable``) raises: the bridge retries the whole batch
and acknowledges none of it before it commits.
"""

from __future__ import annotations

import functools
import logging
import operator
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union, cast

from sqlalchemy import BigInteger, Table, bindparam, insert, type_coerce, update
from sqlalchemy import select as sa_select
from sqlalchemy.types import NullType
from sqlmodel import Session

from ...protocols import Reported, Status, Telemetry
from ...registry import report_sig
from ..db import is_conflict, is_unavailable
from ..rollout import dirty
from ..rollout import store as rollout_store
from ..shadow_index import PairKey, ShadowPairStats, fold_pair_values, pair_key
from ..tables import Device
from ..trust import freshness
from . import history, ingest, report_verify, telemetry_store
from .ingest import Refused
from .replay_window import DEFAULT_SIZE

log = logging.getLogger(__name__)

Message = Union[Status, Reported, Telemetry]
#: one per message: None (applied), a ``Refused`` (its ``outcome`` is the counter), or the error
Result = Union[BaseException, None]
Transaction = Callable[[], AbstractContextManager[Session]]
LabelCheck = Callable[[Telemetry], Telemetry]

CONFLICT_RETRIES = 5
CHANNELS = ("status", "reported", "telemetry")  # what a batch takes (events are applied one by one)

_DEVICE: Table = Device.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(c.name for c in _DEVICE.columns if c.name != "id")
_HISTORY: Table = history.DeviceHistory.__table__  # type: ignore[attr-defined]
_TELEMETRY: Table = telemetry_store.TelemetryPeriod.__table__  # type: ignore[attr-defined]
_PAIRS: Table = ShadowPairStats.__table__  # type: ignore[attr-defined]
_PAIR_FOLDED = ("stats", "frames", "disagreements", "dropped", "periods", "updated_at")


class BatchConflict(Exception):
    """Another writer advanced a device's seq (or period) after the batch read its row."""


class _Poison(Exception):
    def __init__(self, index: int, error: BaseException):
        super().__init__(str(error))
        self.index, self.error = index, error


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Staged:
    devices: dict[str, DeviceRecord]
    before: dict[str, tuple[Any, ...]]  # device → its columns as read (``_COLUMNS`` order)
    results: list[Result]
    guards: dict[str, set[str]] = field(default_factory=dict)  # device → the channels whose window moved
    counted: dict[str, list[report_verify.Period]] = field(default_factory=dict)  # device → periods counted
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    telemetry_rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[PairKey, dict[str, Any]] = field(default_factory=dict)  # folded values (with "id" when stored)
    telemetry: list[Telemetry] = field(default_factory=list)


class DeviceRecord:
    """A device row as plain attributes, for the pure functions that fold messages onto it
    (``ingest.*_onto``, ``report_verify.check_*``, ``freshness.update``): no ORM object per
    device per batch. The columns the ingest path only overwrites or never reads (``RAW``) are
    kept as the driver returned them, undecoded: compared unchanged, they are not written."""

    __slots__ = ("id", *_COLUMNS)
    RAW = ("telemetry", "release_floor", "tags", "created_at", "telemetry_at", "reported_at", "last_seen")
    id: str


def _record_query() -> Any:
    return sa_select(*(type_coerce(_DEVICE.c[c], NullType()).label(c) if c in DeviceRecord.RAW else _DEVICE.c[c]
                       for c in ("id", *_COLUMNS)))


_RECORD_QUERY = _record_query()
# built once (bindparam(expanding): the ids are bound, not built into each statement): a batch
# of one message cost about 0.5 ms of statement construction and cache keys per statement
_DEVICES_IN = _RECORD_QUERY.where(_DEVICE.c.id.in_(bindparam("ids", expanding=True)))
_PAIRS_IN = sa_select(_PAIRS.c.id, _PAIRS.c.device_id, _PAIRS.c.control_name, _PAIRS.c.control_version,
                      _PAIRS.c.candidate_name, _PAIRS.c.candidate_version, _PAIRS.c.stats, _PAIRS.c.periods
                      ).where(_PAIRS.c.device_id.in_(bindparam("ids", expanding=True)))
_NAMES = ("id", *_COLUMNS)  # the query's columns, in order
_VALUES = operator.attrgetter(*_COLUMNS)  # a record's columns as one tuple (C, not a Python loop)


def _load(session: Session, msgs: Sequence[Message]) -> tuple[dict[str, DeviceRecord], dict[PairKey, dict[str, Any]]]:
    """The batch's device rows (plain records: the batch writes them itself) and its pair rows (values)."""
    ids = sorted({m.device_id for m in msgs})
    devices: dict[str, DeviceRecord] = {}
    conn = session.connection()
    for i in range(0, len(ids), 500):
        for row in conn.execute(_DEVICES_IN, {"ids": ids[i:i + 500]}):
            record = DeviceRecord()
            for name, value in zip(_NAMES, row):
                setattr(record, name, value)
            devices[record.id] = record
    pair_devices = sorted({m.device_id for m in msgs if isinstance(m, Telemetry) and pair_key(m) is not None})
    pairs: dict[PairKey, dict[str, Any]] = {}
    if pair_devices:
        for row in conn.execute(_PAIRS_IN, {"ids": pair_devices}):
            pairs[(row.device_id, row.control_name, row.control_version, row.candidate_name,
                   row.candidate_version)] = {"id": row.id, "stats": row.stats, "periods": row.periods}
    return devices, pairs


def _late_spans(devices: dict[str, DeviceRecord], msgs: Sequence[Message]) -> list[tuple[str, datetime, datetime]]:
    """The periods of the telemetry that may be late (signed by the device, a seq below one
    already accepted or earlier in the batch, ending by the period watermark): what to look
    up in the telemetry history, once for the batch. A forgery costs no query."""
    top: dict[str, int | None] = {d: r.telemetry_seq for d, r in devices.items()}  # type: ignore[attr-defined]
    spans = []
    for msg in msgs:
        if not isinstance(msg, Telemetry) or msg.seq is None or msg.device_id not in devices:
            continue
        device, highest = devices[msg.device_id], top[msg.device_id]
        if highest is not None and msg.seq < highest:
            try:
                report_verify._check_signature(device, msg, "telemetry")  # type: ignore[arg-type]
            except Refused:
                continue
            start, end = report_verify._aware(msg.period_start), report_verify._aware(msg.period_end)
            spans.append((msg.device_id, start, end))
        top[msg.device_id] = msg.seq if highest is None else max(highest, msg.seq)
    return spans


def _stage(session: Session, msgs: Sequence[Message], check_labels: LabelCheck | None,
           clock: Callable[[], datetime], window: int) -> _Staged:
    devices, pairs = _load(session, msgs)
    st = _Staged(devices, {i: _VALUES(d) for i, d in devices.items()}, results=[None] * len(msgs))
    spans = _late_spans(devices, msgs)
    if spans:
        st.counted = report_verify.counted_periods(session, spans)
    verdicts = _verify_signatures(devices, msgs)
    for index, msg in enumerate(msgs):
        try:
            _stage_one(st, msg, pairs, check_labels, clock(), window, verdicts.get(index))
        except Refused as exc:
            st.results[index] = exc
        except Exception as exc:  # a bug or a payload the validators let through: this message alone
            raise _Poison(index, exc) from exc
    st.pairs = {k: v for k, v in pairs.items() if "updated_at" in v}  # the folded ones
    return st


def _verify_signatures(devices: dict[str, DeviceRecord], msgs: Sequence[Message]) -> dict[int, bool]:
    """The Ed25519 check of every signed message in the batch, on several threads at once
    (``report_sig.verify_many``): message index → verdict. The rest of each message's checks
    (key, seq window, periods) stays in order in ``_stage_one``."""
    todo: list[tuple[str, bytes, str]] = []
    where: list[int] = []
    for index, msg in enumerate(msgs):
        if isinstance(msg, (Reported, Telemetry)) and (device := devices.get(msg.device_id)) is not None:
            item = report_verify.signature_input(device, msg)
            if item is not None:
                todo.append(item)
                where.append(index)
    return dict(zip(where, report_sig.verify_many(todo)))


def _stage_one(st: _Staged, msg: Message, pairs: dict[PairKey, dict[str, Any]],
               check_labels: LabelCheck | None, now: datetime, window: int, verified: bool | None = None) -> None:
    # a DeviceRecord carries the Device columns as attributes: the pure functions take either
    device = ingest.admitted(cast("Device | None", st.devices.get(msg.device_id)), msg.device_id)
    if isinstance(msg, Status):
        ingest.status_onto(device, msg, now)
    elif isinstance(msg, Reported):
        placed = report_verify.check_reported(device, msg, window, verified)  # signed, seq in the window: else refused
        report_verify.accept(device, "reported", placed)
        st.guards.setdefault(device.id, set()).add("reported")
        if placed.late:  # a newer report was applied first: its history only, the newest state stands
            st.history_rows.extend(ingest.late_reported_rows(device, msg, placed.seq, now))
            return
        previous = ingest.reported_onto(device, msg, now)
        st.history_rows.extend(history.reported_rows(device.id, previous, msg.slots, at=now))
        freshness.update(device, now)
    else:
        placed, start, end = report_verify.check_telemetry(device, msg, now, window, verified)
        counted = st.counted.setdefault(device.id, [])
        if placed.late:  # overlapping no period counted, stored or earlier in this batch
            report_verify.late_overlap(device.id, placed.seq, start, end, counted)
        report_verify.accept(device, "telemetry", placed)
        if not placed.late:
            device.report_period_end = end
        st.guards.setdefault(device.id, set()).add("telemetry")
        if check_labels is not None:
            msg = check_labels(msg)  # unknown class names dropped before anything is stored
        counted.append((start, end))
        if not placed.late:  # the device's latest period stays the newest seq's
            ingest.telemetry_onto(device, msg, now)
        st.telemetry_rows.append(telemetry_store.values_from_message(msg, now))
        key = pair_key(msg)
        if key is not None:
            pairs[key] = fold_pair_values(pairs.get(key), msg, now)
        st.telemetry.append(msg)


@functools.lru_cache(maxsize=256)
def _update_statement(columns: tuple[str, ...], guards: tuple[str, ...]) -> Any:
    """One device UPDATE; for each channel in ``guards`` a compare-and-set on its window."""
    t = _DEVICE
    stmt = update(t).where(t.c.id == bindparam("k_id"))
    for channel in guards:
        for c in report_verify.WINDOW_COLUMNS[channel]:
            stmt = stmt.where(t.c[c].is_not_distinct_from(bindparam(f"g_{c}", type_=BigInteger)))
    return stmt.values({t.c[c]: bindparam(f"v_{c}", type_=t.c[c].type) for c in columns})


def _write(session: Session, st: _Staged) -> None:
    conn = session.connection()
    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
    planner_moved = []  # devices whose planner-relevant state changed: dirty marks (rollout/dirty.py)
    for device_id in sorted(st.devices):  # one lock order for every replica
        device, values = st.devices[device_id], st.before[device_id]
        after = _VALUES(device)
        guard = st.guards.get(device_id, set())
        if after == values and not guard:
            continue
        before = dict(zip(_COLUMNS, values))
        changed = {c: a for c, a, b in zip(_COLUMNS, after, values) if a != b}
        if any(c in changed for c in dirty.DEVICE_FIELDS) or ("last_seen" in changed and not device.online):  # type: ignore[attr-defined]
            planner_moved.append(device_id)
        params = {f"v_{c}": v for c, v in changed.items()}
        params.update({f"g_{c}": before[c] for channel in guard for c in report_verify.WINDOW_COLUMNS[channel]},
                      k_id=device_id)
        shapes.setdefault((tuple(sorted(changed)), tuple(sorted(guard))), []).append(params)
    multi = conn.dialect.supports_sane_multi_rowcount
    for (columns, guards), rows in shapes.items():
        stmt = _update_statement(columns, guards)
        if multi and len(rows) > 1:
            if conn.execute(stmt, rows).rowcount != len(rows):
                raise BatchConflict(f"one of {len(rows)} devices was updated by another writer meanwhile")
            continue
        for row in rows:
            if conn.execute(stmt, row).rowcount != 1:
                raise BatchConflict(f"device {row['k_id']} was updated by another writer meanwhile")
    dirty.mark(session, planner_moved)  # the ORM's after_flush hook does not see Core updates
    if st.history_rows:
        conn.execute(_INSERT[_HISTORY.name], st.history_rows)
    if st.telemetry_rows:
        conn.execute(_INSERT[_TELEMETRY.name], st.telemetry_rows)
    new = [v for v in st.pairs.values() if "id" not in v]
    if new:
        conn.execute(_INSERT[_PAIRS.name], new)
    stored = [{"k_id": v["id"], **{f"v_{c}": v[c] for c in _PAIR_FOLDED}} for v in st.pairs.values() if "id" in v]
    if stored:
        conn.execute(_PAIRS_UPDATE, stored)
    if st.telemetry:
        rollout_store.record_telemetry_many(session, st.telemetry)
    session.flush()


_INSERT = {t.name: insert(t) for t in (_HISTORY, _TELEMETRY, _PAIRS)}
_PAIRS_UPDATE = update(_PAIRS).where(_PAIRS.c.id == bindparam("k_id")).values(
    {_PAIRS.c[c]: bindparam(f"v_{c}", type_=_PAIRS.c[c].type) for c in _PAIR_FOLDED})


def apply(transaction: Transaction, msgs: Sequence[Message], *, check_labels: LabelCheck | None = None,
          clock: Callable[[], datetime] = _utcnow, replay_window: int = DEFAULT_SIZE) -> list[Result]:
    """Apply ``msgs`` (arrival order) in one transaction; one ``Result`` per message.

    Args:
        transaction: opens a session whose transaction commits when the block ends
            without an error (``Controller.ingest_session``).
        check_labels: the label book's ``check_telemetry`` (class names a model lacks dropped).
        clock: the receive time of each message (tests pass a fixed one).
        replay_window: ``[controller] replay_window`` (``replay_window.place``; 1: strict order).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database is unavailable (``db.is_unavailable``):
            nothing of the batch was stored; retry it whole.
    """
    results: list[Result] = [None] * len(msgs)
    todo = list(range(len(msgs)))
    conflicts = 0
    while todo:
        batch = [msgs[i] for i in todo]
        try:
            with transaction() as session:
                staged = _stage(session, batch, check_labels, clock, replay_window)
                _write(session, staged)
        except _Poison as poison:
            index = todo.pop(poison.index)
            results[index] = poison.error
            log.debug("device %s: message taken out of its batch (%s)", msgs[index].device_id, poison.error)
            continue
        except Exception as exc:
            conflict = isinstance(exc, BatchConflict) or is_conflict(exc)
            if conflict and conflicts < CONFLICT_RETRIES:
                conflicts += 1
                continue
            if is_unavailable(exc) and not conflict:
                raise
            if len(todo) == 1:
                results[todo[0]] = exc
                return results
            log.warning("a batch of %d messages could not be written (%s); applying them one at a time",
                        len(todo), str(exc).splitlines()[0][:200])
            for i in todo:
                results[i] = apply(transaction, [msgs[i]], check_labels=check_labels, clock=clock,
                                   replay_window=replay_window)[0]
            return results
        for i, result in zip(todo, staged.results):
            results[i] = result
        return results
    return results


__all__ = ["CHANNELS", "CONFLICT_RETRIES", "BatchConflict", "Message", "Result", "apply"]
