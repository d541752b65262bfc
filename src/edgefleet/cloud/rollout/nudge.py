"""Ask a quiet device to report again before its device timeout runs out.

Pure. A device whose reports were lost between the broker and the controller (a broker
queue limit reached while the controller worked through a wave's backlog, a broker that
restarted without its store) looks stuck in a phase it left long ago, and would be timed
out — a gate breach on a good model. So half way to its device timeout
(``NUDGE_FRACTION``), every dispatched, online member still in flight (dispatched or
installing: ``metrics.IN_FLIGHT``) that has been quiet since is re-sent its desired state,
once per quiet spell; every agent answers a desired hint with its current signed report.
One whose report was lost is then counted as what it is; one that is really stuck reports
the same phase and times out at the full timeout, as before.

``plan`` returns the members to nudge and the moment the next one comes due (the
reconciler's wake deadline, beside ``wake.next_deadline``). ``nudged`` maps a device to the
start of the quiet spell it was last nudged in (kept by the reconciler, in memory: after a
restart or a lease change a device may be nudged once more, never more than once a spell).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .metrics import IN_FLIGHT, classify
from .model import DeviceObservation, RolloutSpec, RolloutState

NUDGE_FRACTION = 0.5  # of the device timeout
_NUDGED_STATES = frozenset({"running", "soaking", "completed"})


def quiet_since(o: DeviceObservation) -> float | None:
    """When an online, dispatched member last moved (metrics.classify's clock for it)."""
    if o.dispatched_at is None or not o.online:
        return None
    return max(o.dispatched_at, o.phase_since or 0.0)


def _candidates(spec: RolloutSpec, state: RolloutState, observations: Iterable[DeviceObservation],
                now: float) -> Iterable[tuple[DeviceObservation, float]]:
    if state.state not in _NUDGED_STATES:
        return
    waves = state.wave_starts()
    for o in observations:
        if o.wave is None or o.timed_out_at is not None:
            continue
        since = quiet_since(o)
        if since is None:
            continue
        started = waves.get(o.wave)
        if state.state == "completed" and started is None:
            started = state.finished_at
        if classify(o, model=spec.model, device_timeout_s=spec.device_timeout_s, wave_started_at=started,
                    now=now) in IN_FLIGHT:
            yield o, since


def plan(spec: RolloutSpec, state: RolloutState, observations: Iterable[DeviceObservation], now: float,
         nudged: Mapping[str, float]) -> tuple[list[tuple[str, float]], float]:
    """``(due, next_at)``: the members to re-send desired state to now, as ``(device id, quiet
    since)``, and the earliest moment after ``now`` another one comes due (``math.inf``: none;
    the reconciler's wake deadline). One classification per member."""
    wait = spec.device_timeout_s * NUDGE_FRACTION
    due: list[tuple[str, float]] = []
    next_at = math.inf
    for o, since in _candidates(spec, state, observations, now):
        if nudged.get(o.device_id, -math.inf) >= since:
            continue  # asked already in this quiet spell
        if now - since >= wait:
            due.append((o.device_id, since))
        else:
            next_at = min(next_at, since + wait)
    return due, next_at
