"""The plain data the rollout planner reads and writes.

Flow: the reconciler loads one rollout row into ``RolloutSpec`` (what the operator asked
for, immutable) and ``RolloutState`` (where it is, JSON-serialisable), and every device the
rollout could touch into a ``DeviceObservation`` (reported state joined with the rollout's
per-device membership row). ``plan(...)`` returns ``Action`` values; applying them writes
back exactly the fields that feed the next pass (see each action's docstring).

Times are float seconds since the epoch (UTC); durations are float seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict

from edgefleet.protocols.messages import SLOTS, ModelRef, Phase, SlotName

from .errors import DurationSyntaxError, SpecError
from .gates import Gate, GateResult, parse_gates
from .pace import Pace, parse_pace
from .selector import Selector, parse_selector
from .waves import parse_waves

OnBreach = Literal["pause", "rollback"]
RolloutPhase = Literal[
    "scheduled", "pending", "running", "soaking", "paused", "breached", "rolling_back", "rolled_back",
    "completed", "aborted", "superseded",
]
#: States in which the planner emits no action at all.
QUIET_STATES: frozenset[str] = frozenset({"aborted", "superseded"})
#: States an operator can no longer leave except by rollback (completed) or nothing.
FINAL_STATES: frozenset[str] = frozenset({"rolled_back", "completed", "aborted", "superseded"})
DEFAULT_GATES = ("failure<=0.02",)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int, *, require_unit: bool = False) -> float:
    """``"90s"``, ``"30m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` → seconds; a Python number is seconds.

    ``require_unit`` (every operator input: API bodies, CLI options) refuses bare text numbers
    other than ``"0"`` (``"30"``: seconds or minutes?); without it a bare number is seconds, so
    rollouts stored before units were required still load.

    Raises:
        DurationSyntaxError
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        try:
            value = float(s)
            if value != 0 and require_unit and math.isfinite(value):
                raise DurationSyntaxError(f"{s}: durations need a unit, e.g. {s}s, 5m, 2h")
        except ValueError:
            pos, value = 0, 0.0
            for m in _DURATION.finditer(s):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * _UNIT[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise DurationSyntaxError(
                    "a duration reads like 90s, 30m, 1h30m or 2d (or a number of seconds)",
                    text=str(text)) from None
    if not math.isfinite(value) or value < 0:
        raise DurationSyntaxError("a duration must be a finite number >= 0", text=str(text))
    return value


@dataclass(frozen=True)
class RolloutSpec:
    """What the operator asked for. Immutable for the life of the rollout.

    ``previous`` is the rollout-wide fallback for a device whose own last known good model
    is unknown (None: leave the slot empty on rollback). ``max_concurrent`` bounds devices
    in flight (sent the model, not yet active/failed); None = no bound.
    """

    id: str
    model: ModelRef
    slot: SlotName
    selector: Selector
    waves: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
    soak_s: float = 1800.0
    gates: tuple[Gate, ...] = ()
    on_breach: OnBreach = "rollback"
    device_timeout_s: float = 1800.0
    max_concurrent: int | None = None
    previous: ModelRef | None = None
    pace: Pace | None = None  # --rate / --ramp: devices dispatched per minute (pace.py)

    def __post_init__(self) -> None:
        if not self.id:
            raise SpecError("a rollout needs an id")
        if self.slot not in SLOTS:
            raise SpecError(f"slot must be one of {', '.join(SLOTS)}, not {self.slot!r}")
        if self.on_breach not in ("pause", "rollback"):
            raise SpecError(f"on_breach must be 'pause' or 'rollback', not {self.on_breach!r}")
        object.__setattr__(self, "waves", parse_waves(list(self.waves)))
        object.__setattr__(self, "gates", tuple(self.gates))
        if not math.isfinite(self.soak_s) or self.soak_s < 0:
            raise SpecError("soak must be >= 0 seconds")
        if not math.isfinite(self.device_timeout_s) or self.device_timeout_s <= 0:
            raise SpecError("device timeout must be > 0 seconds")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SpecError("max_concurrent must be >= 1 (or None for no bound)")
        if len({g.metric for g in self.gates}) != len(self.gates):
            raise SpecError("more than one gate on the same metric")


def build_spec(
    *,
    id: str,
    model: ModelRef,
    slot: str,
    select: str,
    waves: str | Iterable[float] = "1,10,50,100",
    soak: str | float = "30m",
    gates: str | Iterable[str] | None = None,
    on_breach: str = "rollback",
    device_timeout: str | float = "30m",
    max_concurrent: int | None = None,
    previous: ModelRef | None = None,
    rate: str | None = None,
    ramp: str | None = None,
) -> RolloutSpec:
    """Build a spec from CLI/API text (``--select``, ``--waves``, ``--soak``, ``--gate``...).

    ``gates=None`` means the defaults (``failure<=0.02``); pass ``()`` for no gate at all.

    Raises:
        SpecError: any input that does not parse; the message says which and why.
    """
    return RolloutSpec(
        id=id,
        model=model,
        slot=slot,  # type: ignore[arg-type]
        selector=parse_selector(select),
        waves=parse_waves(waves if isinstance(waves, str) else list(waves)),
        soak_s=parse_duration(soak),
        gates=parse_gates(DEFAULT_GATES if gates is None else gates),
        on_breach=on_breach,  # type: ignore[arg-type]
        device_timeout_s=parse_duration(device_timeout),
        max_concurrent=max_concurrent,
        previous=previous,
        pace=parse_pace(rate=rate, ramp=ramp),
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Breach(_Frozen):
    """Which gate broke, on which wave, with the figures."""

    wave: int
    at: float
    gates: tuple[GateResult, ...]
    summary: str


class WaveRecord(_Frozen):
    """One wave that has ended (passed, breached or was empty)."""

    index: int
    started_at: float
    soak_started_at: float | None = None
    ended_at: float
    outcome: Literal["passed", "breached", "empty"]
    gates: tuple[GateResult, ...] = ()


class RolloutState(_Frozen):
    """Where a rollout is. Persist it whole (``model_dump_json``) or map it to columns.

    ``gates`` holds the latest evaluation of the current wave (live figures for status);
    ``history`` the waves that have ended; ``paused_from`` the state ``resume`` returns to.
    """

    rollout_id: str
    state: RolloutPhase = "pending"
    current_wave: int = 0
    started_at: float | None = None
    wave_started_at: float | None = None
    soak_started_at: float | None = None
    paused_from: RolloutPhase | None = None
    reason: str | None = None
    breach: Breach | None = None
    gates: tuple[GateResult, ...] = ()
    history: tuple[WaveRecord, ...] = ()
    rollback_started_at: float | None = None
    finished_at: float | None = None
    superseded_by: str | None = None
    start_at: float | None = None  # scheduled: when the reconciler starts it (reschedulable)
    next_dispatch_at: float | None = None  # paced: the next dispatch's theoretical time (pace.take)
    rate_per_min: float | None = None  # paced: the dispatch rate now (a ramp grows it)
    held: str | None = None  # why device silence does not count now (the controller cannot hear the fleet)

    def wave_starts(self) -> dict[int, float]:
        """When each wave that has begun began."""
        starts = {r.index: r.started_at for r in self.history}
        if self.wave_started_at is not None:
            starts[self.current_wave] = self.wave_started_at
        return starts


@dataclass(frozen=True)
class DeviceObservation:
    """One device as the planner sees it: reported state of the rollout's slot, the
    rollout's membership row for it, and the health figures of *this rollout's model*.

    Reported (from ``Reported.slots[slot]``, ``Status``): ``online``, ``last_seen``,
    ``installed``, ``reported_target`` (SlotReport.target), ``last_known_good``, ``phase``,
    ``phase_since`` (when ``phase`` last changed), ``error_code``.
    Controller side: ``desired`` (what the controller currently wants in the slot).
    Membership (written by applying actions; all None for a device not yet in the rollout):
    ``wave`` (AssignWave), ``assigned_at``, ``dispatched_at`` and ``previous`` (SetDesired),
    ``reverted_at`` (RevertDevice), ``timed_out_at`` (MarkDeviceTimedOut).
    Figures for the rollout's model on this device since it was dispatched (leave at
    0/None when unknown): ``frames``, ``errors``, ``nan_outputs``; ``candidate_p99_ms`` and
    ``baseline_p99_ms`` (the model it replaced, same device), and where the telemetry
    history has them, the per-period p99s behind both (``candidate_p99_periods``,
    ``baseline_p99_periods``: the latency gate's bootstrap); ``agreement`` and
    ``agreement_frames`` (the model's shadow agreement with control, from ShadowStats);
    ``drift`` (a 0..1 drift score).
    Freshness (``cloud/trust/freshness.py``): ``lagging_since``, since when the device's *signed*
    state (reported director version, generation) lags what was signed for it, and
    ``stale_since``, when that lag passed ``stale_after_s``; a device is counted healthy
    or active only while neither is set.
    """

    device_id: str
    hardware_id: str = "cpu-generic"
    tags: Mapping[str, str] = field(default_factory=dict)
    online: bool = True
    last_seen: float | None = None
    desired: ModelRef | None = None
    installed: ModelRef | None = None
    reported_target: ModelRef | None = None
    last_known_good: ModelRef | None = None
    phase: Phase = Phase.IDLE
    phase_since: float | None = None
    error_code: str | None = None
    wave: int | None = None
    assigned_at: float | None = None
    dispatched_at: float | None = None
    previous: ModelRef | None = None
    reverted_at: float | None = None
    timed_out_at: float | None = None
    frames: int = 0
    errors: int = 0
    nan_outputs: int = 0
    candidate_p99_ms: float | None = None
    baseline_p99_ms: float | None = None
    candidate_p99_periods: tuple[float, ...] = ()  # per-period p99 (ms) of the model, for the
    baseline_p99_periods: tuple[float, ...] = ()  # latency gate's bootstrap (store.with_latency)
    agreement: float | None = None
    agreement_frames: int = 0
    drift: float | None = None
    lagging_since: float | None = None
    stale_since: float | None = None
    window_opens_at: float | None = None  # phase awaiting_window: when the device's next window opens


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignWave:
    """Add the device to the rollout: persist ``wave`` and ``assigned_at = at``."""

    device_id: str
    wave: int
    at: float


@dataclass(frozen=True)
class SetDesired:
    """Want ``ref`` in ``slot`` on the device (update desired, publish the hint); on the
    membership row persist ``dispatched_at = at`` (only if still None) and ``previous``
    (the model to return to on rollback)."""

    device_id: str
    slot: SlotName
    ref: ModelRef
    previous: ModelRef | None
    at: float


@dataclass(frozen=True)
class RevertDevice:
    """Want ``to_ref`` (None: empty slot) in ``slot`` again; persist ``reverted_at = at``
    (only if still None)."""

    device_id: str
    slot: SlotName
    to_ref: ModelRef | None
    at: float


@dataclass(frozen=True)
class MarkDeviceTimedOut:
    """Persist ``timed_out_at = at`` on the membership row; the device counts as failed."""

    device_id: str
    at: float
    reason: str


@dataclass(frozen=True)
class RecordGateResults:
    """Audit record of a gate decision on one wave (also present in the next state)."""

    wave: int
    results: tuple[GateResult, ...]
    outcome: Literal["passed", "breached"]
    at: float


@dataclass(frozen=True)
class UpdateRollout:
    """Persist the rollout's new state. Always the last action of a plan."""

    state: RolloutState


@dataclass(frozen=True)
class Log:
    """A line for the rollout's event log."""

    level: Literal["info", "warning"]
    message: str


Action = Union[AssignWave, SetDesired, RevertDevice, MarkDeviceTimedOut, RecordGateResults,
               UpdateRollout, Log]
