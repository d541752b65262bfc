"""The rollout reconciler: one level-triggered pass over every live rollout.

Per pass: take (or renew) the controller lease — only its holder acts, so two replicas on
one database never both run passes — then for each rollout that is not quiet, in its own
transaction:

    lock the rollout row (FOR UPDATE on PostgreSQL) → load spec, state, members, devices →
    note phase changes → plan(spec, state, observations, now) → apply the actions →
    write the state (only if its revision is unchanged) → commit → publish desired state

``SetDesired``/``RevertDevice`` become ``fleet.assign(..., commit=False)`` in the same
transaction, so the slot assignments, the membership rows and the rollout state commit
together or not at all; the desired-state hints go out after the commit (a hint lost to a
crash is re-sent by the controller's sync loop, which re-publishes to every device whose
reported generation lags). Killed at any point, the next pass — in this process or
another replica — reads what was committed and plans the rest; the planner returns no
action for work already done.

Gates do not punish the infrastructure: while ``hold(now, device_timeout_s)`` gives a
reason (the controller's own ingest is unhealthy, or recovered less than a grace period
ago — ``Controller.hold_reason``), the pass plans with the device timeout suspended, so no
device is marked timed out and silence breaches no gate; evidence a device signed (failed,
rolled back, NaN, latency) still counts. The rollout's state carries ``held`` (shown in
status, one event when the hold begins and one when it ends) and resumes by itself.
Silence is only measured from ``heard_from()`` on (the controller's start or the end of
its last ingest outage): a device's timeout clock never includes time the controller
could not hear it.

No pass touches the whole fleet when only a few devices changed (issue 14): a rollout whose
last pass planned nothing is skipped — one indexed read of its row, no device or member
row — while its revision, its hold and the silence floor are unchanged, none of the devices
marked dirty since (``dirty.py``) is a member or a candidate for it, and its next deadline
(``wake.next_deadline``: soak end, paced dispatch, device timeouts) has not come. A replica
that just took the lease over, and every rollout every ``full_every_s``, gets a full pass.
After the pass, the member rows of finished rollouts move to the archive (``archive.py``).

Counts (``PassResult``) only include transactions that committed: a pass that lost a race
and rolled back is retried, and what it would have sent is counted once, when it is sent.
On PostgreSQL the devices a pass assigns are locked (``FOR UPDATE``, in id order) before
any of its member rows are written, the order ingest takes them in (device, then its
member rows), so the two never deadlock.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ...protocols import ModelRef
from .. import audit, db, lifecycle
from ..devices import fleet, history
from ..devices.fleet import DesiredPublisher
from ..tables import Device, ModelVersion
from . import archive, dirty, member_rows, nudge
from .commands import apply_command
from .device_view import DeviceView, DeviceViews
from .member_rows import MemberRow
from .model import (
    QUIET_STATES,
    AssignWave,
    DeviceObservation,
    Log,
    MarkDeviceTimedOut,
    RecordGateResults,
    RevertDevice,
    RolloutSpec,
    RolloutState,
    SetDesired,
    UpdateRollout,
)
from .plan import plan
from .store import (
    ACTIVE_STATES,
    StaleState,
    acquire_lease,
    add_event,
    assignment_owners,
    baseline_p99_many,
    desired_refs,
    lock_rollout,
    observation,
    observe,
    ref_dict,
    seed_agreement,
    slot_report,
    spec_of,
    state_of,
    track_phase,
    version_by_digest,
    with_latency,
    write_state,
)
from .tables import Rollout, RolloutMember
from .wake import next_deadline

log = logging.getLogger(__name__)

LEASE_NAME = "rollout-reconciler"
MARK_LIMIT = 100_000  # more dirty marks than this at once: every rollout is read in full


@dataclass
class PassResult:
    """What one pass did (for tests, benchmarks and logs)."""

    leader: bool = False
    rollouts: int = 0
    actions: int = 0
    set_desired: int = 0
    reverted: int = 0
    published: int = 0
    conflicts: int = 0
    skipped: int = 0  # rollouts left alone: nothing of theirs changed, no deadline came
    dirty: int = 0  # devices marked dirty at the start of the pass
    archived: int = 0  # member rows of finished rollouts moved to the archive (archive.py)
    read_full: int = 0  # rollouts whose pass read every device
    read_changed: int = 0  # rollouts whose pass read only the devices that changed (``_Seen``)
    reread: int = 0  # devices those passes read again
    by_rollout: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Quiet:
    """A rollout's last pass planned nothing: what must stay the same for the next to skip it."""

    revision: int
    held: str | None
    floor: float | None
    wake_at: float
    full_at: float
    stale: frozenset[str] = frozenset()  # devices marked while the rollout was skipped


@dataclass
class _Seen:
    """What a rollout's last committed pass planned from, for the next pass to read again
    only what may have changed since: the devices marked dirty (``dirty.py``) and those
    the pass's own actions changed (``stale``). Every column the planner reads is marked
    when it changes (an online device's ``last_seen`` is not, and the planner reads it
    only for an offline device, whose ``last_seen`` cannot move unmarked).

    ``members``: the rollout's member rows (``MemberRow``); ``obs``: every device's
    observation before the latency figures and the silence floor, in device id order."""

    revision: int
    full_at: float
    members: dict[str, Any]
    obs: dict[str, DeviceObservation]
    stale: set[str] = field(default_factory=set)
    full: bool = False  # this pass read everything
    reread: int = 0  # … or this many devices again


class Reconciler:
    """Runs reconcile passes for one controller replica.

    Args:
        engine: the controller database.
        publisher: sends desired state (the ``Controller``).
        holder: this replica's name in the lease (unique per process).
        lease_ttl_s: how long the lease lasts without renewal; a replica that dies is
            replaced by another after at most this long.
        clock: seconds since the epoch.
        full_every_s: every rollout gets a full pass at least this often, dirty or not (the
            safety net for a change no mark recorded).
    """

    def __init__(self, engine: Engine, publisher: DesiredPublisher | None, *, holder: str | None = None,
                 prefix: str = "controller", lease_ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 hold: Callable[[float, float], str | None] | None = None,
                 heard_from: Callable[[], float] | None = None, full_every_s: float = 300.0):
        self.engine = engine
        self.publisher = publisher
        self.holder = holder or f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self.hold = hold
        self.heard_from = heard_from
        self._specs: dict[str, RolloutSpec] = {}
        self.totals = PassResult()
        self.full_every_s = full_every_s
        self.archive_batch = 2000
        self._quiet: dict[str, _Quiet] = {}
        self._nudged: dict[str, float] = {}  # device -> the quiet spell it was last asked to report in (nudge.py)
        self._views = DeviceViews()  # the fleet as the last pass read it (device_view.py)
        self._leased_at: float | None = None  # the last pass that held the lease
        self._marks: dict[str, int] = {}  # dirty marks read at the start of this pass
        self._dirty_devices: list[Device] | None = None
        self._seen: dict[str, _Seen] = {}  # rollout -> what its last committed pass read
        self._marks_complete = True  # the marks read are every mark (not cut at the read limit)
        #: a pass reads everything again when more devices than this share of the fleet changed
        self.refresh_fraction = 0.5

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----- one pass --------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> PassResult:
        now = self.clock() if now is None else now
        result = PassResult()
        dirty.enable(self.engine)  # the controller migrated before its first pass
        with self.session() as s:
            if not acquire_lease(s, LEASE_NAME, self.holder, self.lease_ttl_s, now):
                self._quiet.clear()  # another replica acts: what we knew goes stale
                self._seen.clear()
                self._leased_at = None
                return result
            if self._leased_at is None or now - self._leased_at > self.lease_ttl_s:
                self._quiet.clear()  # the lease may have been someone else's meanwhile
                self._seen.clear()
            self._leased_at = now
            result.leader = True
            ids = s.exec(select(Rollout.id).where(col(Rollout.state).in_(ACTIVE_STATES))
                         .order_by(Rollout.created_at)).all()
            self._marks = dirty.read(s, limit=MARK_LIMIT)
            self._marks_complete = len(self._marks) < MARK_LIMIT
            self._dirty_devices = None
            result.dirty = len(self._marks)
        complete = True
        try:
            for rollout_id in ids:
                try:
                    self._guarded(rollout_id, now, result, skip_quiet=True)
                except StaleState as exc:
                    result.conflicts += 1
                    log.info("%s; retrying on the next pass", exc)
        except BaseException:
            complete = False
            raise
        finally:
            self._add(result)
            if complete and self._marks:
                with self.session() as s:  # every rollout has seen them
                    dirty.clear(s, self._marks)
            self._marks, self._dirty_devices = {}, None
        with self.session() as s:  # finished rollouts leave the hot tables, a batch a pass
            result.archived = archive.archive_finished(s, now, batch=self.archive_batch)
        return result

    def reconcile(self, rollout_id: str, now: float, result: PassResult | None = None) -> int:
        """One pass over one rollout, in one transaction. Returns the number of actions.

        Raises:
            StaleState: the rollout was written by someone else meanwhile, or the transaction
                lost a race in the database (deadlock, serialization failure): nothing applied.
        """
        return self._guarded(rollout_id, now, result, skip_quiet=False)

    def _guarded(self, rollout_id: str, now: float, result: PassResult | None, *, skip_quiet: bool) -> int:
        """``reconcile``; ``skip_quiet`` (``run_once`` only, which read the dirty marks) may
        leave a quiet rollout alone."""
        quiet = self._quiet.pop(rollout_id, None)  # set again only by a pass that planned nothing
        if not skip_quiet:
            quiet = None
        try:
            return self._reconcile(rollout_id, now, result, quiet, skip_quiet)
        except StaleState:
            raise
        except Exception as exc:
            if db.is_conflict(exc):
                raise StaleState(f"rollout {rollout_id}: lost a database race ({type(exc).__name__})") from exc
            raise

    def _reconcile(self, rollout_id: str, now: float, result: PassResult | None = None,
                   quiet: _Quiet | None = None, skip_ok: bool = False) -> int:
        result = result or PassResult()
        done = PassResult()  # merged into result only once the transaction committed
        changed: list[Device] = []
        with self.session() as s:
            row = lock_rollout(s, rollout_id)
            if row is None:
                return 0
            state = state_of(row)
            if state.state in QUIET_STATES:
                return 0
            if self._blocked(s, row, state, now):  # nothing of a blocked version is sent (lifecycle.py)
                s.commit()
                return 0
            if state.state == "scheduled":  # not due yet: nothing; due: supersede, then plan starts it
                if state.start_at is not None and now < state.start_at:
                    return 0
                self._start_scheduled(s, row, state, now)
            spec = self._spec(row)
            held = self.hold(now, spec.device_timeout_s) if self.hold is not None else None
            floor = self.heard_from() if self.heard_from is not None else None
            if quiet is not None and self._still_quiet(s, row, spec, quiet, held, floor, now):
                self._quiet[rollout_id] = dataclasses.replace(quiet, stale=quiet.stale | frozenset(self._marks))
                result.skipped += 1
                s.commit()
                return 0
            seen = self._seen.pop(rollout_id, None)  # set again only by a pass that commits
            if quiet is not None and seen is not None:  # skipped passes left these marks unread
                seen.stale |= quiet.stale
            with s.no_autoflush:  # nothing written before the devices are locked (_assign)
                seen, phased = self._read(s, row, seen if skip_ok else None, now)
                if seen.full:
                    result.read_full += 1
                else:
                    result.read_changed += 1
                    result.reread += seen.reread
                full_at = seen.full_at
                members = seen.members
                obs = list(seen.obs.values())
                if any(str(g).startswith("latency_p99_ratio") for g in row.gates or ()):
                    obs = with_latency(s, row, obs)  # per-period p99s: the latency gate's interval
                if floor is not None:
                    obs = [_silence_from(o, floor) for o in obs]
                planned = spec if held is None else dataclasses.replace(spec, device_timeout_s=HELD_TIMEOUT_S)
                p = plan(planned, state, obs, now)
                actions = _with_hold(rollout_id, state, p.actions, held, now)
                result.rollouts += 1
                nudges, nudge_at = (nudge.plan(planned, state, obs, now, self._nudged) if self.publisher is not None
                                    else ([], float("inf")))
                self._nudged.update(nudges)
                if not actions:
                    revision = row.revision
                    member_rows.write_phases(s, [members[d] for d in phased])
                    s.commit()
                    wake_at = min(next_deadline(spec, state, obs, now), nudge_at)
                    self._quiet[rollout_id] = _Quiet(revision=revision, held=held, floor=floor,
                                                     wake_at=wake_at, full_at=full_at)
                    self._keep(rollout_id, seen, revision, full_at, ())
                    self._nudge(s, row, nudges, now)
                    return 0
                owners = assignment_owners(s, row.slot)
                changed = self._apply(s, row, spec, actions, members, phased, owners, now, done)
            s.commit()
            # what the actions changed (desired state, member columns) is read again by the next pass
            self._keep(rollout_id, seen, row.revision, full_at,
                       [d for a in actions if (d := getattr(a, "device_id", None)) is not None])
            if nudges:  # those the plan re-sent anyway are not asked twice
                sent = {d.id for d in changed}
                self._nudge(s, row, [n for n in nudges if n[0] not in sent], now)
            result.set_desired += done.set_desired
            result.reverted += done.reverted
            result.actions += len(actions)
            result.by_rollout[rollout_id] = len(actions)
            if self.publisher is not None and changed:
                try:  # the wave signed in bulk, published after its metadata commits
                    result.published += self.publisher.publish_devices(s, changed)
                except Exception:  # the sync loop re-sends lagging devices
                    log.exception("publishing desired state to %d devices (%s…) failed", len(changed), changed[0].id)
        return len(actions)

    def _read(self, s: Session, row: Rollout, seen: _Seen | None, now: float) -> tuple[_Seen, list[str]]:
        """What the pass plans from: ``seen`` brought up to date by reading again only the
        devices marked dirty and those ``seen`` says are stale, or (no ``seen``, the lease
        or the rollout's revision moved, the periodic full pass is due, too much changed)
        everything. Returns it and the members whose phase columns moved (to be written)."""
        ids = set(self._marks) | (seen.stale if seen is not None else set())  # what a refresh reads
        if seen is not None and (not self._marks_complete or row.revision != seen.revision
                                 or now - seen.full_at >= self.full_every_s
                                 or len(ids) > self.refresh_fraction * max(len(seen.obs), 1)):
            seen = None
        phased: list[str] = []  # members whose phase columns moved (written after any device lock)
        if seen is None:
            members: dict[str, Any] = member_rows.read(s, row.id)  # plain rows, not ORM (member_rows.py)
            devices = self._views.load(s)  # the planner's columns, decoded only where they changed
            desired = desired_refs(s, row.slot)
            obs: dict[str, DeviceObservation] = {}
            for d in devices:
                m = members.get(d.id)
                if m is not None and track_phase(m, d, row.slot, now):
                    phased.append(d.id)
                    _note_failure(s, row, m, d, now)
                obs[d.id] = observe(self._views.fields(d.id, row.slot), m, desired.get(d.id))
            return _Seen(revision=row.revision, full_at=now, members=members, obs=obs, full=True), phased
        seen.stale, seen.full, seen.reread = set(), False, len(ids)
        if not ids:
            return seen, phased
        views = self._views.refresh(s, ids)
        fresh = member_rows.read(s, row.id, ids)
        desired = desired_refs(s, row.slot, ids)
        added = False
        for device_id in sorted(ids):
            member: Any = fresh.get(device_id)  # a MemberRow: the names of a RolloutMember (member_rows.py)
            if member is None:
                seen.members.pop(device_id, None)
            else:
                seen.members[device_id] = member
            view: Any = views.get(device_id)  # a DeviceView: the names of a Device (device_view.py)
            if view is None:  # the device is gone
                seen.obs.pop(device_id, None)
                continue
            if member is not None and track_phase(member, view, row.slot, now):
                phased.append(device_id)
                _note_failure(s, row, member, view, now)
            added = added or device_id not in seen.obs
            seen.obs[device_id] = observe(self._views.fields(device_id, row.slot), member, desired.get(device_id))
        if added:  # a new device: keep the full pass's (id) order
            seen.obs = dict(sorted(seen.obs.items()))
        return seen, phased

    def _keep(self, rollout_id: str, seen: _Seen, revision: int, full_at: float, touched: Iterable[str]) -> None:
        """Remember what a committed pass read; the devices it ``touched`` are read again."""
        stale = set(touched)
        for device_id in stale:
            seen.members.pop(device_id, None)  # read afresh with its device and assignment
        seen.revision, seen.full_at, seen.stale = revision, full_at, stale
        self._seen[rollout_id] = seen

    def _nudge(self, s: Session, row: Rollout, nudges: list[tuple[str, float]], now: float) -> int:
        """Re-send desired state to members quiet for half their device timeout (nudge.py):
        each answers with its current signed report. Returns how many were sent."""
        if not nudges or self.publisher is None:
            return 0
        ids = [device_id for device_id, _ in nudges]
        devices: list[Device] = []
        for i in range(0, len(ids), 500):
            devices += s.exec(select(Device).where(col(Device.id).in_(ids[i:i + 500]))
                              .where(col(Device.revoked_at).is_(None))).all()
        if not devices:
            return 0
        message = (f"asked {len(devices)} device(s) quiet for half the device timeout to report again "
                   f"({', '.join(d.id for d in devices[:5])}{', …' if len(devices) > 5 else ''})")
        add_event(s, row.id, now, message, data={"devices": [d.id for d in devices[:100]]})
        s.commit()
        log.info("rollout %s: %s", row.id, message)
        try:
            return self.publisher.publish_devices(s, devices)
        except Exception:  # the next spell, or the timeout, decides
            log.exception("rollout %s: re-sending desired state to %d quiet devices failed", row.id, len(devices))
            return 0

    def _still_quiet(self, s: Session, row: Rollout, spec: RolloutSpec, quiet: _Quiet, held: str | None,
                     floor: float | None, now: float) -> bool:
        """Nothing the last (empty) plan read has changed and no deadline came: skip the rollout."""
        if (row.revision != quiet.revision or held != quiet.held or floor != quiet.floor
                or now >= quiet.wake_at or now - quiet.full_at >= self.full_every_s):
            return False
        if not self._marks:
            return True
        marked = list(self._marks)
        for i in range(0, len(marked), 500):  # a dirty member: its rollout looks again
            if s.exec(select(RolloutMember.device_id).where(RolloutMember.rollout_id == row.id)
                      .where(col(RolloutMember.device_id).in_(marked[i:i + 500])).limit(1)).first():
                return False
        if self._dirty_devices is None:  # candidates: dirty devices the selection may now take in
            self._dirty_devices = list(s.exec(select(Device).where(col(Device.id).in_(marked))).all()) \
                if len(marked) <= 10_000 else []
            if len(marked) > 10_000:
                return False
        return not any(spec.selector.matches(observation(d, None, None, row.slot)) for d in self._dirty_devices)

    # ----- applying a plan -------------------------------------------------------------------

    def _apply(self, s: Session, row: Rollout, spec: RolloutSpec, actions: tuple, members: dict[str, Any],
               phased: list[str], owners: dict[str, str | None], now: float, result: PassResult) -> list[Device]:
        """Apply ``actions``: the columns they change of existing members (and the phases the
        pass saw there) in one executemany per set of columns, the members a wave adds as
        plain rows inserted with their history in two executemany statements, every other
        member whose phase moved in one executemany — all after the devices are locked."""
        wanted: dict[str, ModelRef | None] = {}  # device -> final desired ref this pass
        new_members: list[str] = []
        written: dict[str, set[str]] = defaultdict(set)  # existing member -> the columns changed
        moved = set(phased)

        dispatched = {d for d, m in members.items() if m.dispatched_at is not None}
        baselines = {}  # control slot: the latency of the model each newly dispatched device replaces
        if row.slot == "control":
            baselines = baseline_p99_many(s, {a.device_id: a.previous for a in actions if isinstance(a, SetDesired)
                                              and getattr(members.get(a.device_id), "dispatched_at", None) is None}, row.digest)

        def keep(m: Any, *columns: str) -> None:
            """An existing member's changed columns are written below (with its phase, if it
            moved); a new one is inserted whole."""
            if m.device_id not in new_set:
                written[m.device_id].update(columns)
                if m.device_id in moved:
                    written[m.device_id].update(member_rows.PHASE_FIELDS)

        new_set: set[str] = set()

        joined: list[dict[str, Any]] = []  # history rows of the members added

        def overridden(device_id: str) -> bool:
            """Once a device was sent this rollout's model, an assignment made since by someone
            else (a direct ``fleet deploy``) wins: the rollout no longer changes that slot."""
            return device_id in dispatched and device_id in owners and owners[device_id] != row.id

        for a in actions:
            if isinstance(a, AssignWave):
                m = members.get(a.device_id)
                if m is None:  # a plain row, inserted after the devices are locked (no ORM object each)
                    m = MemberRow(rollout_id=row.id, device_id=a.device_id, wave=a.wave, assigned_at=a.at)
                    members[a.device_id] = m
                    new_members.append(a.device_id)
                    new_set.add(a.device_id)
                    joined.append(history.new_row(a.device_id, "rollout", f"joined rollout {row.id} ("
                                                  f"{row.model_name}:{row.model_version} into {row.slot}), wave "
                                                  f"{a.wave}", slot=row.slot, data={"rollout": row.id, "wave": a.wave}))
                else:
                    m.wave, m.assigned_at = a.wave, a.at
                keep(m, "wave", "assigned_at")
            elif isinstance(a, SetDesired):
                m = members[a.device_id]
                if m.dispatched_at is None:
                    m.dispatched_at = a.at
                    m.previous = ref_dict(a.previous)
                    m.frames = m.errors = m.nan_outputs = 0
                    m.candidate_p99_ms, m.candidate_periods = None, 0
                    keep(m, "dispatched_at", "previous", "frames", "errors", "nan_outputs", "candidate_p99_ms",
                         "candidate_periods")
                    if row.slot == "control":  # the latency of the model it replaces, measured before
                        p99, n = baselines.get(a.device_id, (None, 0))
                        if p99 is not None:
                            m.baseline_p99_ms, m.baseline_periods = p99, n
                            keep(m, "baseline_p99_ms", "baseline_periods")
                if not overridden(a.device_id):
                    wanted[a.device_id] = a.ref
                    result.set_desired += 1
            elif isinstance(a, RevertDevice):
                m = members[a.device_id]
                if m.reverted_at is None:
                    m.reverted_at = a.at
                    keep(m, "reverted_at")
                if not overridden(a.device_id):
                    wanted[a.device_id] = a.to_ref
                    result.reverted += 1
            elif isinstance(a, MarkDeviceTimedOut):
                m = members[a.device_id]
                m.timed_out_at = a.at
                keep(m, "timed_out_at")
                add_event(s, row.id, a.at, f"device {a.device_id} timed out: {a.reason}",
                          level="warning", data={"device": a.device_id})
            elif isinstance(a, RecordGateResults):
                add_event(s, row.id, a.at, f"wave {a.wave + 1} gates {a.outcome}: " + "; ".join(
                    f"{r.metric} {r.value if r.value is not None else '-'} ({r.status})" for r in a.results),
                    level="warning" if a.outcome == "breached" else "info", kind="gates",
                    data={"wave": a.wave + 1, "outcome": a.outcome,  # waves are named 1-based everywhere
                          "results": [r.model_dump(mode="json") for r in a.results]})
                audit.record_gate_breach(s, row.id, a, spec.on_breach, self.publisher)  # same transaction
            elif isinstance(a, Log):
                add_event(s, row.id, now, a.message, level=a.level)
                (log.warning if a.level == "warning" else log.info)("%s", a.message)
            elif isinstance(a, UpdateRollout):
                write_state(s, row, a.state, now)
        if new_members:
            for device_id, (agreement, frames) in seed_agreement(s, row, new_members).items():
                m = members[device_id]
                m.agreement, m.agreement_frames = agreement, frames
        changed = self._assign(s, row, wanted)  # locks the devices it assigns (PostgreSQL)
        member_rows.insert(s, [members[d] for d in new_members])
        history.insert_rows(s, joined)
        member_rows.write(s, [(members[d], cols) for d, cols in written.items()])
        member_rows.write_phases(s, [members[d] for d in phased if d not in written and d not in new_set])
        dirty.mark(s, [*new_members, *written])  # as the ORM flush of a member row marked its device
        return changed

    def _assign(self, s: Session, row: Rollout, wanted: dict[str, ModelRef | None]) -> list[Device]:
        groups: dict[str | None, list[str]] = defaultdict(list)
        refs: dict[str | None, ModelRef | None] = {}
        for device_id, ref in sorted(wanted.items()):
            key = ref.digest if ref is not None else None
            groups[key].append(device_id)
            refs[key] = ref
        changed: list[Device] = []
        _lock_devices(s, sorted(wanted))
        for key, device_ids in groups.items():
            mv: ModelVersion | None = None
            if key is not None:
                mv = s.get(ModelVersion, row.model_version_id) if key == row.digest else version_by_digest(s, key)
                if mv is None:
                    ref = refs[key]
                    add_event(s, row.id, self.clock(), f"model {ref.label if ref else key} is not in the "
                              f"catalog; devices {', '.join(device_ids)} keep their current desired model",
                              level="warning")
                    continue
                if mv.status == "blocked":  # never sent back to a blocked version (lifecycle.py)
                    add_event(s, row.id, self.clock(), f"model {mv.name}:{mv.version} is blocked; devices "
                              f"{', '.join(device_ids)} are not sent back to it and keep their current "
                              "desired model", level="warning")
                    continue
            changed += fleet.assign(s, mv, row.slot, device_ids, rollout_id=row.id, commit=False)
        return changed

    def _blocked(self, s: Session, row: Rollout, state: RolloutState, now: float) -> bool:
        """True when the rollout's model is blocked and this pass must not plan: a rollout that
        can still send it is aborted here (event, audit entry), a completed one adopts no late
        joiner. Reverting (rolling_back) goes on: it moves devices off the version."""
        if state.state in ("rolling_back", "rolled_back"):
            return False
        mv = s.get(ModelVersion, row.model_version_id)
        if mv is None or mv.status != "blocked":
            return False
        if state.state in lifecycle.ABORTABLE:
            why = f"model {row.model_name}:{row.model_version} is blocked: {mv.status_reason or 'no reason given'}"
            lifecycle.abort_rollout(s, row, why, actor="reconciler", role="system", now=now,
                                    audit_log=_audit_log(self.publisher))
            log.warning("rollout %s aborted: %s", row.id, why)
        return True

    def _start_scheduled(self, s: Session, row: Rollout, state: RolloutState, now: float) -> None:
        """A scheduled rollout's time has come: supersede what it overlaps now (not when it
        was scheduled) and record the start in the audit log, in the pass's transaction."""
        from datetime import datetime, timezone

        from .service import supersede_overlapping

        superseded = supersede_overlapping(s, self._spec(row), f"{row.model_name}:{row.model_version}", now)
        fields = dict(actor="reconciler", role="system", action="rollout.scheduled_start", target=row.id,
                      summary={"scheduled_for": state.start_at, "late_s": round(now - (state.start_at or now), 3),
                               "superseded": superseded},
                      now=datetime.fromtimestamp(now, timezone.utc))
        audit_log = _audit_log(self.publisher)
        if audit_log is not None:
            audit_log.append(s, **fields)
        else:
            audit.append(s, **fields)  # type: ignore[arg-type]

    def _spec(self, row: Rollout) -> RolloutSpec:
        spec = self._specs.get(row.id)
        if spec is None:
            spec = self._specs[row.id] = spec_of(row)
        return spec

    def _add(self, r: PassResult) -> None:
        t = self.totals
        t.leader = r.leader
        t.rollouts += r.rollouts
        t.actions += r.actions
        t.set_desired += r.set_desired
        t.reverted += r.reverted
        t.published += r.published
        t.conflicts += r.conflicts
        t.skipped += r.skipped
        t.archived += r.archived
        t.read_full += r.read_full
        t.read_changed += r.read_changed
        t.reread += r.reread


def _lock_devices(s: Session, device_ids: list[str]) -> None:
    """PostgreSQL: hold the device rows a pass assigns (id order) before it writes anything, as
    ingest does (device row, then its member rows): a pass and a message never deadlock."""
    if not device_ids or s.get_bind().dialect.name != "postgresql":
        return
    for i in range(0, len(device_ids), 500):
        s.exec(select(Device.id).where(col(Device.id).in_(device_ids[i:i + 500]))
               .order_by(Device.id).with_for_update()).all()


def _audit_log(publisher: object) -> audit.AuditLog | None:
    """The controller's signed audit log when the publisher is a controller, else None."""
    if hasattr(publisher, "settings") and hasattr(publisher, "engine"):
        return audit.for_controller(publisher)
    return None


HELD_TIMEOUT_S = 1e12  # "no device timeout" for the planner while held (a spec needs a finite number)


def _silence_from(o: DeviceObservation, floor: float) -> DeviceObservation:
    """``o`` with its silence clocks (last seen, phase since, stale since, assigned) starting
    no earlier than ``floor``, for the planner only (nothing of it is stored)."""
    if o.wave is None:
        return o
    if (o.last_seen or 0.0) >= floor and (o.phase_since or 0.0) >= floor \
            and (o.stale_since is None or o.stale_since >= floor) and (o.assigned_at is None or o.assigned_at >= floor):
        return o  # nothing before the floor: unchanged (no copy per member per pass)

    def later(t: float | None) -> float | None:
        return None if t is None else max(t, floor)

    return dataclasses.replace(o, last_seen=max(o.last_seen or 0.0, floor), phase_since=max(o.phase_since or 0.0, floor),
                               stale_since=later(o.stale_since), assigned_at=later(o.assigned_at))


def _with_hold(rollout_id: str, state: RolloutState, actions: tuple, held: str | None, now: float) -> tuple:
    """The plan's actions with the rollout's ``held`` brought up to date (an event when a hold
    begins or ends). A rollout that has finished is never shown held."""
    final = next((a.state for a in reversed(actions) if isinstance(a, UpdateRollout)), state)
    if final.state in ("completed", "rolled_back", "aborted", "superseded"):
        held = None
    if final.held == held:
        return actions
    rest = tuple(a for a in actions if not isinstance(a, UpdateRollout))
    if held is not None and final.held is None:
        note = Log("warning", f"rollout {rollout_id}: {held}; device timeouts and silence do not count "
                              "against the rollout until the controller hears the fleet again")
    elif held is None:
        note = Log("info", f"rollout {rollout_id}: resumed: the controller hears the fleet again; "
                           "device timeouts count again")
    else:
        note = None  # the reason changed (outage → grace): status only
    return (*rest, *((note,) if note else ()), UpdateRollout(final.model_copy(update={"held": held})))


def _note_failure(s: Session, row: Rollout, m: RolloutMember, d: DeviceView, now: float) -> None:
    """Log a member that reports failed/rolled_back for the rollout's model, with its error."""
    if m.seen_phase not in ("failed", "rolled_back") or m.dispatched_at is None:
        return
    rep = slot_report(d, row.slot)
    if m.seen_target != row.digest and (rep.get("installed") or {}).get("digest") != row.digest:
        return
    code, error = rep.get("error_code") or "-", rep.get("error") or ""
    add_event(s, row.id, now, f"device {d.id} ({d.hardware_id}) {m.seen_phase}: {code} {error}".strip(),
              level="warning", data={"device": d.id, "phase": m.seen_phase, "error_code": code})


def command(session: Session, rollout_id: str, name: str, now: float, *, reason: str | None = None,
            actor: str = "") -> RolloutState:
    """Apply an operator command to a rollout (row lock + revision check). Commits.

    Raises:
        IllegalTransition: the state does not allow it. StaleState: a concurrent write.
    """
    row = lock_rollout(session, rollout_id)
    if row is None:
        from ..errors import NotFound

        raise NotFound(f"no rollout {rollout_id!r}")
    state = state_of(row)
    new = apply_command(state, name, now, reason=reason)
    if new != state:
        write_state(session, row, new, now)
        add_event(session, rollout_id, now, f"{name} by {actor or 'operator'}: {state.state} → {new.state}",
                  kind="command", data={"command": name, "by": actor, "from": state.state, "to": new.state})
    session.commit()
    return new
