"""The rollout planner: ``plan(spec, state, observations, now) -> Plan``.

Pure and level-triggered (flocker's ``calculate_changes``): it compares what the rollout
wants with what the devices report and returns the actions that close the gap, plus the
rollout's next state. It keeps no memory between calls; everything it needs comes back in
through ``state`` and the observations' membership fields, which the actions write. Run it
again on unchanged input and it returns no action; kill the reconciler between any two
actions and the next pass picks up to the same outcome.

One pass, top-down:
  scheduled (nothing until ``state.start_at``, then pending) →
  start (pending: assign every selected device a wave) → late joiners (current wave) →
  timeouts → dispatch (current wave, within max_concurrent and the rate: ``spec.pace``,
  the rate after the rollout's successes so far, paced by ``pace.take``) → progress (settled → soak →
  gates → next wave | completed | breach) → on breach pause or roll back → revert (every
  device that was sent the model returns to its previous one) → live gate figures.

Apply the actions in order, ideally in one transaction; ``UpdateRollout`` is always last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from edgefleet.protocols.messages import ModelRef, Phase

from .errors import SpecError
from .gates import GateResult, evaluate_gates, rate_breached
from .metrics import (
    BAD,
    IN_FLIGHT,
    RUNNING,
    DeviceStatus,
    WaveMetrics,
    classify,
    same_ref,
    wave_metrics,
)
from .model import (
    QUIET_STATES,
    Action,
    AssignWave,
    Breach,
    DeviceObservation,
    Log,
    MarkDeviceTimedOut,
    RecordGateResults,
    RevertDevice,
    RolloutSpec,
    RolloutState,
    SetDesired,
    UpdateRollout,
    WaveRecord,
)
from .pace import take
from .waves import assign_waves, stable_rank

_DISPATCHING = frozenset({"running", "soaking", "completed"})
_PROGRESSING = frozenset({"running", "soaking"})
_ADOPTING = frozenset({"running", "soaking", "paused", "breached", "completed"})
_REVERTING = frozenset({"rolling_back", "rolled_back"})
_UNDERWAY = frozenset({Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING,
                       Phase.ACTIVE})


@dataclass(frozen=True)
class Plan:
    """What to do now, and the state to persist (also the payload of the last action)."""

    actions: tuple[Action, ...]
    next_state: RolloutState
    metrics: WaveMetrics  # the current wave's figures after this pass


def plan(spec: RolloutSpec, state: RolloutState, observations: Iterable[DeviceObservation],
         now: float) -> Plan:
    """Compute the actions that move one rollout forward. See the module docstring.

    Args:
        spec: the rollout as asked for.
        state: its persisted state (``RolloutState(rollout_id=spec.id)`` for a new one).
        observations: every device the rollout could touch: its members (``wave`` set) and
            the candidates for membership (the selector is applied here). Others are ignored.
        now: the current time, seconds since the epoch.

    Raises:
        SpecError: ``state`` belongs to another rollout.
    """
    if state.rollout_id != spec.id:
        raise SpecError(f"state of rollout {state.rollout_id!r} given for {spec.id!r}")
    return _Pass(spec, state, observations, now).run()


def previous_model(obs: DeviceObservation, spec: RolloutSpec) -> ModelRef | None:
    """The model a device returns to on rollback, judged before it is sent the new one:
    what it runs now unless that is unproven (in its health window) or the new model
    itself, else its reported last known good, else the rollout's fallback."""
    for ref in (obs.installed if obs.phase != Phase.ACTIVE else None,
                obs.last_known_good, spec.previous):
        if ref is not None and not same_ref(ref, spec.model):
            return ref
    return None


class _Pass:
    def __init__(self, spec: RolloutSpec, state: RolloutState,
                 observations: Iterable[DeviceObservation], now: float):
        self.spec, self.initial, self.st, self.now = spec, state, state, now
        self.obs: dict[str, DeviceObservation] = {}
        for o in observations:
            self.obs.setdefault(o.device_id, o)
        self.actions: list[Action] = []
        # classify() once per observation and wave start: all it reads besides the pass's
        # constants (model, timeout, now). Keyed by the observation's identity, since an
        # action replaces it (``_apply``); a state change that leaves the wave's start as it
        # was (most do: gates, soak, rate) keeps the status.
        self._statuses: dict[int, tuple[DeviceObservation, float | None, DeviceStatus]] = {}
        self._starts: tuple[RolloutState, dict[int, float]] | None = None
        self._changes = 0  # observations replaced so far (``_apply``): a wave's metrics are kept until one is
        self._wave_metrics: dict[int, tuple[int, float | None, WaveMetrics]] = {}

    # --- sequencing -------------------------------------------------------------------------

    def run(self) -> Plan:
        if self.st.state in QUIET_STATES:
            return Plan((), self.st, self._metrics(self.st.current_wave))
        if self.st.state == "scheduled":
            if self.st.start_at is not None and self.now < self.st.start_at:
                return Plan((), self.st, self._metrics(self.st.current_wave))
            self._set(state="pending")
            self._log("scheduled start time reached")
        if self.st.state == "pending":
            self._start()
        if self.st.state in _ADOPTING and self.st.started_at is not None:
            self._adopt_late_joiners()
        if self.st.state not in _REVERTING:
            self._mark_timeouts()
        for _ in range(2 * len(self.spec.waves) + 4):  # each turn moves the state forward
            before = self.st
            if self.st.state in _DISPATCHING:
                self._dispatch()
            if self.st.state in _PROGRESSING:
                self._progress()
            if self.st.state in _REVERTING:
                self._revert()
            if self.st == before:
                break
        metrics = self._metrics(self.st.current_wave)
        if self.st.state in ("running", "soaking", "paused", "breached"):
            self._set(gates=tuple(evaluate_gates(self.spec.gates, metrics)))
        if self.st != self.initial:
            self.actions.append(UpdateRollout(self.st))
        return Plan(tuple(self.actions), self.st, metrics)

    def _set(self, **changes: object) -> None:
        self.st = self.st.model_copy(update=changes)

    def _log(self, message: str, level: str = "info") -> None:
        self.actions.append(Log(level, f"rollout {self.spec.id}: {message}"))  # type: ignore[arg-type]

    def _apply(self, device_id: str, **changes: object) -> None:
        """Reflect an action on the in-memory view, so later steps of this pass see it."""
        self.obs[device_id] = replace(self.obs[device_id], **changes)  # type: ignore[arg-type]
        self._changes += 1

    # --- membership ---------------------------------------------------------------------

    def _selected_unassigned(self) -> list[DeviceObservation]:
        return [o for o in self.obs.values()
                if o.wave is None and self.spec.selector.matches(o)]

    def _start(self) -> None:
        fresh = self._selected_unassigned()
        waves = assign_waves(self.spec.id, fresh, self.spec.waves)
        for device_id in sorted(waves, key=lambda d: (waves[d], d)):
            self.actions.append(AssignWave(device_id, waves[device_id], self.now))
            self._apply(device_id, wave=waves[device_id], assigned_at=self.now)
        sizes = [sum(1 for w in waves.values() if w == i) for i in range(len(self.spec.waves))]
        self._set(state="running", current_wave=0, started_at=self.now,
                  wave_started_at=self.now, soak_started_at=None)
        self._log(f"started: {self.spec.model.label} into slot {self.spec.slot} on "
                  f"{len(waves)} devices, waves {sizes}")

    def _adopt_late_joiners(self) -> None:
        wave = self.st.current_wave
        for o in sorted(self._selected_unassigned(), key=lambda o: o.device_id):
            self.actions.append(AssignWave(o.device_id, wave, self.now))
            self._apply(o.device_id, wave=wave, assigned_at=self.now)
            self._log(f"device {o.device_id} joined the selection; added to wave {wave + 1}")

    def _members(self, wave: int | None = None) -> list[DeviceObservation]:
        return [o for o in self.obs.values()
                if o.wave is not None and (wave is None or o.wave == wave)]

    def _started(self, wave: int) -> float | None:
        """When ``wave`` began in the current state (None: not yet), as ``classify`` takes it."""
        if self._starts is None or self._starts[0] is not self.st:
            self._starts = (self.st, self.st.wave_starts())
        started = self._starts[1].get(wave)
        if self.st.state == "completed" and started is None:
            started = self.st.finished_at
        return started

    def _status(self, o: DeviceObservation) -> DeviceStatus:
        assert o.wave is not None
        started = self._started(o.wave)
        hit = self._statuses.get(id(o))
        if hit is not None and hit[0] is o and hit[1] == started:
            return hit[2]
        status = classify(o, model=self.spec.model, device_timeout_s=self.spec.device_timeout_s,
                          wave_started_at=started, now=self.now)
        self._statuses[id(o)] = (o, started, status)
        return status

    def _metrics(self, wave: int) -> WaveMetrics:
        """The wave's figures; computed again only once an observation or the wave's start changed."""
        started = self._started(wave)
        hit = self._wave_metrics.get(wave)
        if hit is not None and hit[0] == self._changes and hit[1] == started:
            return hit[2]
        m = wave_metrics(wave, ((o, self._status(o)) for o in self._members(wave)))
        self._wave_metrics[wave] = (self._changes, started, m)
        return m

    # --- devices ------------------------------------------------------------------------

    def _mark_timeouts(self) -> None:
        for o in sorted(self._members(), key=lambda o: o.device_id):
            if o.timed_out_at is None and o.dispatched_at is not None \
                    and self._status(o) == DeviceStatus.TIMED_OUT:
                why = "offline" if not o.online else f"no progress from phase {o.phase.value}"
                self.actions.append(MarkDeviceTimedOut(o.device_id, self.now,
                                                       f"{why} past the device timeout"))
                self._apply(o.device_id, timed_out_at=self.now)

    def _dispatch(self) -> None:
        """Send the model to current-wave (and earlier) members, within max_concurrent."""
        model, slot = self.spec.model, self.spec.slot
        open_waves = self.st.current_wave
        members = [o for o in self._members() if o.wave is not None and o.wave <= open_waves]
        for o in sorted(members, key=lambda o: o.device_id):  # re-assert the model
            if o.dispatched_at is not None and not same_ref(o.desired, model):
                self.actions.append(SetDesired(o.device_id, slot, model, o.previous, self.now))
                self._apply(o.device_id, desired=model, lagging_since=o.lagging_since or self.now)
        budget = None
        if self.spec.max_concurrent is not None:
            in_flight = sum(1 for o in members if o.online and self._status(o) in IN_FLIGHT)
            budget = self.spec.max_concurrent - in_flight
        queue = sorted((o for o in members if o.dispatched_at is None and o.online),
                       key=lambda o: (o.wave, stable_rank(self.spec.id, o.device_id),
                                      o.device_id))
        if self.spec.pace is not None:
            successes = sum(1 for o in self._members() if self._status(o) in RUNNING)
            rate = self.spec.pace.rate_at(successes)
            if rate != self.st.rate_per_min:
                if self.st.rate_per_min is not None:
                    self._log(f"dispatch rate {self.st.rate_per_min:g}/min → {rate:g}/min "
                              f"after {successes} successes")
                self._set(rate_per_min=rate)
            wanted = len(queue) if budget is None else min(len(queue), max(budget, 0))
            n, next_at = take(rate, self.st.next_dispatch_at, self.now, wanted)
            if n:
                self._set(next_dispatch_at=next_at)
            budget = n
        for o in queue:
            if budget is not None and budget <= 0:
                break
            prev = previous_model(o, self.spec)
            self.actions.append(SetDesired(o.device_id, slot, model, prev, self.now))
            # a new desired state is signed: the device is not fresh until it confirms it
            self._apply(o.device_id, desired=model, dispatched_at=self.now, previous=prev,
                        lagging_since=o.lagging_since or self.now)
            if budget is not None:
                budget -= 1

    def _revert(self) -> None:
        """Every device that was sent the model goes back to its previous one."""
        slot = self.spec.slot
        for o in sorted(self._members(), key=lambda o: o.device_id):
            if o.dispatched_at is None and not same_ref(o.desired, self.spec.model):
                continue
            to = o.previous if o.dispatched_at is not None else previous_model(o, self.spec)
            if not same_ref(o.desired, to):
                self.actions.append(RevertDevice(o.device_id, slot, to, self.now))
                self._apply(o.device_id, desired=to,
                            reverted_at=o.reverted_at if o.reverted_at else self.now)
                if to is None and slot == "control":
                    self._log(f"device {o.device_id} has no known previous control model; "
                              "its control slot is emptied", "warning")
        if self.st.state == "rolling_back":
            left = [o.device_id for o in self._members() if self._still_on_model(o)]
            if not left:
                self._set(state="rolled_back", finished_at=self.now)
                self._log("rolled back: no device reports the model any more")

    def _still_on_model(self, o: DeviceObservation) -> bool:
        """Runs the model, or is still installing it, as far as the device last said."""
        if same_ref(o.installed, self.spec.model):
            return True
        return same_ref(o.reported_target, self.spec.model) and o.phase in _UNDERWAY

    # --- waves and gates ----------------------------------------------------------------

    def _progress(self) -> None:
        wave = self.st.current_wave
        members = self._members(wave)
        m = self._metrics(wave)
        floor = m.failure_floor
        for g in self.spec.gates:
            # judged on the floor with the gate's own statistics (significant breach only)
            if g.metric == "failure" and floor is not None \
                    and rate_breached(g, m.bad, m.members - m.skipped):
                results = evaluate_gates(self.spec.gates, m)
                if all(r.status != "failed" for r in results):  # judged on the floor
                    results = [r if r.metric != "failure" else r.model_copy(update=dict(
                        value=floor, status="failed", significant=True,
                        reason=f"failure at least {floor:.4g} > limit {g.limit:g} "
                               f"({m.bad} of {m.members - m.skipped} devices already bad; "
                               f"significant)"))
                        for r in results]
                self._breach(results)
                return
        if not members:
            if wave > 0:
                self._end_wave("empty", ())
            return
        if self.st.state == "running":
            if m.pending == 0:
                self._set(state="soaking", soak_started_at=self.now)
                self._log(f"wave {wave + 1}: {m.attempted} devices settled "
                          f"({m.skipped} skipped); soaking {self.spec.soak_s:g}s")
            return
        assert self.st.soak_started_at is not None
        soak_end = self.st.soak_started_at + self.spec.soak_s
        if self.now < soak_end or m.pending > 0:
            return
        results = evaluate_gates(self.spec.gates, m)
        if any(r.status == "failed" for r in results):
            self._breach(results)
        elif any(r.pending for r in results):
            if self.now >= soak_end + self.spec.device_timeout_s:
                self._breach([r if not r.pending else r.model_copy(update=dict(
                    status="failed", reason=f"{r.reason}; none by the gate deadline "
                                            f"(soak + device timeout)")) for r in results])
        else:
            self.actions.append(RecordGateResults(wave, tuple(results), "passed", self.now))
            self._end_wave("passed", tuple(results))

    def _end_wave(self, outcome: str, results: tuple[GateResult, ...]) -> None:
        st = self.st
        assert st.wave_started_at is not None
        record = WaveRecord(index=st.current_wave, started_at=st.wave_started_at,
                            soak_started_at=st.soak_started_at, ended_at=self.now,
                            outcome=outcome, gates=results)  # type: ignore[arg-type]
        history = (*st.history, record)
        if st.current_wave + 1 < len(self.spec.waves):
            self._set(history=history, state="running", current_wave=st.current_wave + 1,
                      wave_started_at=self.now, soak_started_at=None, gates=())
            self._log(f"wave {st.current_wave + 1} {outcome}; starting wave {st.current_wave + 2}")
        else:
            self._set(history=history, state="completed", finished_at=self.now,
                      soak_started_at=None, reason=None)
            self._log(f"wave {st.current_wave + 1} {outcome}; rollout completed")

    def _breach(self, results: list[GateResult]) -> None:
        st, wave = self.st, self.st.current_wave
        broken = [r for r in results if r.status == "failed"]
        summary = "; ".join(r.reason for r in broken)
        self.actions.append(RecordGateResults(wave, tuple(results), "breached", self.now))
        assert st.wave_started_at is not None
        record = WaveRecord(index=wave, started_at=st.wave_started_at,
                            soak_started_at=st.soak_started_at, ended_at=self.now,
                            outcome="breached", gates=tuple(results))
        breach = Breach(wave=wave, at=self.now, gates=tuple(results), summary=summary)
        reason = f"gate breached on wave {wave + 1}: {summary}"  # named 1-based, as status shows
        if self.spec.on_breach == "rollback":
            self._set(state="rolling_back", breach=breach, reason=reason,
                      history=(*st.history, record), rollback_started_at=self.now,
                      gates=tuple(results), paused_from=None)
            self._log(f"{reason}; rolling back", "warning")
        else:
            self._set(state="breached", breach=breach, reason=reason,
                      history=(*st.history, record), gates=tuple(results),
                      paused_from=st.state)
            self._log(f"{reason}; paused", "warning")


__all__ = ["BAD", "Plan", "plan", "previous_model"]
