"""Fleet views that scale: one page of devices, and counts, for any filter.

``page`` answers one page in id order after (or before) a cursor with one SELECT for the
devices plus two batched ones (their slot assignments, the few inactive model versions),
whatever the page size; ``counts`` answers totals by state, hardware profile and model
version per slot with GROUP BY. Both take the same ``DeviceFilter``, which turns into SQL
where clauses only (bound parameters; device-supplied strings never reach SQL text).
Migration 0016_device_views adds the indexes these filters walk.

States are exclusive: ``revoked`` (credentials withdrawn), else ``online``, else
``offline`` (seen before), else ``never_seen`` (enrolled, never connected). ``stale``
(its signed state lags what was signed for it; cloud/trust/freshness.py) is a flag beside
the state: an online device may be stale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, case, exists, false, func, not_, or_
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from ...protocols import SLOTS
from ..tables import Device, DevicePublic, ModelVersion, SlotAssignment
from . import cursor as cursors
from .fleet import public_of

DeviceState = Literal["online", "offline", "never_seen", "revoked"]
STATES: tuple[str, ...] = ("online", "offline", "never_seen", "revoked")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class DeviceFilter:
    """What a view shows; every field narrows (all must match).

    ``models``/``installed`` are (slot, name, version): the version assigned to the slot
    by the controller, or the one the device's verified report says is installed there.
    """

    tags: tuple[tuple[str, str], ...] = ()
    profile: str | None = None
    state: str | None = None
    stale: bool | None = None
    models: tuple[tuple[str, str, str], ...] = ()
    installed: tuple[tuple[str, str, str], ...] = ()

    def scope(self) -> str:
        """A canonical key of the filters (a cursor is valid for these filters only)."""
        parts = [f"t:{k}={v}" for k, v in sorted(self.tags)] + [f"p:{self.profile or ''}", f"s:{self.state or ''}",
                                                                  f"x:{'' if self.stale is None else int(self.stale)}"]
        parts += [f"m:{s}={n}:{v}" for s, n, v in sorted(self.models)]
        parts += [f"i:{s}={n}:{v}" for s, n, v in sorted(self.installed)]
        return "\x1f".join(parts)

    @property
    def active(self) -> bool:
        return self != DeviceFilter()


def parse_tag(value: str) -> tuple[str, str] | None:
    """``KEY=VALUE`` → (key, value); None for anything else."""
    key, sep, val = value.partition("=")
    return (key, val) if sep and key else None


def parse_slot_model(value: str) -> tuple[str, str, str] | None:
    """``SLOT=NAME:VERSION`` (``control=digits:2.0``) → (slot, name, version); None otherwise."""
    slot, sep, ref = value.partition("=")
    name, colon, version = ref.partition(":")
    return (slot, name, version) if sep and colon and slot in SLOTS and name and version else None


def _installed(slot: str, field: str) -> ColumnElement[Any]:
    return col(Device.reported)[("slots", slot, "installed", field)].as_string()


def state_of() -> ColumnElement[Any]:
    """The exclusive state as a SQL expression (for GROUP BY)."""
    return case(
        (col(Device.revoked_at).is_not(None), "revoked"),
        (col(Device.online).is_(True), "online"),
        (col(Device.last_seen).is_not(None), "offline"),
        else_="never_seen",
    )


def _state_clause(state: str) -> ColumnElement[bool]:
    live = col(Device.revoked_at).is_(None)
    if state == "revoked":
        return col(Device.revoked_at).is_not(None)
    if state == "online":
        return and_(live, col(Device.online).is_(True))
    if state == "offline":
        return and_(live, col(Device.online).is_(False), col(Device.last_seen).is_not(None))
    if state == "never_seen":
        return and_(live, col(Device.online).is_(False), col(Device.last_seen).is_(None))
    return false()  # not a state: nothing (the API refuses it at the schema)


def stale_clause() -> ColumnElement[bool]:
    return and_(col(Device.stale_since).is_not(None), col(Device.revoked_at).is_(None))


def where(f: DeviceFilter) -> list[ColumnElement[bool]]:
    """The filter as SQL where clauses over ``device``."""
    out: list[ColumnElement[bool]] = []
    for key, value in f.tags:
        out.append(col(Device.tags)[key].as_string() == value)
    if f.profile:
        out.append(col(Device.hardware_id) == f.profile)
    if f.state:
        out.append(_state_clause(f.state))
    if f.stale is not None:
        out.append(stale_clause() if f.stale else not_(stale_clause()))
    for slot, name, version in f.models:  # aliased: counts joins slot_assignment itself
        sa, mv = aliased(SlotAssignment), aliased(ModelVersion)
        out.append(exists().where(
            col(sa.device_id) == col(Device.id), col(sa.slot) == slot,
            col(sa.model_version_id) == select(mv.id).where(
                col(mv.name) == name, col(mv.version) == version).scalar_subquery()))
    for slot, name, version in f.installed:
        out.append(and_(_installed(slot, "name") == name, _installed(slot, "version") == version))
    return out


class DevicePage(BaseModel):
    """One page of devices in id order; follow ``next_cursor`` (None: the last page)."""

    items: list[DevicePublic]
    next_cursor: str | None = Field(default=None, description="the page after this one; None on the last page")
    prev_cursor: str | None = Field(default=None, description="the page before this one; None on the first page")
    limit: int


class DeviceCounts(BaseModel):
    """How many devices match the filters, by state, hardware profile and model version per slot."""

    total: int
    stale: int
    by_state: dict[str, int]
    by_profile: dict[str, int]
    by_model: dict[str, dict[str, int]] = Field(description="slot → NAME:VERSION assigned by the controller → devices")
    by_installed: dict[str, dict[str, int]] = Field(
        description="slot → NAME:VERSION the device's verified report says is installed → devices")


def publics(session: Session, devices: Sequence[Device]) -> list[DevicePublic]:
    """Wire shapes of ``devices``: two queries whatever their number."""
    from ..lifecycle import flags

    desired: dict[str, dict[str, str]] = defaultdict(dict)
    ids = [d.id for d in devices]
    if ids:
        rows = session.exec(
            select(SlotAssignment.device_id, SlotAssignment.slot, ModelVersion.name, ModelVersion.version)
            .where(col(SlotAssignment.model_version_id) == col(ModelVersion.id))
            .where(col(SlotAssignment.device_id).in_(ids))).all()
        for device_id, slot, name, version in rows:
            desired[device_id][slot] = f"{name}:{version}"
    flagged = flags(session)
    return [public_of(d, desired.get(d.id, {}), flagged) for d in devices]


def page_devices(session: Session, f: DeviceFilter, *, limit: int = DEFAULT_LIMIT,
                 cursor: str | None = None) -> tuple[list[Device], str | None, str | None]:
    """One page of device rows and the (next, prev) cursors; one SELECT.

    Raises:
        BadCursor: the cursor is not one issued for these filters.
    """
    limit = max(1, min(MAX_LIMIT, limit))
    scope = f.scope()
    at = cursors.decode(cursor, scope) if cursor else None
    q = select(Device)
    for clause in where(f):
        q = q.where(clause)
    backwards = at is not None and at.direction == "before"
    if at is not None:
        q = q.where(col(Device.id) < at.key if backwards else col(Device.id) > at.key)
    q = q.order_by(col(Device.id).desc() if backwards else col(Device.id)).limit(limit + 1)
    rows = list(session.exec(q).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    if not rows:
        back = cursors.encode(cursors.Cursor("before", at.key), scope) if at and not backwards else None
        return [], None, back
    after = cursors.encode(cursors.Cursor("after", rows[-1].id), scope)
    before = cursors.encode(cursors.Cursor("before", rows[0].id), scope)
    if backwards:
        return rows, after, before if more else None
    return rows, after if more else None, before if at is not None else None


def page(session: Session, f: DeviceFilter, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> DevicePage:
    """One page of devices (three queries whatever ``limit``)."""
    rows, nxt, prev = page_devices(session, f, limit=limit, cursor=cursor)
    return DevicePage(items=publics(session, rows), next_cursor=nxt, prev_cursor=prev, limit=max(1, min(MAX_LIMIT, limit)))


def counts(session: Session, f: DeviceFilter, *, installed: bool = True) -> DeviceCounts:
    """Totals for the filters, each a GROUP BY (no device row is loaded). ``installed=False``
    leaves out ``by_installed`` (it reads every matching device's report JSON: the dearest part)."""
    clauses = where(f)

    def grouped(*columns: Any) -> list[Any]:
        q = sa_select(*columns, func.count()).select_from(Device)
        for clause in clauses:
            q = q.where(clause)
        return list(session.execute(q.group_by(*columns)).all())

    state = state_of()
    by_state = {s: 0 for s in STATES}
    stale = 0
    for s, is_stale, n in grouped(state, case((stale_clause(), 1), else_=0)):
        by_state[s] = by_state.get(s, 0) + n
        stale += n if is_stale else 0
    by_profile = {hw: n for hw, n in sorted(grouped(col(Device.hardware_id)))}
    q = (select(SlotAssignment.slot, ModelVersion.name, ModelVersion.version, func.count())
         .where(col(SlotAssignment.model_version_id) == col(ModelVersion.id))
         .where(col(SlotAssignment.device_id) == col(Device.id)))
    for clause in clauses:
        q = q.where(clause)
    by_model: dict[str, dict[str, int]] = {slot: {} for slot in SLOTS}
    for slot, name, version, n in session.exec(q.group_by(SlotAssignment.slot, ModelVersion.name, ModelVersion.version)):
        by_model.setdefault(slot, {})[f"{name}:{version}"] = n
    by_installed: dict[str, dict[str, int]] = {slot: {} for slot in SLOTS}
    for slot in SLOTS if installed else ():
        for name, version, n in grouped(_installed(slot, "name"), _installed(slot, "version")):
            if name is not None and version is not None:
                by_installed[slot][f"{name}:{version}"] = n
    return DeviceCounts(total=sum(by_state.values()), stale=stale, by_state=by_state, by_profile=by_profile,
                        by_model={s: dict(sorted(v.items())) for s, v in by_model.items()},
                        by_installed={s: dict(sorted(v.items())) for s, v in by_installed.items()})



def on_versions(session: Session, f: DeviceFilter, digests: Sequence[str]) -> int:
    """How many matching devices report one of ``digests`` installed in any slot (e.g. the
    blocked versions: few, so this runs only when there are some)."""
    if not digests:
        return 0
    q = sa_select(func.count()).select_from(Device)
    for clause in where(f):
        q = q.where(clause)
    q = q.where(or_(*(_installed(slot, "digest").in_(list(digests)) for slot in SLOTS)))
    return int(session.execute(q).scalar_one())
