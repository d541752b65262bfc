"""When a quiet rollout must be planned again even if no device changes: its next deadline.

Pure. After a pass that planned no action, the planner would plan none again on the same
observations until time alone changes a verdict: a soak ends, a paced dispatch comes due,
a scheduled start arrives, a member's maintenance window opens, or a member's device
timeout runs out. ``next_deadline`` returns
the earliest such moment (never later than the true one: every silence clock a timeout may
be measured from counts, so it may wake early — one extra full pass — but never late). A
member whose verdict time cannot change (healthy, failed, timed out …) sets no deadline.
``math.inf`` means nothing but a change can move the rollout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .metrics import DeviceStatus, classify
from .model import DeviceObservation, RolloutSpec, RolloutState

#: verdicts time alone does not change (metrics.classify): only a report or a command does
_SETTLED = frozenset({DeviceStatus.HEALTHY, DeviceStatus.ACTIVE, DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK,
                      DeviceStatus.TIMED_OUT, DeviceStatus.SKIPPED})
_TIMED = frozenset({"running", "soaking", "paused", "breached", "completed", "rolling_back"})


def next_deadline(spec: RolloutSpec, state: RolloutState, observations: Iterable[DeviceObservation],
                  now: float) -> float:
    """The earliest time after ``now`` at which the plan may change without new input
    (``now`` itself when it may change at once)."""
    if state.state == "scheduled":
        return now if state.start_at is None else max(now, state.start_at)
    if state.state == "pending":
        return now
    if state.state not in _TIMED:
        return math.inf
    at = math.inf
    if state.state == "soaking":
        end = (state.soak_started_at or now) + spec.soak_s
        at = min(at, end if end > now else now)  # past its end: waiting on figures, every pass
    waves = state.wave_starts()
    queued = False
    for o in observations:
        if o.wave is None or o.timed_out_at is not None:
            continue
        if o.dispatched_at is None and o.online and o.wave <= state.current_wave:
            queued = True
        started = waves.get(o.wave)
        if state.state == "completed" and started is None:
            started = state.finished_at
        if classify(o, model=spec.model, device_timeout_s=spec.device_timeout_s, wave_started_at=started,
                    now=now) in _SETTLED:
            continue
        window = o.window_opens_at  # awaiting its maintenance window (metrics.classify)
        if window is not None and window > now:
            at = min(at, window)  # its verdict changes when the window opens …
        clocks = (o.dispatched_at, o.phase_since if o.online else o.last_seen, o.stale_since, o.assigned_at,
                  started, window)
        for t in clocks:  # … and each silence clock may run out
            if t is not None and t + spec.device_timeout_s > now:
                at = min(at, t + spec.device_timeout_s)
    if queued and state.state in ("running", "soaking", "completed"):
        due = state.next_dispatch_at
        at = min(at, now if due is None or due <= now else due)
    return at
