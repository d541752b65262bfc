"""Rollout rows ⇄ the pure core: load specs, states and observations; persist what changed.

Reading: ``spec_of(row)`` rebuilds the ``RolloutSpec`` from the stored CLI text,
``state_of(row)`` the ``RolloutState`` from JSON, ``observations(...)`` joins every device
row (``Device.reported`` for the slot, ``online``/``last_seen``) with the rollout's
``RolloutMember`` row and the controller's current assignment for the slot.

Writing: ``write_state`` stores a new state only if nobody else wrote since it was read
(``revision``; PostgreSQL additionally holds the row with ``SELECT … FOR UPDATE`` from
``lock_rollout`` to the end of the transaction). ``acquire_lease`` decides which
controller replica runs reconcile passes.

Telemetry: ``record_telemetry`` (called by the controller right after the device row is
updated) adds each telemetry period to the member rows of the rollouts that device belongs
to: frames, errors and NaN outputs of the rollout's model since dispatch, its p99 latency
and the p99 of the model it replaces on the same device (the *baseline*: periods in which
the device still ran its previous model), and the shadow agreement of the rollout's model
with the control model (periods in which it ran as shadow candidate). The model's p99 is a
running mean over its last ``P99_WINDOW`` periods (its first period is left out: it also
holds frames of the previous model); the baseline recorded at dispatch is the median of
the device's last ``P99_WINDOW`` periods on its previous model (``baseline_p99_many``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlmodel import Session, col, select

from ...protocols import ModelRef, Phase, Telemetry
from ...registry.tuf.errors import RETRYABLE_CODES
from .. import webhooks
from ..devices.telemetry_store import TelemetryPeriod
from ..tables import Device, ModelVersion, SlotAssignment
from . import build_spec
from .errors import SpecError
from .model import DeviceObservation, RolloutSpec, RolloutState
from .tables import ControllerLease, Rollout, RolloutEvent, RolloutMember

if TYPE_CHECKING:  # device_view imports this module
    from .device_view import DeviceView

P99_WINDOW = 10
#: Rollout states whose members still collect telemetry figures.
COLLECTING = ("pending", "running", "soaking", "paused", "breached", "rolling_back", "completed")
#: States the reconciler still visits.
ACTIVE_STATES = ("scheduled", "pending", "running", "soaking", "paused", "breached", "rolling_back",
                 "rolled_back", "completed")


class StaleState(SpecError):
    """The rollout was written by someone else since it was read; the caller retries."""


def ref_of(data: dict[str, Any] | None) -> ModelRef | None:
    if not data:
        return None
    try:
        return ModelRef.model_validate(data)
    except ValueError:
        return None


_REFS: dict[tuple[Any, Any, Any], ModelRef | None] = {}
_MISSING: Any = object()


def ref_cached(data: Any) -> ModelRef | None:
    """``ref_of``, remembered by (name, version, digest): a fleet names few models, and a
    pass builds one per device and slot (``ModelRef`` is never changed after it is built)."""
    if type(data) is not dict or len(data) != 3:
        return ref_of(data)
    key = (data.get("name"), data.get("version"), data.get("digest"))
    if type(key[0]) is not str or type(key[1]) is not str or type(key[2]) is not str:
        return ref_of(data)
    ref = _REFS.get(key, _MISSING)
    if ref is _MISSING:
        if len(_REFS) > 10_000:
            _REFS.clear()
        ref = _REFS[key] = ref_of(data)
    return ref  # type: ignore[no-any-return]


def ref_dict(ref: ModelRef | None) -> dict[str, Any] | None:
    return None if ref is None else {"name": ref.name, "version": ref.version, "digest": ref.digest}


def model_ref(mv: ModelVersion) -> ModelRef:
    return ModelRef(name=mv.name, version=mv.version, digest=mv.digest)


def ts(value: datetime | None) -> float | None:
    """A database datetime (naive means UTC) as seconds since the epoch."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def iso_ts(value: Any) -> float | None:
    """An ISO time from a device's report (``window_opens_at``) as seconds since the epoch; None if absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        return ts(datetime.fromisoformat(value))
    except ValueError:
        return None


# ----- rollout rows ------------------------------------------------------------------------


def spec_of(row: Rollout) -> RolloutSpec:
    return build_spec(
        id=row.id, model=ModelRef(name=row.model_name, version=row.model_version, digest=row.digest),
        slot=row.slot, select=row.select, waves=row.waves, soak=row.soak, gates=list(row.gates),
        on_breach=row.on_breach, device_timeout=row.device_timeout,
        max_concurrent=row.max_concurrent, previous=ref_of(row.previous),
        rate=row.rate, ramp=row.ramp,
    )


def state_of(row: Rollout) -> RolloutState:
    return RolloutState.model_validate_json(row.state_json)


def lock_rollout(session: Session, rollout_id: str) -> Rollout | None:
    """The rollout row, held until the end of the transaction on PostgreSQL."""
    stmt = (select(Rollout).where(Rollout.id == rollout_id).with_for_update()
            .execution_options(populate_existing=True))  # the row as it is now, not as cached
    return session.exec(stmt).first()


def write_state(session: Session, row: Rollout, state: RolloutState, now: float) -> None:
    """Store ``state`` if the row still has the revision it was read with.

    Raises:
        StaleState: someone else wrote the rollout in between; nothing was written.
    """
    old = state_of(row)  # before the UPDATE (which refreshes the row in the session)
    result = session.execute(
        update(Rollout)
        .where(col(Rollout.id) == row.id, col(Rollout.revision) == row.revision)
        .values(state_json=state.model_dump_json(), state=state.state,
                revision=row.revision + 1, updated_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(f"rollout {row.id} changed while it was being reconciled")
    webhooks.on_rollout_state(session, row, old, state)  # events in this transaction (cloud/webhooks)
    session.expire(row)


def add_event(session: Session, rollout_id: str, at: float, message: str, *, level: str = "info",
              kind: str = "log", data: dict[str, Any] | None = None) -> None:
    session.add(RolloutEvent(rollout_id=rollout_id, at=at, level=level, kind=kind,
                             message=message, data=data))


def members_of(session: Session, rollout_id: str) -> dict[str, RolloutMember]:
    """The rollout's member rows; a finished rollout's from the archive (``archive.py``)."""
    rows = session.exec(select(RolloutMember).where(RolloutMember.rollout_id == rollout_id)).all()
    if not rows:
        from .archive import archived_members

        return archived_members(session, rollout_id)
    return {m.device_id: m for m in rows}


def desired_refs(session: Session, slot: str, device_ids: Iterable[str] | None = None,
                 chunk: int = 500) -> dict[str, ModelRef]:
    """What the controller currently wants in ``slot``, per device: every device, or only
    ``device_ids`` (``chunk`` ids a query)."""
    stmt = (select(SlotAssignment.device_id, ModelVersion.name, ModelVersion.version, ModelVersion.digest)
            .where(SlotAssignment.slot == slot)
            .where(SlotAssignment.model_version_id == ModelVersion.id))
    if device_ids is None:
        rows = list(session.exec(stmt).all())
    else:
        ids, rows = sorted(set(device_ids)), []
        for i in range(0, len(ids), chunk):
            rows += session.exec(stmt.where(col(SlotAssignment.device_id).in_(ids[i:i + chunk]))).all()
    return {d: ref for d, n, v, g in rows if (ref := ref_cached({"name": n, "version": v, "digest": g}))}


def assignment_owners(session: Session, slot: str) -> dict[str, str | None]:
    """Which rollout (None: a direct deployment) made each device's current ``slot`` assignment."""
    rows = session.exec(select(SlotAssignment.device_id, SlotAssignment.rollout_id)
                        .where(SlotAssignment.slot == slot)).all()
    return {d: r for d, r in rows}


def version_by_digest(session: Session, digest: str) -> ModelVersion | None:
    return session.exec(select(ModelVersion).where(ModelVersion.digest == digest)).first()


# ----- observations ------------------------------------------------------------------------


def slot_report(device: Device | DeviceView, slot: str) -> dict[str, Any]:
    return ((device.reported or {}).get("slots") or {}).get(slot) or {}


_FETCHING = frozenset({Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING})


def effective_phase(rep: dict[str, Any]) -> Phase:
    """The reported phase as the planner should see it: a retryable failure (the link, the
    disk) is a download still under way — the agent retries until the desired model
    changes, and the device counts as installing until the rollout's device timeout."""
    try:
        phase = Phase(rep.get("phase") or "idle")
    except ValueError:
        return Phase.IDLE
    if phase == Phase.FAILED and rep.get("error_code") in RETRYABLE_CODES:
        return Phase.DOWNLOADING
    return phase


def track_phase(member: RolloutMember, device: Device | DeviceView, slot: str, now: float) -> bool:
    """Remember when the device's reported (phase, target) for the slot last changed.

    Fetching phases (notified, downloading, verifying, retryable failures) count as one, so
    a device that keeps retrying a download times out after the device timeout."""
    rep = slot_report(device, slot)
    eff = effective_phase(rep)
    phase = Phase.DOWNLOADING.value if eff in _FETCHING else eff.value
    target = (rep.get("target") or {}).get("digest")
    if member.seen_phase == phase and member.seen_target == target and member.phase_since is not None:
        return False
    member.seen_phase, member.seen_target, member.phase_since = phase, target, now
    return True


def device_fields(device: Any, slot: str) -> dict[str, Any]:
    """The device's part of its observation for ``slot`` (everything but ``desired`` and the
    membership); ``device`` is a ``Device`` or a ``device_view.DeviceView``."""
    rep = slot_report(device, slot)
    return dict(
        device_id=device.id, hardware_id=device.hardware_id, tags=dict(device.tags or {}),
        online=bool(device.online), last_seen=ts(device.last_seen),
        installed=ref_cached(rep.get("installed")), reported_target=ref_cached(rep.get("target")),
        last_known_good=ref_cached(rep.get("last_known_good")), phase=effective_phase(rep),
        error_code=rep.get("error_code"), lagging_since=ts(device.lagging_since), stale_since=ts(device.stale_since),
        window_opens_at=iso_ts(rep.get("window_opens_at")),
    )


def observation(device: Device, member: RolloutMember | None, desired: ModelRef | None,
                slot: str) -> DeviceObservation:
    return observe(device_fields(device, slot), member, desired)


def observe(fields: dict[str, Any], member: RolloutMember | None, desired: ModelRef | None) -> DeviceObservation:
    """An observation from the device's part (``device_fields``), its member row and what is desired."""
    if member is None:
        return DeviceObservation(**fields, desired=desired)
    return DeviceObservation(
        **fields, desired=desired, phase_since=member.phase_since, wave=member.wave, assigned_at=member.assigned_at,
        dispatched_at=member.dispatched_at, previous=ref_cached(member.previous),
        reverted_at=member.reverted_at, timed_out_at=member.timed_out_at,
        frames=member.frames, errors=member.errors, nan_outputs=member.nan_outputs,
        candidate_p99_ms=member.candidate_p99_ms, baseline_p99_ms=member.baseline_p99_ms,
        agreement=member.agreement, agreement_frames=member.agreement_frames,
    )


def load_devices(session: Session) -> list[Device]:
    return list(session.exec(select(Device).order_by(Device.id)).all())


def observations(session: Session, row: Rollout, *, devices: Iterable[Device] | None = None,
                 members: dict[str, RolloutMember] | None = None) -> list[DeviceObservation]:
    devices = load_devices(session) if devices is None else devices
    members = members_of(session, row.id) if members is None else members
    desired = desired_refs(session, row.slot)
    out = [observation(d, members.get(d.id), desired.get(d.id), row.slot) for d in devices]
    if any(str(g).startswith("drift") for g in row.gates or ()):
        out = with_drift(session, row, out)
    if any(str(g).startswith("latency_p99_ratio") for g in row.gates or ()):
        out = with_latency(session, row, out)
    return out


LATENCY_PERIODS = 30  # per device and model: the most telemetry periods the latency gate reads


def with_latency(session: Session, row: Rollout, obs: list[DeviceObservation]) -> list[DeviceObservation]:
    """For a ``latency_p99_ratio`` gate: the per-period p99s of the rollout's model and of
    the model it replaced, per dispatched member of the current wave, from the verified
    telemetry history (the gate's bootstrap resamples them).

    Shadow slot: the candidate's p99 and the control's p99 of the *same* periods (same
    device, same frames). Control slot: the model's periods after dispatch (the first one
    left out while it is among the last ``LATENCY_PERIODS``: it also holds frames of the
    previous model) against the device's last periods on its previous model before
    dispatch. Devices without such history keep the running figures (one value each)."""
    from dataclasses import replace

    try:
        wave = state_of(row).current_wave
    except ValueError:
        return obs
    out = []
    for o in obs:
        if o.wave == wave and o.dispatched_at is not None:
            new, old = _latency_periods(session, row, o)
            if new and old:
                o = replace(o, candidate_p99_periods=new, baseline_p99_periods=old)
        out.append(o)
    return out


def _latency_periods(session: Session, row: Rollout, o: DeviceObservation) -> tuple[tuple[float, ...], tuple[float, ...]]:
    assert o.dispatched_at is not None
    since = datetime.fromtimestamp(o.dispatched_at, timezone.utc)
    base = (select(TelemetryPeriod).where(TelemetryPeriod.device_id == o.device_id)
            .order_by(col(TelemetryPeriod.period_end).desc()).limit(LATENCY_PERIODS + 1))
    if row.slot == "shadow":
        rows = session.exec(base.where(TelemetryPeriod.candidate_name == row.model_name)
                            .where(TelemetryPeriod.candidate_version == row.model_version)
                            .where(col(TelemetryPeriod.period_end) > since)
                            .where(TelemetryPeriod.shadow_frames > 0)).all()[:LATENCY_PERIODS]
        pairs = [(r.candidate_p99, r.latency_p99) for r in rows
                 if r.candidate_p99 and r.candidate_p99 > 0 and r.latency_p99 > 0]
        return tuple(float(a) for a, _ in pairs), tuple(float(b) for _, b in pairs)
    if o.previous is None:
        return (), ()
    rows = session.exec(base.where(TelemetryPeriod.control_name == row.model_name)
                        .where(TelemetryPeriod.control_version == row.model_version)
                        .where(col(TelemetryPeriod.period_end) > since)
                        .where(TelemetryPeriod.frames > 0)).all()
    if len(rows) <= LATENCY_PERIODS:
        rows = rows[:-1]  # the oldest is the first period on the model: partly the previous one
    new = tuple(float(r.latency_p99) for r in rows[:LATENCY_PERIODS] if r.latency_p99 > 0)
    before = session.exec(base.where(TelemetryPeriod.control_name == o.previous.name)
                          .where(TelemetryPeriod.control_version == o.previous.version)
                          .where(col(TelemetryPeriod.period_end) <= since)
                          .where(TelemetryPeriod.frames > 0)).all()[:LATENCY_PERIODS]
    return new, tuple(float(r.latency_p99) for r in before if r.latency_p99 > 0)


def with_drift(session: Session, row: Rollout, obs: list[DeviceObservation]) -> list[DeviceObservation]:
    """For a ``drift`` gate: each dispatched member's drift score of the rollout's model as
    control on that device (``cloud.drift.drift_score``, native engine: no Evidently import
    in the reconciler); None (the gate waits) while a device lacks the data."""
    from dataclasses import replace

    from ..drift import DriftConfig, drift_score

    config = DriftConfig(engine="native")
    label = f"{row.model_name}:{row.model_version}"
    out = []
    for o in obs:
        if o.wave is not None and o.dispatched_at is not None:
            score = drift_score(session, label, device_ids=[o.device_id], config=config).score
            if score is not None:
                o = replace(o, drift=score)
        out.append(o)
    return out


# ----- telemetry ---------------------------------------------------------------------------


def _mean(current: float | None, n: int, value: float) -> tuple[float, int]:
    k = min(n, P99_WINDOW - 1)
    if current is None or k <= 0:
        return value, 1
    return current + (value - current) / (k + 1), n + 1


def record_telemetry(session: Session, msg: Telemetry) -> int:
    """Fold one telemetry period into the device's rollout member rows; returns how many
    rows changed. Commits."""
    rows = session.exec(
        select(RolloutMember, Rollout)
        .where(RolloutMember.device_id == msg.device_id)
        .where(RolloutMember.rollout_id == Rollout.id)
        .where(col(Rollout.state).in_(COLLECTING))
    ).all()
    changed = 0
    for member, rollout in rows:
        if _fold(member, rollout, msg):
            session.add(member)
            changed += 1
    if changed:
        session.commit()
    return changed


_ROLLOUT = Rollout.__table__  # type: ignore[attr-defined]
_ANY_COLLECTING = (sa_select(_ROLLOUT.c.id).where(_ROLLOUT.c.state.in_(COLLECTING))
                   .where(_ROLLOUT.c.archived_at.is_(None)).limit(1))  # built once: a Core read, no ORM
_COLLECTING_ROLLOUTS = select(Rollout).where(col(Rollout.state).in_(COLLECTING)).where(col(Rollout.archived_at).is_(None))


def record_telemetry_many(session: Session, msgs: Sequence[Telemetry]) -> int:
    """``record_telemetry`` for a batch of periods (in order): one indexed read whether any
    rollout collects figures (none: nothing more), then one SELECT of those rollouts and one
    of their member rows for all the batch's devices; the changed rows are left in the
    session (the caller flushes and commits: ``devices.batch``). Returns how many folds
    changed a row."""
    ids = sorted({m.device_id for m in msgs})
    if not ids:
        return 0
    # an archived rollout has no member rows left, so it is not asked for
    if session.connection().execute(_ANY_COLLECTING).first() is None:
        return 0
    collecting = {r.id: r for r in session.exec(_COLLECTING_ROLLOUTS).all()}
    members = session.exec(
        select(RolloutMember)
        .where(col(RolloutMember.rollout_id).in_(sorted(collecting)))
        .where(col(RolloutMember.device_id).in_(ids))
        .order_by(col(RolloutMember.rollout_id))
    ).all()
    by_device: dict[str, list[tuple[RolloutMember, Rollout]]] = {}
    for member in members:
        by_device.setdefault(member.device_id, []).append((member, collecting[member.rollout_id]))
    changed = 0
    for msg in msgs:
        for member, rollout in by_device.get(msg.device_id, ()):
            if _fold(member, rollout, msg):
                session.add(member)
                changed += 1
    return changed


def _fold(m: RolloutMember, r: Rollout, msg: Telemetry) -> bool:
    control = msg.control.digest if msg.control else None
    shadow = msg.shadow
    candidate = shadow.candidate.digest if shadow is not None and shadow.candidate else None
    changed = False
    if candidate == r.digest and shadow is not None and (shadow.frames > 0 or shadow.errors > 0):
        if shadow.agreement is not None and shadow.frames > 0:  # shadow agreement, also before a control promotion
            total = m.agreement_frames + shadow.frames
            m.agreement = ((m.agreement or 0.0) * m.agreement_frames + shadow.agreement * shadow.frames) / total
            m.agreement_frames = total
            changed = True
        if r.slot == "shadow" and m.dispatched_at is not None:
            m.frames += shadow.frames
            m.nan_outputs += shadow.nan_outputs
            m.errors += shadow.errors
            if shadow.latency_ms.p99 > 0:
                m.candidate_p99_ms, m.candidate_periods = _mean(m.candidate_p99_ms, m.candidate_periods, shadow.latency_ms.p99)
            if msg.frames > 0 and msg.latency_ms.p99 > 0:
                m.baseline_p99_ms, m.baseline_periods = _mean(m.baseline_p99_ms, m.baseline_periods, msg.latency_ms.p99)
            changed = True
    if r.slot != "control" or msg.frames <= 0 or control is None:
        return changed
    if control == r.digest:
        if m.dispatched_at is None:
            return changed
        m.frames += msg.frames
        m.errors += msg.errors
        m.nan_outputs += msg.nan_outputs
        if m.candidate_periods == 0 and m.candidate_p99_ms is None:
            m.candidate_periods = 1  # the first period also holds frames of the previous model
        elif msg.latency_ms.p99 > 0:
            m.candidate_p99_ms, m.candidate_periods = _mean(m.candidate_p99_ms, m.candidate_periods, msg.latency_ms.p99)
        return True
    previous = (m.previous or {}).get("digest")
    if (m.dispatched_at is None or previous == control) and msg.latency_ms.p99 > 0 \
            and m.reverted_at is None:
        m.baseline_p99_ms, m.baseline_periods = _mean(m.baseline_p99_ms, m.baseline_periods, msg.latency_ms.p99)
        return True
    return changed


def baseline_p99_many(session: Session, previous: dict[str, ModelRef | None],
                      exclude_digest: str) -> dict[str, tuple[float | None, int]]:
    """p99 of the model each device runs before it is sent a rollout's model (device id →
    that model): the median over its last ``P99_WINDOW`` telemetry periods on it (history;
    robust to a period disturbed by an install or a hiccup), else its latest period if that
    was another model than ``exclude_digest``. A few queries per 500 devices, not two per
    device: one window-function read of the history, one of the latest telemetry."""
    from sqlalchemy import func

    out: dict[str, tuple[float | None, int]] = {}
    ids = sorted(previous)
    t = TelemetryPeriod.__table__  # type: ignore[attr-defined]
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        by_model: dict[tuple[str, str], list[str]] = {}
        for d in chunk:
            ref = previous[d]
            if ref is not None:
                by_model.setdefault((ref.name, ref.version), []).append(d)
        history: dict[str, list[float]] = {}
        for (name, version), devs in by_model.items():
            rank = func.row_number().over(partition_by=t.c.device_id, order_by=t.c.period_end.desc()).label("rank")
            inner = (select(t.c.device_id, t.c.latency_p99, rank)
                     .where(col(t.c.device_id).in_(devs)).where(t.c.control_name == name)
                     .where(t.c.control_version == version).where(t.c.frames > 0).subquery())
            for device_id, p99 in session.exec(select(inner.c.device_id, inner.c.latency_p99)  # type: ignore[call-overload]
                                               .where(inner.c.rank <= P99_WINDOW)).all():
                if p99 and p99 > 0:
                    history.setdefault(device_id, []).append(p99)
        latest = dict(session.exec(select(Device.id, Device.telemetry)  # type: ignore[call-overload]
                                   .where(col(Device.id).in_([d for d in chunk if d not in history]))).all())
        for d in chunk:
            values = sorted(history.get(d, ()))
            if values:
                out[d] = (values[len(values) // 2], len(values))
            elif d in latest:
                out[d] = _latest_p99(latest[d] or {}, exclude_digest)
            else:
                out[d] = (None, 0)
    return out


def _latest_p99(t: dict[str, Any], exclude_digest: str) -> tuple[float | None, int]:
    control = (t.get("control") or {}).get("digest")
    p99 = (t.get("latency_ms") or {}).get("p99") or 0.0
    if control and control != exclude_digest and t.get("frames", 0) > 0 and p99 > 0:
        return float(p99), 1
    return None, 0


def seed_agreement(session: Session, row: Rollout, device_ids: list[str]) -> dict[str, tuple[float, int]]:
    """Shadow agreement of the rollout's model from telemetry history (control promotions):
    frame-weighted per device, from periods recorded before the rollout started."""
    if row.slot != "control" or not device_ids:
        return {}
    out: dict[str, tuple[float, int]] = {}
    stmt = (select(TelemetryPeriod.device_id, TelemetryPeriod.agreement, TelemetryPeriod.shadow_frames)
            .where(TelemetryPeriod.candidate_name == row.model_name)
            .where(TelemetryPeriod.candidate_version == row.model_version)
            .where(col(TelemetryPeriod.device_id).in_(device_ids)))
    sums: dict[str, list[float]] = {}
    for device_id, agreement, frames in session.exec(stmt).all():
        if agreement is None or not frames:
            continue
        acc = sums.setdefault(device_id, [0.0, 0.0])
        acc[0] += agreement * frames
        acc[1] += frames
    for device_id, (weighted, frames) in sums.items():
        out[device_id] = (weighted / frames, int(frames))
    return out


# ----- lease -------------------------------------------------------------------------------


def acquire_lease(session: Session, name: str, holder: str, ttl_s: float, now: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; True when ``holder`` has it now.

    PostgreSQL: the lease row is read with ``SELECT … FOR UPDATE`` and taken over only when
    it is ours or expired. Other databases: one conditional ``UPDATE`` does the same.
    Commits.
    """
    dialect = session.get_bind().dialect.name
    if session.get(ControllerLease, name) is None:
        session.add(ControllerLease(name=name, holder=holder, expires_at=now + ttl_s))
        try:
            session.commit()
            return True
        except Exception:  # another replica inserted it first
            session.rollback()
    if dialect == "postgresql":
        lease = session.exec(select(ControllerLease).where(ControllerLease.name == name)
                             .with_for_update()).one()
        if lease.holder != holder and lease.expires_at > now:
            session.rollback()
            return False
        lease.holder, lease.expires_at = holder, now + ttl_s
        session.add(lease)
        session.commit()
        return True
    result = session.execute(
        update(ControllerLease)
        .where(col(ControllerLease.name) == name)
        .where((col(ControllerLease.holder) == holder) | (col(ControllerLease.expires_at) <= now))
        .values(holder=holder, expires_at=now + ttl_s)
    )
    session.commit()
    return result.rowcount == 1  # type: ignore[attr-defined]


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(update(ControllerLease)
                    .where(col(ControllerLease.name) == name, col(ControllerLease.holder) == holder)
                    .values(expires_at=0.0))
    session.commit()


def event_rows(session: Session, rollout_id: str, limit: int = 200) -> list[RolloutEvent]:
    rows = session.exec(select(RolloutEvent).where(RolloutEvent.rollout_id == rollout_id)
                        .order_by(col(RolloutEvent.id).desc()).limit(limit)).all()
    return list(reversed(rows))


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
