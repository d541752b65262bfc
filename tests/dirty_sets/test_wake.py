"""``wake.next_deadline``: when a quiet rollout must be planned again without any change.
Pure, table-driven; never later than the planner's own verdict would change."""

from __future__ import annotations

import math

import pytest

from edgefleet.cloud.rollout.model import DeviceObservation, RolloutState, build_spec
from edgefleet.cloud.rollout.plan import plan
from edgefleet.protocols.messages import ModelRef, Phase

M = ModelRef(name="digits", version="2.0", digest="d2" * 32)
SPEC = build_spec(id="r1", model=M, slot="control", select="all", waves="100", soak="1h", device_timeout="10m")
NOW = 10_000.0


def member(device_id: str, *, dispatched: float | None = NOW - 60, phase: Phase = Phase.DOWNLOADING,
           phase_since: float | None = NOW - 30, online: bool = True, **kw: object) -> DeviceObservation:
    return DeviceObservation(device_id=device_id, wave=0, assigned_at=NOW - 100, dispatched_at=dispatched,
                             desired=M, reported_target=M, phase=phase, phase_since=phase_since, online=online,
                             last_seen=NOW - 5, **kw)  # type: ignore[arg-type]


def running(**kw: object) -> RolloutState:
    return RolloutState(rollout_id="r1", state="running", current_wave=0, started_at=NOW - 100,
                        wave_started_at=NOW - 100, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "obs", "expected"), [
    pytest.param(running(), [member("a"), member("b", phase_since=NOW - 200)], NOW - 200 + 600,
                 id="earliest silence clock of any member in flight"),
    pytest.param(running(), [member("a", dispatched=None, online=False)], NOW - 100 + 600,
                 id="an offline undispatched member is skipped after the timeout"),
    pytest.param(RolloutState(rollout_id="r1", state="soaking", current_wave=0, started_at=NOW - 9000,
                              wave_started_at=NOW - 9000, soak_started_at=NOW - 600),
                 [member("a", phase=Phase.HEALTHY, installed=M, dispatched=NOW - 8000, phase_since=NOW - 7000)],
                 NOW - 600 + 3600, id="a soak ends"),
    pytest.param(RolloutState(rollout_id="r1", state="completed", current_wave=0, started_at=NOW - 9000,
                              wave_started_at=NOW - 9000, finished_at=NOW - 8000),
                 [member("a", phase=Phase.HEALTHY, installed=M, dispatched=NOW - 9000, phase_since=NOW - 8500)],
                 math.inf, id="completed and healthy long ago: only a change wakes it"),
    pytest.param(running(next_dispatch_at=NOW + 7, rate_per_min=6.0), [member("q", dispatched=None)], NOW + 7,
                 id="a paced dispatch comes due"),
    pytest.param(running(), [member("w", phase=Phase.WAITING_FOR_WINDOW, window_opens_at=NOW + 50)], NOW + 50,
                 id="a maintenance window opens"),
    pytest.param(RolloutState(rollout_id="r1", state="scheduled", start_at=NOW + 300), [], NOW + 300,
                 id="a scheduled start"),
    pytest.param(RolloutState(rollout_id="r1", state="aborted"), [member("a")], math.inf, id="aborted: never"),
])
def test_next_deadline(state: RolloutState, obs: list[DeviceObservation], expected: float) -> None:
    from edgefleet.cloud.rollout.wake import next_deadline

    assert next_deadline(SPEC, state, obs, NOW) == pytest.approx(expected)


def test_until_the_deadline_the_plan_stays_empty_and_right_after_it_acts() -> None:
    from edgefleet.cloud.rollout.wake import next_deadline

    obs = [member("a", phase_since=NOW - 10), member("b", phase_since=NOW - 20)]
    state = plan(SPEC, running(), obs, NOW).next_state  # live gate figures recorded once
    assert plan(SPEC, state, obs, NOW).actions == ()
    at = next_deadline(SPEC, state, obs, NOW)
    times = [NOW + k * (at - NOW) / 10 for k in range(10)]
    assert all(plan(SPEC, state, obs, t).actions == () for t in times)  # nothing changes before it
    # the true timeout (phase_since + timeout) comes at or after the deadline, never before
    first_action = next(t for t in (at + k for k in range(0, 2000, 5)) if plan(SPEC, state, obs, t).actions)
    assert first_action >= at
