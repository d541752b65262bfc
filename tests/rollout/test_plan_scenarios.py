"""Whole rollouts, simulated step by step on a fake clock with an in-test fleet."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import (
    AssignWave,
    RolloutState,
    SetDesired,
    apply_command,
    build_spec,
    plan,
    supersede,
    supersedes,
)

from .fleetsim import V1, V2, V3, Fleet, SimDevice, drive, settle

PROFILES = {"jetson-orin-nano": 40, "jetson-orin-agx": 40, "jetson-xavier-nx": 20}


def make_fleet(behaviour: str = "ok", on: str | None = None, **kw) -> Fleet:
    """100 devices over three profiles; ``behaviour`` applies to V2 on profile ``on`` (all
    profiles if None)."""
    devices = []
    for hw, n in PROFILES.items():
        for i in range(n):
            hit = on is None or hw == on
            devices.append(SimDevice(
                device_id=f"{hw.split('-')[-1]}-{i:03d}", hardware_id=hw,
                tags={"depot": str(i % 4)}, behaviour=behaviour if hit else "ok",
                bad_model=V2 if hit else None, **kw))
    return Fleet.of(devices)


def spec_for(model=V2, rid="r1", **kw):
    args = dict(id=rid, model=model, slot="control", select="all", waves="1,10,50,100",
                soak="10m", gates=["failure<=0.02", "latency_p99_ratio<=1.2", "nan_rate<=0"],
                device_timeout="15m", max_concurrent=10)
    args.update(kw)
    return build_spec(**args)


def test_good_candidate_reaches_every_device_wave_by_wave():
    fleet, spec = make_fleet(), spec_for()
    final = drive(fleet, spec)
    assert final.state == "completed"
    assert [r.outcome for r in final.history] == ["passed"] * 4
    assert fleet.running(V2) == set(fleet.devices)
    wave0 = fleet.members("r1", 0)
    assert {fleet.devices[d].hardware_id for d in wave0} == set(PROFILES)
    assert [len(fleet.members("r1", w)) for w in range(4)] == [3, 7, 40, 50]


def test_max_concurrent_bounds_devices_in_flight():
    fleet, spec = make_fleet(), spec_for(max_concurrent=4)
    from .fleetsim import _UNDERWAY

    def check(f: Fleet, step: int) -> None:
        busy = [d for d in f.devices.values() if d.desired == V2 and d.installed != V2
                and (d.phase in _UNDERWAY or d.target != V2)]
        assert len(busy) <= 4

    assert drive(fleet, spec, check=check).state == "completed"


BAD_CANDIDATES = [
    pytest.param("fail_selftest", "jetson-xavier-nx", {}, "failure", id="selftest-fails-on-one-profile"),
    pytest.param("nan", None, {}, "nan_rate", id="nan-after-activation"),
    pytest.param("slow", "jetson-orin-nano", {}, "latency_p99_ratio", id="3x-slower-on-one-profile"),
    pytest.param("local_rollback", None, {}, "failure", id="agent-rolls-back-locally"),
    pytest.param("offline_on_install", "jetson-orin-agx", {"offline_for": 3600.0}, "failure",
                 id="goes-offline-during-its-wave"),
]


@pytest.mark.parametrize("behaviour,on,kw,gate", BAD_CANDIDATES)
def test_bad_candidate_stops_at_first_wave_and_is_rolled_back(behaviour, on, kw, gate):
    fleet, spec = make_fleet(behaviour, on, **kw), spec_for()
    final = drive(fleet, spec)
    assert final.state in ("rolling_back", "rolled_back")
    assert final.breach is not None and final.breach.wave == 0
    assert gate in {r.metric for r in final.breach.gates if r.status == "failed"}
    wave0 = fleet.members("r1", 0)
    assert fleet.ever_sent("r1") <= wave0
    assert fleet.ever_had(V2) <= wave0
    settle(fleet, spec, steps=80)  # the offline devices come back and revert
    assert fleet.state("r1").state == "rolled_back"
    assert fleet.running(V2) == set()
    assert all(d.desired == V1 for d in fleet.devices.values())


def test_breach_reason_names_the_gate_with_figures():
    fleet, spec = make_fleet("slow", "jetson-orin-nano"), spec_for()
    final = drive(fleet, spec)
    assert final.breach is not None
    assert "latency_p99_ratio 3 > limit 1.2" in final.breach.summary
    assert "jetson-orin-nano" in final.breach.summary
    assert final.reason is not None and "wave 1" in final.reason


@pytest.mark.parametrize("behaviour,on,kw,gate", BAD_CANDIDATES)
def test_breach_with_pause_policy_holds_devices_where_they_are(behaviour, on, kw, gate):
    fleet, spec = make_fleet(behaviour, on, **kw), spec_for(on_breach="pause")
    final = drive(fleet, spec)
    assert final.state == "breached"
    sent = fleet.ever_sent("r1")
    assert sent <= fleet.members("r1", 0)
    settle(fleet, spec, steps=10)
    assert fleet.ever_sent("r1") == sent and fleet.state("r1").state == "breached"
    fleet.save(apply_command(fleet.state("r1"), "rollback", fleet.now))
    settle(fleet, spec, steps=80)
    assert fleet.state("r1").state == "rolled_back"
    assert fleet.running(V2) == set()


def _outcome(fleet: Fleet, rid: str = "r1"):
    s = fleet.state(rid)
    return (s.state, s.current_wave, s.breach.wave if s.breach else None,
            [r.outcome for r in s.history], fleet.members(rid, 0), fleet.ever_sent(rid),
            sorted((d.device_id, d.installed.version if d.installed else None)
                   for d in fleet.devices.values()))


@pytest.mark.parametrize("behaviour,on,kw", [
    pytest.param("ok", None, {}, id="good"),
    pytest.param("fail_selftest", "jetson-xavier-nx", {}, id="selftest"),
    pytest.param("offline_on_install", "jetson-orin-agx", {"offline_for": 3600.0}, id="offline"),
])
@pytest.mark.parametrize("crash_every", [2, 3, 5])
def test_controller_killed_mid_apply_reaches_the_same_outcome(behaviour, on, kw, crash_every):
    clean = make_fleet(behaviour, on, **kw)
    spec = spec_for()
    drive(clean, spec)
    settle(clean, spec, steps=80)

    crashed = make_fleet(behaviour, on, **kw)
    drive(crashed, spec, crash=lambda step: (step % 3) if step % crash_every == 0 else None)
    settle(crashed, spec, steps=80)
    assert _outcome(crashed) == _outcome(clean)


def test_pause_stops_new_dispatch_and_resume_finishes():
    fleet, spec = make_fleet(), spec_for()
    drive(fleet, spec, until=lambda s: s.current_wave == 2)
    fleet.save(apply_command(fleet.state("r1"), "pause", fleet.now))
    sent = fleet.ever_sent("r1")
    settle(fleet, spec, steps=30)
    assert fleet.state("r1").state == "paused"
    assert fleet.ever_sent("r1") == sent
    assert plan(spec, fleet.state("r1"), fleet.observations(spec), fleet.now).actions == ()
    fleet.save(apply_command(fleet.state("r1"), "resume", fleet.now))
    assert drive(fleet, spec).state == "completed"
    assert fleet.running(V2) == set(fleet.devices)


def test_abort_leaves_devices_where_they_are():
    fleet, spec = make_fleet(), spec_for()
    drive(fleet, spec, until=lambda s: s.current_wave == 2)
    settle(fleet, spec, steps=3)
    fleet.save(apply_command(fleet.state("r1"), "abort", fleet.now))
    desired = {d.device_id: d.desired for d in fleet.devices.values()}
    assert plan(spec, fleet.state("r1"), fleet.observations(spec), fleet.now).actions == ()
    settle(fleet, spec, steps=30)
    assert {d.device_id: d.desired for d in fleet.devices.values()} == desired
    assert fleet.state("r1").state == "aborted"
    assert 0 < len(fleet.running(V2)) < len(fleet.devices)


def test_rollback_after_completion_returns_every_device():
    fleet, spec = make_fleet(), spec_for()
    assert drive(fleet, spec).state == "completed"
    fleet.save(apply_command(fleet.state("r1"), "rollback", fleet.now))
    final = drive(fleet, spec, until=lambda s: s.state == "rolled_back")
    assert final.state == "rolled_back"
    assert fleet.running(V1) == set(fleet.devices)


def test_new_rollout_supersedes_the_old_one_for_the_same_slot_and_devices():
    fleet = make_fleet()
    old, new = spec_for(rid="r1"), spec_for(model=V3, rid="r2")
    drive(fleet, old, until=lambda s: s.current_wave == 2)
    assert supersedes(new, old, fleet.observations(old), fleet.members("r1"))
    fleet.save(supersede(fleet.state("r1"), "r2", fleet.now))
    assert plan(old, fleet.state("r1"), fleet.observations(old), fleet.now).actions == ()
    assert drive(fleet, new).state == "completed"
    assert fleet.running(V3) == set(fleet.devices)
    settle(fleet, old, steps=5)
    assert fleet.state("r1").state == "superseded" and fleet.running(V3) == set(fleet.devices)


def test_shadow_rollout_does_not_supersede_a_control_rollout():
    old, new = spec_for(rid="r1"), spec_for(model=V3, rid="r2", slot="shadow")
    fleet = make_fleet()
    assert not supersedes(new, old, fleet.observations(old))


def test_device_joining_the_selection_later_joins_the_current_wave():
    fleet = make_fleet()
    spec = spec_for(select="tag:depot=1")
    drive(fleet, spec, until=lambda s: s.current_wave == 2)
    first = {d: fleet.devices[d].rows["r1"]["wave"] for d in fleet.members("r1")}
    fleet.devices["nano-000"].tags["depot"] = "1"  # was depot 0
    fleet.tick(60)
    actions = fleet.reconcile(spec)
    assert AssignWave("nano-000", 2, fleet.now) in actions
    assert {d: fleet.devices[d].rows["r1"]["wave"] for d in first} == first
    assert drive(fleet, spec).state == "completed"
    assert "nano-000" in fleet.running(V2)


def test_offline_device_is_pending_not_failed_until_its_timeout():
    fleet, spec = make_fleet(), spec_for(soak="5m", device_timeout="30m")
    p = plan(spec, RolloutState(rollout_id="r1"), fleet.observations(spec), 0.0)
    wave0 = sorted(a.device_id for a in p.actions if isinstance(a, AssignWave) and a.wave == 0)
    fleet.devices[wave0[0]].online = False
    fleet.devices[wave0[0]].offline_until = 10_000.0
    drive(fleet, spec, until=lambda s: s.state == "soaking" or s.current_wave > 0)
    state = fleet.state("r1")
    assert fleet.now > 30 * 60  # it waited for the timeout ...
    assert state.breach is None  # ... and did not count the device as failed
    assert drive(fleet, spec).state == "completed"
    settle(fleet, spec, steps=200)  # the straggler comes back after completion
    assert wave0[0] in fleet.running(V2)


def test_gate_without_data_breaches_at_the_deadline_not_passes():
    fleet = make_fleet()
    spec = spec_for(gates=["failure<=0.02", "agreement>=0.97"], soak="5m", device_timeout="10m")
    final = drive(fleet, spec)
    assert final.state in ("rolling_back", "rolled_back")
    assert final.breach is not None and final.breach.wave == 0
    agreement = next(r for r in final.breach.gates if r.metric == "agreement")
    assert agreement.status == "failed" and "deadline" in agreement.reason
    assert fleet.ever_sent("r1") <= fleet.members("r1", 0)


def test_every_plan_pass_on_unchanged_input_is_empty():
    fleet, spec = make_fleet(), spec_for()
    state = RolloutState(rollout_id="r1")
    p = plan(spec, state, fleet.observations(spec), 0.0)
    assert sum(isinstance(a, SetDesired) for a in p.actions) == 3
    fleet.reconcile(spec)
    assert plan(spec, fleet.state("r1"), fleet.observations(spec), 0.0).actions == ()


def test_device_joining_after_completion_still_gets_the_model():
    fleet, spec = make_fleet(), spec_for(select="tag:depot=2")
    assert drive(fleet, spec).state == "completed"
    fleet.devices["agx-000"].tags["depot"] = "2"
    settle(fleet, spec, steps=10)
    assert fleet.devices["agx-000"].rows["r1"]["wave"] == 3
    assert "agx-000" in fleet.running(V2)


def test_bad_shadow_candidate_is_removed_from_the_shadow_slot():
    fleet = make_fleet("local_rollback", None, installed=None, desired=None)
    spec = spec_for(slot="shadow", gates=["failure<=0.02"])
    final = drive(fleet, spec)
    assert final.breach is not None and final.breach.wave == 0
    settle(fleet, spec, steps=20)
    assert fleet.state("r1").state == "rolled_back"
    assert all(d.installed is None and d.desired is None for d in fleet.devices.values())
    assert fleet.ever_had(V2) <= fleet.members("r1", 0)


def test_the_pass_s_remembered_statuses_and_metrics_equal_a_fresh_fold_at_every_step():
    """The planner classifies a member once per wave start and folds a wave once per change
    (plan.py); its figures must equal ``classify`` + ``wave_metrics`` done from scratch."""
    from edgefleet.cloud.rollout.metrics import classify, wave_metrics

    fleet, spec = make_fleet(behaviour="slow", on="jetson-xavier-nx"), spec_for(max_concurrent=None)
    compared = []

    def check(f: Fleet, step: int) -> None:
        state, obs = f.state(spec.id), f.observations(spec)
        p = plan(spec, state, obs, f.now)
        if p.actions:  # judged after its own actions: compare on the quiet passes
            return
        st = p.next_state
        started = st.wave_starts().get(st.current_wave)
        if st.state == "completed" and started is None:
            started = st.finished_at
        members = [(o, classify(o, model=spec.model, device_timeout_s=spec.device_timeout_s,
                                wave_started_at=started, now=f.now)) for o in obs if o.wave == st.current_wave]
        assert p.metrics == wave_metrics(st.current_wave, members), step
        compared.append(step)

    drive(fleet, spec, check=check)
    assert len(compared) >= 4


def test_a_remembered_wave_fold_is_dropped_once_an_observation_or_the_wave_start_changes():
    from edgefleet.cloud.rollout.plan import _Pass
    from edgefleet.protocols import Phase

    fleet, spec = make_fleet(), spec_for(max_concurrent=None)
    drive(fleet, spec, until=lambda s: s.state == "running" and s.current_wave == 1)
    state, obs = fleet.state(spec.id), fleet.observations(spec)
    p = _Pass(spec, state, obs, fleet.now)
    first = p._metrics(1)
    assert p._metrics(1) is first  # nothing changed: the same fold
    member = next(o for o in obs if o.wave == 1)
    p._apply(member.device_id, dispatched_at=member.dispatched_at or fleet.now, phase=Phase.FAILED,
             reported_target=spec.model)  # whatever it was: failed now
    after = p._metrics(1)
    assert after.counts.get("failed", 0) == first.counts.get("failed", 0) + 1
    assert after is not first and after.counts != first.counts
    p._set(wave_started_at=None, current_wave=1)  # wave 2 has not started in this state
    assert set(p._metrics(1).counts) == {"waiting"}
