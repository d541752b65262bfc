"""What `fleet rollout status` shows: waves, counts by status, gate figures, progress."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import (
    DeviceObservation,
    RolloutState,
    SpecError,
    UpdateRollout,
    plan,
    rollout_status,
)

from .fleetsim import drive
from .test_plan_scenarios import make_fleet, spec_for


def test_status_mid_rollout():
    fleet, spec = make_fleet(), spec_for()
    drive(fleet, spec, until=lambda s: s.current_wave == 2)
    st = rollout_status(spec, fleet.state("r1"), fleet.observations(spec), fleet.now)
    assert [w.outcome for w in st.waves] == ["passed", "passed", "current", "waiting"]
    assert [w.members for w in st.waves] == [3, 7, 40, 50]
    assert st.waves[0].counts == {"healthy": 3}
    assert [g.status for g in st.waves[0].gates] == ["passed"] * 3
    assert st.waves[3].counts == {"waiting": 50}
    assert st.on_model == 10 and st.progress == pytest.approx(0.1)
    assert (st.state, st.model, st.slot) == ("running", "det:2", "control")


def test_status_after_breach_names_the_gate():
    fleet, spec = make_fleet("nan"), spec_for(on_breach="pause")
    drive(fleet, spec)
    st = rollout_status(spec, fleet.state("r1"), fleet.observations(spec), fleet.now)
    assert st.state == "breached" and st.waves[0].outcome == "breached"
    [broken] = [g for g in st.waves[0].gates if g.status == "failed"]
    assert broken.metric == "nan_rate" and broken.value and broken.value > 0
    assert st.breach is not None and "nan_rate" in st.breach.summary


def test_failure_gate_breaches_before_the_wave_settles_when_it_cannot_pass():
    fleet, spec = make_fleet("fail_selftest", "jetson-xavier-nx"), spec_for(soak="1h")
    final = drive(fleet, spec)
    assert final.breach is not None and final.soak_started_at is None  # no soak needed


def test_state_of_another_rollout_is_refused():
    with pytest.raises(SpecError, match="state of rollout 'r9'"):
        plan(spec_for(), RolloutState(rollout_id="r9"), [], 0.0)


def test_rollout_with_no_devices_waits_for_them_on_wave_zero():
    spec = spec_for(select="tag:depot=99")
    p = plan(spec, RolloutState(rollout_id="r1"), [DeviceObservation("a", tags={})], 0.0)
    [update] = [a for a in p.actions if isinstance(a, UpdateRollout)]
    assert (update.state.state, update.state.current_wave) == ("running", 0)
    later = plan(spec, update.state, [DeviceObservation("a", tags={})], 10_000.0)
    assert later.actions == ()
