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

The cache belongs to one reconciler; it holds one small entry per device (100,000 devices:
tens of MiB) and forgets devices that are gone.
"""

from __future__ import annotations

from collections.abc import Callable
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
        decode = self._decode_with(session)
        stmt = select(*(type_coerce(_TABLE.c[c], NullType()) for c in _COLUMNS)).order_by(_TABLE.c.id)
        entries, fresh = self._entries, {}
        out = []
        for row in session.connection().execute(stmt):
            device_id, raw_seen, raw = row[0], row[1], tuple(row[2:])
            entry = entries.get(device_id)
            if entry is None or entry.raw != raw:
                entry = self._build(device_id, raw_seen, raw, decode)
            elif entry.raw_seen != raw_seen:
                seen = decode["last_seen"](raw_seen)
                entry.raw_seen, entry.last_seen, entry.last_seen_ts = raw_seen, seen, ts(seen)
                v = entry.view
                entry.view = DeviceView(v.id, v.hardware_id, v.tags, v.online, seen, v.reported,
                                        v.lagging_since, v.stale_since)
            fresh[device_id] = entry
            out.append(entry.view)
        self._entries = fresh  # devices removed since are forgotten
        return out

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
        entry = self._entries[device_id]
        cached = entry.fields.get(slot)
        if cached is None:
            cached = entry.fields[slot] = device_fields(entry.view, slot)
        cached["last_seen"] = entry.last_seen_ts
        return cached


__all__ = ["DeviceView", "DeviceViews"]
