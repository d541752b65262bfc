"""Rollout operations behind ``/api/v1/rollouts`` and ``fleet rollout``: start (with
explicit supersession), list, status, operator commands, events.

Flow: ``start_rollout`` validates the request with ``build_spec`` (every syntax error is a
``SpecError`` → HTTP 400), looks up the model, marks every live rollout of the same slot
that shares a device with the new one ``superseded`` (row-locked, logged on both), and
inserts the new rollout as ``pending``; the reconciler does the rest on its next pass.
A request with ``start_at`` (``--start-at``) is stored ``scheduled`` with its start time in
the state and supersedes nothing yet: the reconciler starts it on time (it is in the
database, so a restarted controller does too) and supersedes then
(``supersede_overlapping``); before that it can be rescheduled or cancelled. ``rate`` /
``ramp`` pace dispatch (``pace.py``).
``status`` folds the same rows as the reconciler into ``rollout_status`` and renders it as
plain JSON (``RolloutStatusPublic``).
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session, col, select

from .. import catalog, lifecycle
from ..errors import BadRequest, Conflict, NotFound
from ..tables import MODEL_REF_MAX, MODEL_REF_PATTERN, Device, ModelVersion
from . import build_spec, parse_duration, rollout_status, supersede, supersedes
from .commands import COMMANDS, reschedule
from .errors import IllegalTransition, SpecError
from .listing import RowFigures, page_rollouts, row_figures
from .members import member_count, member_observations, member_row
from .model import RolloutSpec, RolloutState
from .pace import parse_pace, parse_start_at
from .reconciler import command as apply_command_row
from .store import (
    StaleState,
    add_event,
    event_rows,
    lock_rollout,
    members_of,
    model_ref,
    spec_of,
    state_of,
    write_state,
)
from .tables import Rollout

DURATION_PATTERN = r"^(?:0|(?:[0-9]{1,9}(?:\.[0-9]{1,6})?(?:ms|s|m|h|d)){1,5})$"  # what parse_duration reads
_RATE_N = r"(?:[1-9][0-9]{0,2}(?:\.[0-9]{1,6})?|1000(?:\.0{1,6})?)/(?:min|m)"  # pace.py: 1..1000 per minute
RATE_PATTERN = rf"^{_RATE_N}$"
RAMP_PATTERN = (rf"^{_RATE_N},x(?:1\.[1-9][0-9]{{0,5}}|[234](?:\.[0-9]{{1,6}})?|5(?:\.0{{1,6}})?)"
                r",every=(?:[1-9][0-9]{0,5}|1000000)$")  # factor 1.1..5, every 1..1e6
WAVES_PATTERN = r"^ *[0-9]{1,3}(?:\.[0-9]{1,3})?%? *(?:, *[0-9]{1,3}(?:\.[0-9]{1,3})?%? *){0,19}$"


class RolloutCreate(BaseModel):
    """``fleet rollout start`` / ``POST /api/v1/rollouts``."""

    model: str = Field(pattern=MODEL_REF_PATTERN, max_length=MODEL_REF_MAX, description="NAME:VERSION")
    slot: Literal["control", "shadow"] = "control"
    select: str = Field(default="all", min_length=1, max_length=2000,
                        description="all, or tag/hardware selectors (see docs/rollouts.md)")
    waves: str = Field(default="1,10,50,100", pattern=WAVES_PATTERN, max_length=200,
                       description="increasing percentages up to 100, comma-separated")
    soak: str = Field(default="30m", pattern=DURATION_PATTERN, description="a duration with a unit: 90s, 30m, 1h30m, 2d")
    gates: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=32, description="default: failure<=0.02")
    on_breach: Literal["pause", "rollback"] = "rollback"
    device_timeout: str = Field(default="30m", pattern=DURATION_PATTERN, description="a duration with a unit")
    max_concurrent: int | None = Field(default=None, ge=1, le=1_000_000)
    start_at: str | None = Field(default=None, min_length=1, max_length=64, description=(
        "schedule the start: ISO 8601 with an offset (2026-05-01T22:00:00+02:00, ...Z) or relative "
        "(+10m); the rollout is 'scheduled' until then"))
    rate: str | None = Field(default=None, max_length=64, pattern=RATE_PATTERN, description="dispatch at most N devices per "
                             "minute, e.g. 60/min (1..1000)")
    ramp: str | None = Field(default=None, max_length=64, pattern=RAMP_PATTERN, description="START/min,xFACTOR,every=K: the "
                             "rate grows by FACTOR (1.1..5) after every K successes, up to 1000/min")

    @field_validator("rate", "ramp", mode="before")
    @classmethod
    def _pace(cls, value: object, info: Any) -> object:
        if isinstance(value, str):
            try:
                parse_pace(**{info.field_name: value})
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("soak", "device_timeout", mode="before")  # before any pattern: the clear message wins
    @classmethod
    def _duration_with_unit(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                parse_duration(value, require_unit=True)  # "30" is refused: seconds or minutes?
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return value


class RolloutReschedule(BaseModel):
    """``fleet rollout reschedule ID TIME`` / ``POST /api/v1/rollouts/{id}/reschedule``."""

    start_at: str = Field(min_length=1, max_length=64, description="ISO 8601 with an offset, or +10m")


class RolloutCommand(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class RolloutSummary(BaseModel):
    id: str
    model: str
    slot: str
    select: str
    state: str
    current_wave: int
    waves: str
    devices: int
    reason: str | None = None
    created_at: float
    updated_at: float
    superseded_by: str | None = None
    start_at: float | None = None  # scheduled: when it starts
    rate: str | None = None  # --rate / --ramp as given


COMMAND_ATTEMPTS = 5


def new_rollout_id() -> str:
    return f"r-{secrets.token_hex(4)}"


def _spec_error(exc: SpecError) -> BadRequest:
    return BadRequest(str(exc))


def start_rollout(session: Session, body: RolloutCreate, now: float, *, actor: str = "",
                  rollout_id: str | None = None) -> Rollout:
    """Create a rollout (``pending``), superseding live rollouts of the same slot that share
    a device with it.

    Raises:
        BadRequest: the request does not parse (message from the core, with a pointer).
        NotFound: no such model version. Conflict: the selection matches no device.
        ModelBlocked: the version is blocked (a deprecated one starts, with a warning event).
    """
    rid = rollout_id or new_rollout_id()
    for _attempt in range(COMMAND_ATTEMPTS):
        try:
            return _start_once(session, body, now, actor=actor, rid=rid)
        except StaleState:  # a pass wrote a superseded rollout in between: look again
            session.rollback()
    raise Conflict("rollouts of this slot keep changing; try again")


def _start_once(session: Session, body: RolloutCreate, now: float, *, actor: str, rid: str) -> Rollout:
    try:  # the time first: "in the past" is the answer, whatever else is wrong
        start_at = parse_start_at(body.start_at, now) if body.start_at is not None else None
    except SpecError as exc:
        raise _spec_error(exc) from None
    mv = catalog.get_version(session, body.model)
    warnings = lifecycle.check_deployable(mv)  # a blocked version: ModelBlocked (409 E_MODEL_BLOCKED)
    try:
        spec = build_spec(id=rid, model=model_ref(mv), slot=body.slot, select=body.select,
                          waves=body.waves, soak=body.soak, gates=body.gates,
                          on_breach=body.on_breach, device_timeout=body.device_timeout,
                          max_concurrent=body.max_concurrent, rate=body.rate, ramp=body.ramp)
    except SpecError as exc:
        raise _spec_error(exc) from None
    devices = observations_for_selection(session)
    if not any(spec.selector.matches(d) for d in devices):
        raise Conflict(f"--select {body.select!r} matches none of the {len(devices)} devices")
    if start_at is None:
        supersede_overlapping(session, spec, f"{mv.name}:{mv.version}", now, devices)
        state = RolloutState(rollout_id=rid)
    else:
        state = RolloutState(rollout_id=rid, state="scheduled", start_at=start_at)
    row = Rollout(
        id=rid, model_version_id=mv.id or 0, model_name=mv.name, model_version=mv.version,
        digest=mv.digest, slot=body.slot, select=body.select, waves=body.waves, soak=body.soak,
        gates=[str(g) for g in spec.gates], on_breach=body.on_breach,
        device_timeout=body.device_timeout, max_concurrent=body.max_concurrent,
        state=state.state, state_json=state.model_dump_json(), created_by=actor,
        created_at=now, updated_at=now, rate=body.rate, ramp=body.ramp,
    )
    session.add(row)
    add_event(session, rid, now, f"created by {actor or 'operator'}: {mv.name}:{mv.version} into "
              f"{body.slot} on {body.select!r}, waves {body.waves}, gates "
              f"{', '.join(row.gates) or 'none'}, on breach {body.on_breach}"
              + (f", rate {spec.pace}" if spec.pace else "")
              + (f", scheduled for {_iso(start_at)}" if start_at is not None else ""), kind="command")
    for warning in warnings:  # deprecated: allowed, and said where everyone looks
        add_event(session, rid, now, warning, level="warning", kind="command")
    session.commit()
    return row


def _iso(at: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


def supersede_overlapping(session: Session, spec: RolloutSpec, label: str, now: float,
                          devices: list[Any] | None = None) -> list[str]:
    """Mark every live rollout of ``spec``'s slot that shares a device with it superseded by
    it (row-locked, an event on both), in the caller's transaction; returns their ids. A
    rollout still ``scheduled`` is left alone: it supersedes when it starts.

    Raises:
        StaleState: one of them was written meanwhile (the caller retries).
    """
    devices = observations_for_selection(session) if devices is None else devices
    rid, done = spec.id, []
    live = session.exec(select(Rollout).where(Rollout.slot == spec.slot)
                        .where(col(Rollout.state).notin_(("aborted", "superseded", "scheduled")))).all()
    for old in live:
        old_spec = spec_of(old)
        if not supersedes(spec, old_spec, devices, members_of(session, old.id)):
            continue
        locked = lock_rollout(session, old.id)
        assert locked is not None
        try:
            new_state = supersede(state_of(locked), rid, now)
        except IllegalTransition as exc:  # pragma: no cover - filtered above
            raise Conflict(str(exc)) from None
        write_state(session, locked, new_state, now)
        add_event(session, old.id, now, f"superseded by rollout {rid} ({label})",
                  kind="command", data={"command": "supersede", "by": rid})
        add_event(session, rid, now, f"supersedes rollout {old.id} ({old.model_name}:{old.model_version})",
                  kind="command", data={"command": "supersede", "supersedes": old.id})
        done.append(old.id)
    return done


def reschedule_rollout(session: Session, rollout_id: str, text: str, now: float, *,
                       actor: str = "") -> RolloutState:
    """Move a scheduled rollout's start time.

    Raises:
        BadRequest: the time does not parse or is in the past. NotFound. Conflict: it is not
        scheduled any more (it started, was cancelled, ...).
    """
    try:
        start_at = parse_start_at(text, now)
    except SpecError as exc:
        raise _spec_error(exc) from None
    get_row(session, rollout_id)
    for _attempt in range(COMMAND_ATTEMPTS):
        row = lock_rollout(session, rollout_id)
        assert row is not None
        state = state_of(row)
        try:
            new = reschedule(state, start_at, now)
        except IllegalTransition as exc:
            session.rollback()
            raise Conflict(str(exc)) from None
        try:
            write_state(session, row, new, now)
        except StaleState:
            session.rollback()
            continue
        was = _iso(state.start_at) if state.start_at is not None else "-"
        add_event(session, rollout_id, now, f"rescheduled by {actor or 'operator'}: {was} → {_iso(start_at)}",
                  kind="command", data={"command": "reschedule", "by": actor, "from": state.start_at,
                                        "to": start_at})
        session.commit()
        return new
    raise Conflict(f"rollout {rollout_id} keeps changing; try again")


def observations_for_selection(session: Session) -> list[Any]:
    from .selector import DeviceInfo

    return [DeviceInfo(device_id=d.id, hardware_id=d.hardware_id, tags=dict(d.tags or {}),
                       online=bool(d.online))
            for d in session.exec(select(Device).where(Device.revoked_at == None)).all()]  # noqa: E711  # revoked: never selected


def get_row(session: Session, rollout_id: str) -> Rollout:
    row = session.get(Rollout, rollout_id)
    if row is None:
        raise NotFound(f"no rollout {rollout_id!r}")
    return row


def summary(session: Session, row: Rollout, *, devices: int | None = None) -> RolloutSummary:
    """The list row of one rollout (``devices``: its member count when the caller read it already)."""
    st = state_of(row)
    return RolloutSummary(
        id=row.id, model=f"{row.model_name}:{row.model_version}", slot=row.slot, select=row.select,
        state=st.state, current_wave=st.current_wave, waves=row.waves,
        devices=member_count(session, row.id) if devices is None else devices, reason=st.reason,
        created_at=row.created_at, updated_at=row.updated_at, superseded_by=st.superseded_by, start_at=st.start_at,
        rate=row.rate or row.ramp)


def list_page(session: Session, *, state: str | None = None, limit: int = 100,
              cursor: str | None = None) -> tuple[list[tuple[RolloutSummary, RowFigures]], str | None]:
    """One page of rollouts, newest first, each with its member figures; a constant number of
    statements whatever the history (``listing``). Returns (rows, next cursor).

    Raises:
        BadCursor: the cursor is not one issued for this filter.
    """
    page = page_rollouts(session, state=state, limit=limit, cursor=cursor)
    figures = row_figures(session, page.rows)
    return [(summary(session, r, devices=figures[r.id].members), figures[r.id]) for r in page.rows], page.next_cursor


def list_rollouts(session: Session, *, state: str | None = None, limit: int = 100) -> list[RolloutSummary]:
    return [s for s, _ in list_page(session, state=state, limit=limit)[0]]


def list_rollouts_of(session: Session, model_version_id: int, *, limit: int = 20) -> list[dict[str, Any]]:
    """The rollouts of one model version, newest first (id, slot, state, reason, when)."""
    rows = session.exec(select(Rollout).where(Rollout.model_version_id == model_version_id)
                        .order_by(col(Rollout.created_at).desc()).limit(limit)).all()
    return [{"id": r.id, "slot": r.slot, "state": r.state, "reason": state_of(r).reason,
             "created_by": r.created_by, "created_at": r.created_at} for r in rows]


def run_command(session: Session, rollout_id: str, name: str, now: float, *, reason: str | None = None,
                actor: str = "") -> RolloutState:
    """pause | resume | abort | rollback.

    Raises:
        BadRequest: unknown command. NotFound. Conflict: the state does not allow it.
    """
    if name not in COMMANDS:
        raise BadRequest(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    row = get_row(session, rollout_id)
    if name == "resume":  # resuming would send a blocked version again
        mv = session.get(ModelVersion, row.model_version_id)
        if mv is not None:
            lifecycle.check_deployable(mv)
    for _attempt in range(COMMAND_ATTEMPTS):
        try:
            return apply_command_row(session, rollout_id, name, now, reason=reason, actor=actor)
        except IllegalTransition as exc:
            session.rollback()
            raise Conflict(str(exc)) from None
        except StaleState:  # a reconcile pass wrote in between (no row locks on SQLite): again
            session.rollback()
    raise Conflict(f"rollout {rollout_id} keeps changing; try the command again")


def status(session: Session, rollout_id: str, now: float, *, devices: bool = True,
           events: int = 30) -> dict[str, Any]:
    """Everything ``fleet rollout status`` shows, as JSON-ready data."""
    row = get_row(session, rollout_id)
    spec, state = spec_of(row), state_of(row)
    obs = member_observations(session, row)  # the members only: the cost grows with the rollout, not the fleet
    st = rollout_status(spec, state, obs, now)
    starts = state.wave_starts()
    out: dict[str, Any] = {
        "id": row.id, "model": st.model, "slot": st.slot, "state": st.state,
        "select": row.select, "waves_spec": row.waves, "soak": row.soak,
        "gates_spec": list(row.gates), "on_breach": row.on_breach,
        "device_timeout": row.device_timeout, "max_concurrent": row.max_concurrent,
        "current_wave": st.current_wave, "devices": st.devices, "on_model": st.on_model,
        "progress": st.progress, "reason": st.reason, "held": state.held,
        "breach": st.breach.model_dump(mode="json") if st.breach else None,
        "superseded_by": state.superseded_by, "created_at": row.created_at,
        "updated_at": row.updated_at, "started_at": state.started_at,
        "soak_started_at": state.soak_started_at, "finished_at": state.finished_at,
        "start_at": state.start_at, "rate_spec": str(spec.pace) if spec.pace else None,
        "rate_per_min": spec.pace.rate_at(st.on_model) if spec.pace else None,
        "waves": [
            {"index": w.index, "percent": w.percent, "members": w.members, "counts": w.counts,
             "outcome": w.outcome, "gates": [g.model_dump(mode="json") for g in w.gates],
             "figures": {"failure": w.metrics.failure, "latency_p99_ratio": w.metrics.latency_p99_ratio,
                         "worst_hardware": w.metrics.worst_hardware, "nan_rate": w.metrics.nan_rate,
                         "error_rate": w.metrics.error_rate, "agreement": w.metrics.agreement,
                         "frames": w.metrics.frames}}
            for w in st.waves
        ],
    }
    rows = [member_row(o, spec, starts, now) for o in obs if o.wave is not None]  # always: they correct the counts
    if any(r["status"] == "reverted" for r in rows):  # counts as the device rows say
        for w in out["waves"]:
            w["counts"] = dict(Counter(r["status"] for r in rows if r["wave"] == w["index"]))
    if devices:
        out["members"] = sorted(rows, key=lambda r: (r["wave"], r["device"]))
    if events:
        out["events"] = [{"at": e.at, "level": e.level, "kind": e.kind, "message": e.message}
                         for e in event_rows(session, row.id, events)]
    return out


def events(session: Session, rollout_id: str, limit: int = 200) -> list[dict[str, Any]]:
    get_row(session, rollout_id)
    return [{"at": e.at, "level": e.level, "kind": e.kind, "message": e.message, "data": e.data}
            for e in event_rows(session, rollout_id, limit)]


__all__ = ["RolloutCommand", "RolloutCreate", "RolloutReschedule", "RolloutSummary", "reschedule_rollout",
           "supersede_overlapping", "events", "list_page", "list_rollouts", "list_rollouts_of",
           "run_command", "start_rollout", "status"]
