"""What a reconcile pass reads of each device, without an ORM object per device per pass.

A full pass plans over every device of the fleet (the selector may take any of them in),
and building a ``Device`` ORM object for each — every column, its JSON decoded, its
datetimes parsed — cost about 0.3 ms per device per pass (issue 14). ``DeviceViews`` reads
only the columns the planner needs, as the driver returns them (no JSON decoding, no
datetime parsing), and keeps per device the decoded ``DeviceView`` and the device part of
its ``DeviceObservation``. A device whose raw column values are
the ones seen last pass costs a tuple comparison; one that changed is decoded again, so
the cache can never serve a stale value (no invalidation to forget). ``last_seen`` moves
with every message, so it is kept apart from the rest.

The reconciler's cache holds one small entry per device (100,000 devices: tens of MiB)
and forgets devices that are gone. The rollout status and member views (``members.py``)
read only a rollout's members the same way (``raw_columns`` in their select, then
``views_of``) through one shared, locked cache of at most ``MAX_ENTRIES`` devices: the
status of a 10,000-member rollout decodes only the members that changed since the last
request (before: an ORM ``Device`` per member per request, 2.8 s p99).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select, type_coerce
from sqlalchemy.types import NullType
from sqlmodel import Session

from ..tables import Device
from .store import device_fields, ts

_TABLE: Table = Device.__table__  # type: ignore[attr-defined]
_STABLE = ("hardware_id", "tags", "online", "reported", "lagging_since", "stale_since")
_COLUMNS = ("id", "last_seen", *_STABLE)
#: how many raw columns a row given to ``views_of`` starts with
WIDTH = len(_COLUMNS)
MAX_ENTRIES = 250_000  # a shared cache that grew past this (devices come and go) starts afresh


def raw_columns() -> list[Any]:
    """The planner's device columns, undecoded: put them first in a select whose rows go to
    ``DeviceViews.views_of``."""
    return [type_coerce(_TABLE.c[c], NullType()) for c in _COLUMNS]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """The columns of one device that a pass reads (decoded), with the ``Device`` names, so
    the pure helpers that take a device (``track_phase``, ``slot_report``) take this too."""

    id: str
    hardware_id: str
    tags: dict[str, Any]
    online: bool
    last_seen: datetime | None
    reported: dict[str, Any]
    lagging_since: datetime | None
    stale_since: datetime | None


@dataclass(slots=True)
class _Entry:
    raw: tuple[Any, ...]
    view: DeviceView
    fields: dict[str, dict[str, Any]]  # slot → the device part of the observation
    raw_seen: Any
    last_seen: datetime | None
    last_seen_ts: float | None


class DeviceViews:
    """Cached decoding of the fleet's planner columns (see the module docstring)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._decoders: dict[str, Callable[[Any], Any]] | None = None
        self._dialect: str | None = None
        self._lock = threading.Lock()  # views_of may be called from several API threads at once

    def _decode_with(self, session: Session) -> dict[str, Callable[[Any], Any]]:
        dialect = session.get_bind().dialect
        if self._decoders is None or self._dialect != dialect.name:
            decoders: dict[str, Callable[[Any], Any]] = {}
            for name in _COLUMNS:
                proc = _TABLE.c[name].type.dialect_impl(dialect).result_processor(dialect, None)
                decoders[name] = proc if proc is not None else (lambda v: v)
            self._decoders, self._dialect = decoders, dialect.name
            self._entries.clear()
        return self._decoders

    def load(self, session: Session) -> list[DeviceView]:
        """Every device (id order), decoding only what changed since the last call."""
        stmt = select(*raw_columns()).order_by(_TABLE.c.id)
        with self._lock:
            decode = self._decode_with(session)
            entries, fresh = self._entries, {}
            out = []
            for row in session.connection().execute(stmt):
                entry = fresh[row[0]] = self._entry(row, entries, decode)
                out.append(entry.view)
            self._entries = fresh  # devices removed since are forgotten
        return out

    def refresh(self, session: Session, device_ids: Iterable[str], chunk: int = 500) -> dict[str, DeviceView]:
        """Read these devices again (``chunk`` ids a query) and return the views of those that
        exist; a device no longer in the table is forgotten. The rest of the cache stays as
        it is (a reconcile pass that reads only the devices marked dirty)."""
        ids = sorted(set(device_ids))
        out: dict[str, DeviceView] = {}
        with self._lock:
            decode = self._decode_with(session)
            entries = self._entries
            for i in range(0, len(ids), chunk):
                part = ids[i:i + chunk]
                stmt = select(*raw_columns()).where(_TABLE.c.id.in_(part))
                for row in session.connection().execute(stmt):
                    entry = entries[row[0]] = self._entry(row, entries, decode)
                    out[entry.view.id] = entry.view
            for device_id in ids:
                if device_id not in out:
                    entries.pop(device_id, None)
        return out

    def views_of(self, session: Session, rows: Iterable[Sequence[Any]]) -> list[DeviceView]:
        """The views of ``rows`` (each starts with the ``raw_columns()`` values), decoding only
        the devices that changed; devices not in ``rows`` stay cached."""
        with self._lock:
            decode = self._decode_with(session)
            entries = self._entries
            if len(entries) > MAX_ENTRIES:
                entries.clear()
            out = []
            for row in rows:
                entry = entries[row[0]] = self._entry(row, entries, decode)
                out.append(entry.view)
        return out

    def _entry(self, row: Sequence[Any], entries: dict[str, _Entry], decode: dict[str, Callable[[Any], Any]]) -> _Entry:
        device_id, raw_seen, raw = row[0], row[1], tuple(row[2:WIDTH])
        entry = entries.get(device_id)
        if entry is None or entry.raw != raw:
            return self._build(device_id, raw_seen, raw, decode)
        if entry.raw_seen != raw_seen:
            seen = decode["last_seen"](raw_seen)
            v = entry.view
            view = DeviceView(v.id, v.hardware_id, v.tags, v.online, seen, v.reported, v.lagging_since, v.stale_since)
            return _Entry(raw=raw, view=view, fields=entry.fields, raw_seen=raw_seen, last_seen=seen,
                          last_seen_ts=ts(seen))
        return entry

    @staticmethod
    def _build(device_id: str, raw_seen: Any, raw: tuple[Any, ...], decode: dict[str, Callable[[Any], Any]]) -> _Entry:
        values = {name: decode[name](value) for name, value in zip(_STABLE, raw)}
        seen = decode["last_seen"](raw_seen)
        view = DeviceView(id=device_id, hardware_id=values["hardware_id"], tags=dict(values["tags"] or {}),
                          online=bool(values["online"]), last_seen=seen, reported=values["reported"] or {},
                          lagging_since=values["lagging_since"], stale_since=values["stale_since"])
        return _Entry(raw=raw, view=view, fields={}, raw_seen=raw_seen, last_seen=seen, last_seen_ts=ts(seen))

    def fields(self, device_id: str, slot: str) -> dict[str, Any]:
        """``store.device_fields`` of the device for ``slot``, built once per change of the device."""
        return _fields_of(self._entries[device_id], slot)

    def fields_of(self, view: DeviceView, slot: str) -> dict[str, Any]:
        """``fields`` of a view ``views_of`` returned (decoded afresh if the cache moved on)."""
        entry = self._entries.get(view.id)  # one read: another thread may clear the cache meanwhile
        if entry is None or entry.view is not view:
            return device_fields(view, slot)
        return _fields_of(entry, slot)


def _fields_of(entry: _Entry, slot: str) -> dict[str, Any]:
    cached = entry.fields.get(slot)
    if cached is None:
        cached = entry.fields[slot] = device_fields(entry.view, slot)
    return {**cached, "last_seen": entry.last_seen_ts}


__all__ = ["DeviceView", "DeviceViews"]
