"""A tiny in-test fleet made of plain data, and a reconciler loop that drives ``plan``.

Devices step through the lifecycle one phase per tick towards whatever the controller
wants in the slot; each has a behaviour for the rollout's candidate model:

* ``ok``              installs, activates, turns healthy
* ``fail_selftest``   fails the self-test in ``preparing`` (model never runs)
* ``nan``             runs the model but emits NaN outputs (agent does not notice)
* ``slow``            runs the model 3x slower than the model it replaced
* ``local_rollback``  activates, then its agent rolls back on its own
* ``offline_on_install`` goes offline as soon as it starts downloading, back after a while

The loop plays the reconciler: it persists the rollout state as JSON (the "database"),
applies the planner's actions to the membership rows, and can crash half-way through
applying a plan to show that a restarted controller reaches the same outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edgefleet.cloud.rollout import (
    Action,
    AssignWave,
    DeviceObservation,
    MarkDeviceTimedOut,
    RecordGateResults,
    RevertDevice,
    RolloutSpec,
    RolloutState,
    SetDesired,
    UpdateRollout,
    plan,
    same_ref,
)
from edgefleet.protocols.messages import ModelRef, Phase

V1 = ModelRef(name="det", version="1", digest="1" * 64)
V2 = ModelRef(name="det", version="2", digest="2" * 64)
V3 = ModelRef(name="det", version="3", digest="3" * 64)

_NEXT = {Phase.NOTIFIED: Phase.DOWNLOADING, Phase.DOWNLOADING: Phase.VERIFYING,
         Phase.VERIFYING: Phase.PREPARING}
_UNDERWAY = {Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.PREPARING}


@dataclass
class SimDevice:
    device_id: str
    hardware_id: str
    tags: dict[str, str] = field(default_factory=dict)
    behaviour: str = "ok"
    bad_model: ModelRef | None = None  # the model its behaviour applies to
    online: bool = True
    offline_for: float = 0.0
    offline_until: float | None = None
    last_seen: float = 0.0
    installed: ModelRef | None = field(default_factory=lambda: V1)
    target: ModelRef | None = None
    lkg: ModelRef | None = None
    phase: Phase = Phase.IDLE
    phase_since: float = 0.0
    desired: ModelRef | None = field(default_factory=lambda: V1)
    base_p99: float = 10.0
    # telemetry of whatever model is installed, reset on each switch
    frames: int = 0
    nan: int = 0
    p99: float = 10.0
    # membership rows, one dict per rollout id
    rows: dict[str, dict] = field(default_factory=dict)
    ever_had: set[str] = field(default_factory=set)  # digests ever installed

    def _set_phase(self, phase: Phase, now: float) -> None:
        if phase != self.phase:
            self.phase, self.phase_since = phase, now

    def tick(self, now: float) -> None:
        if self.offline_until is not None and now >= self.offline_until:
            self.online, self.offline_until = True, None
        if not self.online:
            return
        self.last_seen = now
        bad = self.bad_model is not None and same_ref(self.target, self.bad_model)
        want = self.desired
        if not same_ref(want, self.installed):
            if want is None:
                self.installed, self.target = None, None
                self._set_phase(Phase.IDLE, now)
            elif not same_ref(self.target, want) or self.phase not in _UNDERWAY:
                if same_ref(self.target, want) and self.phase in (Phase.FAILED,
                                                                  Phase.ROLLED_BACK):
                    return  # the agent does not retry a target it gave up on
                self.target = want
                self._set_phase(Phase.NOTIFIED, now)
            elif self.phase in _NEXT:
                self._set_phase(_NEXT[self.phase], now)
                if self.phase == Phase.DOWNLOADING and bad \
                        and self.behaviour == "offline_on_install":
                    self.online, self.offline_until = False, now + self.offline_for
            elif self.phase == Phase.PREPARING:
                if bad and self.behaviour == "fail_selftest":
                    self._set_phase(Phase.FAILED, now)
                    return
                self.lkg, self.installed = self.installed, want
                self.ever_had.add(want.digest)
                self.frames, self.nan = 0, 0
                self._set_phase(Phase.ACTIVE, now)
        elif self.phase in _UNDERWAY:  # wanted back what it runs: drop the deployment
            self.target = None
            self._set_phase(Phase.IDLE, now)
        elif self.phase == Phase.ACTIVE:
            if bad and self.behaviour == "local_rollback":
                self.installed, self.lkg = self.lkg, None
                self._set_phase(Phase.ROLLED_BACK, now)
            else:
                self._set_phase(Phase.HEALTHY, now)
        running_bad = self.bad_model is not None and same_ref(self.installed, self.bad_model)
        if self.installed is not None:
            self.frames += 100
            self.nan += 7 if running_bad and self.behaviour == "nan" else 0
            self.p99 = self.base_p99 * (3.0 if running_bad and self.behaviour == "slow" else 1.0)

    def observe(self, rollout: RolloutSpec) -> DeviceObservation:
        row = self.rows.get(rollout.id, {})
        on_model = same_ref(self.installed, rollout.model)
        return DeviceObservation(
            device_id=self.device_id, hardware_id=self.hardware_id, tags=dict(self.tags),
            online=self.online, last_seen=self.last_seen, desired=self.desired,
            installed=self.installed, reported_target=self.target, last_known_good=self.lkg,
            phase=self.phase, phase_since=self.phase_since,
            wave=row.get("wave"), assigned_at=row.get("assigned_at"),
            dispatched_at=row.get("dispatched_at"), previous=row.get("previous"),
            reverted_at=row.get("reverted_at"), timed_out_at=row.get("timed_out_at"),
            frames=self.frames if on_model else 0, nan_outputs=self.nan if on_model else 0,
            candidate_p99_ms=self.p99 if on_model else None,
            baseline_p99_ms=self.base_p99 if on_model else None,
            # per-period p99s (a little jitter) for the latency gate's interval
            candidate_p99_periods=tuple(self.p99 * j for j in _JITTER) if on_model else (),
            baseline_p99_periods=tuple(self.base_p99 * j for j in _JITTER) if on_model else (),
        )


_JITTER = (0.97, 1.02, 1.0, 0.99, 1.03, 0.98)


def apply_action(devices: dict[str, SimDevice], rollout_id: str, action: Action) -> None:
    """What the reconciler does with one action (membership rows and desired state)."""
    if isinstance(action, AssignWave):
        devices[action.device_id].rows[rollout_id] = {"wave": action.wave,
                                                      "assigned_at": action.at}
    elif isinstance(action, SetDesired):
        d = devices[action.device_id]
        d.desired = action.ref
        row = d.rows[rollout_id]
        if row.get("dispatched_at") is None:
            row["dispatched_at"], row["previous"] = action.at, action.previous
    elif isinstance(action, RevertDevice):
        d = devices[action.device_id]
        d.desired = action.to_ref
        d.rows[rollout_id].setdefault("reverted_at", action.at)
    elif isinstance(action, MarkDeviceTimedOut):
        devices[action.device_id].rows[rollout_id]["timed_out_at"] = action.at


@dataclass
class Fleet:
    devices: dict[str, SimDevice]
    now: float = 0.0
    db: dict[str, str] = field(default_factory=dict)  # rollout id -> state JSON
    gate_log: list[RecordGateResults] = field(default_factory=list)

    @classmethod
    def of(cls, devices: Iterable[SimDevice]) -> Fleet:
        return cls({d.device_id: d for d in devices})

    def state(self, rollout_id: str) -> RolloutState:
        raw = self.db.get(rollout_id)
        if raw is None:
            return RolloutState(rollout_id=rollout_id)
        return RolloutState.model_validate_json(raw)

    def save(self, state: RolloutState) -> None:
        self.db[state.rollout_id] = state.model_dump_json()

    def observations(self, spec: RolloutSpec) -> list[DeviceObservation]:
        return [d.observe(spec) for d in self.devices.values()]

    def reconcile(self, spec: RolloutSpec, *, crash_after: int | None = None) -> list[Action]:
        """One reconciler pass. ``crash_after=k``: apply only the first k actions, then die."""
        p = plan(spec, self.state(spec.id), self.observations(spec), self.now)
        for i, action in enumerate(p.actions):
            if crash_after is not None and i >= crash_after:
                return list(p.actions)
            if isinstance(action, UpdateRollout):
                self.save(action.state)
            elif isinstance(action, RecordGateResults):
                self.gate_log.append(action)
            else:
                apply_action(self.devices, spec.id, action)
        return list(p.actions)

    def tick(self, dt: float) -> None:
        self.now += dt
        for d in self.devices.values():
            d.tick(self.now)

    # --- questions the tests ask --------------------------------------------------------

    def members(self, rollout_id: str, wave: int | None = None) -> set[str]:
        return {d.device_id for d in self.devices.values() if rollout_id in d.rows
                and (wave is None or d.rows[rollout_id]["wave"] == wave)}

    def ever_had(self, model: ModelRef) -> set[str]:
        return {d.device_id for d in self.devices.values() if model.digest in d.ever_had}

    def ever_sent(self, rollout_id: str) -> set[str]:
        return {d.device_id for d in self.devices.values()
                if d.rows.get(rollout_id, {}).get("dispatched_at") is not None}

    def running(self, model: ModelRef) -> set[str]:
        return {d.device_id for d in self.devices.values() if same_ref(d.installed, model)}


def drive(fleet: Fleet, spec: RolloutSpec, *, dt: float = 60.0, max_steps: int = 400,
          until: Callable[[RolloutState], bool] | None = None,
          crash: Callable[[int], int | None] = lambda step: None,
          check: Callable[[Fleet, int], None] | None = None) -> RolloutState:
    """Tick the fleet and reconcile until ``until(state)`` (default: a final, quiet state).

    After every complete pass the planner is asked again on the same input and must return
    nothing (idempotence). ``crash(step)`` may return k to crash after k actions that step.
    """
    if until is None:
        def until(s: RolloutState) -> bool:
            return s.state in ("completed", "rolled_back", "aborted", "superseded", "breached")
    for step in range(max_steps):
        fleet.tick(dt)
        k = crash(step)
        fleet.reconcile(spec, crash_after=k)
        if k is None:
            again = plan(spec, fleet.state(spec.id), fleet.observations(spec), fleet.now)
            assert again.actions == (), f"step {step}: not idempotent: {again.actions}"
        if check is not None:
            check(fleet, step)
        if until(fleet.state(spec.id)):
            return fleet.state(spec.id)
    raise AssertionError(f"no final state after {max_steps} steps: {fleet.state(spec.id)}")


def settle(fleet: Fleet, spec: RolloutSpec, steps: int = 20, dt: float = 60.0) -> None:
    """Keep the loop running a while (devices returning, reverts landing)."""
    for _ in range(steps):
        fleet.tick(dt)
        fleet.reconcile(spec)
