"""Rate caps, ramps and schedules in the pure core, driven on a fake clock (no I/O)."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import (
    IllegalTransition,
    RateSyntaxError,
    RolloutState,
    ScheduleError,
    SetDesired,
    apply_command,
    build_spec,
    parse_pace,
    parse_start_at,
    reschedule,
)
from edgefleet.cloud.rollout.pace import Pace, take

from ..rollout.fleetsim import V2, Fleet, SimDevice, drive

NOW = 1_800_000_000.0


def fleet_of(n: int) -> Fleet:
    return Fleet.of(SimDevice(device_id=f"d-{i:03d}", hardware_id="jetson-orin-nano") for i in range(n))


def spec(**kw):
    args = dict(id="r1", model=V2, slot="control", select="all", waves="100", soak="0", gates=[],
                device_timeout="1h")
    args.update(kw)
    return build_spec(**args)


def dispatch_times(fleet: Fleet) -> list[float]:
    return sorted(d.rows["r1"]["dispatched_at"] for d in fleet.devices.values()
                  if d.rows.get("r1", {}).get("dispatched_at") is not None)


# ----- parsing and validation ------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("60", "a rate reads like 60/min"),
    ("60/s", "a rate reads like 60/min"),
    ("0/min", "outside 1..1000"),
    ("1001/min", "outside 1..1000"),
    ("-5/min", "a rate reads like 60/min"),
])
def test_bad_rate_is_refused_with_the_reason(text, message):
    with pytest.raises(RateSyntaxError, match=message):
        parse_pace(rate=text)


@pytest.mark.parametrize("text, message", [
    ("10/min,x1.05,every=5", "factor 1.05 is outside 1.1..5"),
    ("10/min,x6,every=5", "factor 6 is outside 1.1..5"),
    ("10/min,x2,every=0", "every=0 must be between 1"),
    ("10/min,x2", "reads START/min,xFACTOR,every=K"),
    ("10/min,2,every=5", "the factor reads x2"),
    ("10/min,x2,each=5", "the step reads every=K"),
    ("2000/min,x2,every=5", "outside 1..1000"),
])
def test_bad_ramp_is_refused_with_the_reason(text, message):
    with pytest.raises(RateSyntaxError, match=message):
        parse_pace(ramp=text)


def test_rate_and_ramp_together_are_refused():
    with pytest.raises(RateSyntaxError, match="not both"):
        build_spec(id="r", model=V2, slot="control", select="all", rate="5/min", ramp="5/min,x2,every=1")


@pytest.mark.parametrize("text, expected", [
    ("+3s", NOW + 3), ("+10m", NOW + 600), ("+1h30m", NOW + 5400),
    ("2027-01-15T08:00:00+00:00", 1_800_000_000.0),
])
def test_start_times_parse_absolute_and_relative(text, expected):
    if not text.startswith("+"):
        now = expected - 3600
        assert parse_start_at(text, now) == expected
        assert parse_start_at(text.replace("+00:00", "Z"), now) == expected
        assert parse_start_at("2027-01-15T10:00:00+02:00", now) == expected
    else:
        assert parse_start_at(text, NOW) == expected


@pytest.mark.parametrize("text, message", [
    ("2020-01-01T00:00:00+00:00", "in the past"),
    ("+0s", "in the past"),
    ("2027-01-15T08:00:00", "needs an offset"),
    ("tomorrow", "ISO 8601 with an offset"),
    ("+10", "reads like \\+10m"),
    ("+400d", "more than a year ahead"),
    ("", "empty start time"),
])
def test_bad_start_time_is_refused_with_the_reason(text, message):
    with pytest.raises(ScheduleError, match=message):
        parse_start_at(text, NOW)


# ----- the token bucket ---------------------------------------------------------------------


def test_take_spaces_dispatches_by_the_rate():
    assert take(60, None, 0.0, 5) == (1, 1.0)  # one device per second at 60/min
    assert take(60, 1.0, 0.5, 5) == (0, 1.0)
    assert take(60, 1.0, 1.0, 5) == (1, 2.0)
    assert take(60, 2.0, 100.0, 5) == (1, 101.0)  # idle time is not saved up into a burst
    n, _ = take(600, None, 0.0, 50)
    assert n == 10  # a second's worth at 600/min
    assert take(600, None, 0.0, 0) == (0, None)


def test_capped_rollout_dispatches_no_faster_than_60_per_minute():
    fleet, s = fleet_of(30), spec(rate="60/min")
    drive(fleet, s, dt=0.25, max_steps=2000)
    times = dispatch_times(fleet)
    assert len(times) == 30
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1.0 - 1e-9  # never two within a second
    assert times[-1] - times[0] <= 29 * 1.0 + 0.25 * 29  # and not much slower: one per pass once due


def test_rate_at_1000_per_minute_sends_a_second_s_worth_per_pass_and_no_more_over_time():
    fleet, s = fleet_of(400), spec(rate="1000/min")
    fleet.tick(1.0)
    per_pass = []
    for _ in range(20):  # one pass per second; the devices never finish (no tick)
        per_pass.append(sum(isinstance(a, SetDesired) for a in fleet.reconcile(s)))
        fleet.now += 1.0
    times = dispatch_times(fleet)
    assert max(per_pass) == 17  # ceil(1000/60): one second's worth at once
    for i, t in enumerate(times):  # any 10 s window: at most 10 s at 1000/min plus one burst
        assert sum(1 for u in times[i:] if u < t + 10.0) <= 167 + 17
    assert len(times) >= 19 * 16  # and the cap is reached, not undershot


def test_max_concurrent_still_bounds_a_paced_rollout():
    fleet, s = fleet_of(10), spec(rate="1000/min", max_concurrent=2)
    fleet.tick(1.0)
    fleet.reconcile(s)
    assert len(fleet.ever_sent("r1")) == 2


# ----- the ramp ---------------------------------------------------------------------------------


def test_pace_rate_grows_by_the_factor_every_k_successes_up_to_1000():
    p = Pace(10, 2.0, 5)
    assert [p.rate_at(k) for k in (0, 4, 5, 9, 10, 14, 15, 100)] == [10, 10, 20, 20, 40, 40, 80, 1000]
    assert str(parse_pace(ramp="10/min, x1.5, every=3")) == "10/min,x1.5,every=3"
    assert parse_pace(ramp="10/min,x1.5,every=3").rate_at(6) == pytest.approx(22.5)


def test_exponential_ramp_grows_as_devices_succeed():
    fleet, s = fleet_of(40), spec(ramp="6/min,x2,every=4")
    rates: list[tuple[int, float]] = []

    def check(f: Fleet, step: int) -> None:
        st = f.state("r1")
        healthy = sum(1 for d in f.devices.values() if d.phase.value in ("active", "healthy")
                      and d.installed == V2)
        if st.rate_per_min is not None and (not rates or rates[-1][1] != st.rate_per_min):
            rates.append((healthy, st.rate_per_min))
        # the rate the planner uses is the ramp's rate for the successes it saw
        assert st.rate_per_min is None or st.rate_per_min <= s.pace.rate_at(healthy) + 1e-9

    drive(fleet, s, dt=1.0, max_steps=3000, check=check)
    assert [r for _, r in rates] == [6, 12, 24, 48, 96, 192, 384, 768, 1000]  # x2 per 4, capped
    assert all(r == s.pace.rate_at(k) for k, r in rates)  # each step when the 4th success lands
    times = dispatch_times(fleet)
    assert times[1] - times[0] >= 10.0 - 1e-9  # 6/min at first: 10 s apart
    assert len(times) == 40


# ----- schedules ---------------------------------------------------------------------------


def scheduled(start_at: float) -> RolloutState:
    return RolloutState(rollout_id="r1", state="scheduled", start_at=start_at)


def test_scheduled_rollout_does_nothing_until_its_time_then_starts():
    fleet, s = fleet_of(3), spec()
    fleet.now = NOW
    fleet.save(scheduled(NOW + 30))
    for _ in range(29):
        fleet.tick(1.0)
        assert fleet.reconcile(s) == []
    assert fleet.state("r1").state == "scheduled"
    fleet.tick(1.0)
    fleet.reconcile(s)
    st = fleet.state("r1")
    assert st.state == "running" and st.started_at == NOW + 30
    assert fleet.ever_sent("r1") == set(fleet.devices)


def test_cancel_and_reschedule_only_before_the_start():
    st = scheduled(NOW + 60)
    moved = reschedule(st, NOW + 120, NOW)
    assert moved.start_at == NOW + 120 and moved.state == "scheduled"
    with pytest.raises(IllegalTransition, match="in the past"):
        reschedule(st, NOW - 1, NOW)
    done = apply_command(st, "cancel", NOW)
    assert done.state == "aborted" and done.reason == "cancelled before it started"
    assert apply_command(done, "cancel", NOW) == done  # idempotent
    for command in ("pause", "resume", "rollback"):
        with pytest.raises(IllegalTransition, match="has not started"):
            apply_command(st, command, NOW)
    running = RolloutState(rollout_id="r1", state="running")
    with pytest.raises(IllegalTransition, match="only a scheduled rollout can be cancelled"):
        apply_command(running, "cancel", NOW)
    with pytest.raises(IllegalTransition, match="only a scheduled rollout can be rescheduled"):
        reschedule(running, NOW + 60, NOW)
