"""What ``fleet rollout status ID`` and ``GET /api/v1/rollouts/{id}`` show.

``rollout_status(spec, state, observations, now)`` folds the same inputs as ``plan`` into a
``RolloutStatus``: per wave its members, counts by device status and each gate's figure
against its limit (the live figures for the current wave, the recorded ones for ended
waves), plus overall progress for a progress bar. Pure; renders nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .gates import GateResult
from .metrics import RUNNING, WaveMetrics, classify, wave_metrics
from .model import Breach, DeviceObservation, RolloutSpec, RolloutState


@dataclass(frozen=True)
class WaveStatus:
    index: int
    percent: float
    members: int
    counts: dict[str, int]
    gates: tuple[GateResult, ...]
    outcome: str  # "waiting" | "current" | "passed" | "breached" | "empty"
    metrics: WaveMetrics


@dataclass(frozen=True)
class RolloutStatus:
    rollout_id: str
    model: str
    slot: str
    state: str
    current_wave: int
    waves: tuple[WaveStatus, ...]
    devices: int  # members of the rollout
    on_model: int  # members running the rollout's model (active or healthy)
    progress: float  # on_model / devices, 0..1
    reason: str | None
    breach: Breach | None


def rollout_status(spec: RolloutSpec, state: RolloutState,
                   observations: Iterable[DeviceObservation], now: float) -> RolloutStatus:
    members = [o for o in observations if o.wave is not None]
    starts = state.wave_starts()
    records = {r.index: r for r in state.history}  # the last record of each wave wins
    waves: list[WaveStatus] = []
    on_model = 0
    for i, percent in enumerate(spec.waves):
        pairs = [(o, classify(o, model=spec.model, device_timeout_s=spec.device_timeout_s,
                              wave_started_at=starts.get(i), now=now))
                 for o in members if o.wave == i]
        on_model += sum(1 for _, s in pairs if s in RUNNING)
        m = wave_metrics(i, pairs)
        if i == state.current_wave and state.state not in ("completed",) \
                and (i not in records or state.state in ("running", "soaking", "paused")):
            outcome, gates = "current", state.gates
        elif i in records:
            outcome, gates = records[i].outcome, records[i].gates
        else:
            outcome, gates = "waiting", ()
        waves.append(WaveStatus(index=i, percent=percent, members=m.members,
                                counts=m.counts, gates=tuple(gates), outcome=outcome,
                                metrics=m))
    n = len(members)
    return RolloutStatus(
        rollout_id=spec.id, model=spec.model.label, slot=spec.slot, state=state.state,
        current_wave=state.current_wave, waves=tuple(waves), devices=n, on_model=on_model,
        progress=on_model / n if n else 0.0, reason=state.reason, breach=state.breach)
