"""Gate rules: options, minimum sample, rate bounds, the latency floor, and the planner
waiting on an insufficient sample (same wave timeout as before)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgefleet.cloud.rollout import (
    AssignWave,
    DeviceObservation,
    DeviceStatus,
    GateSyntaxError,
    RolloutState,
    SetDesired,
    build_spec,
    evaluate_gates,
    parse_gate,
    parse_gates,
    plan,
    wave_metrics,
)
from edgefleet.cloud.rollout.gates import (
    LatencyEvidence,
    RateEvidence,
    evidence_text,
    judge_latency,
    judge_rate,
)
from edgefleet.cloud.rollout.stats import DeviceLatency
from edgefleet.protocols.messages import ModelRef, Phase

V1 = ModelRef(name="det", version="1", digest="1" * 64)
V2 = ModelRef(name="det", version="2", digest="2" * 64)


# --- syntax ----------------------------------------------------------------------------

def test_plain_gates_keep_working_and_options_round_trip():
    g = parse_gate("latency_p99_ratio<=1.2")
    assert (g.min_sample, g.floor_ms, g.confidence, str(g)) == (None, None, None, "latency_p99_ratio<=1.2")
    assert (g.needed, g.floor, g.level) == (100, 2.0, 0.99)
    assert parse_gate("nan_rate<=0.01").level == 0.95
    g = parse_gate("latency_p99_ratio<=1.2;min=500;floor=0.5ms;confidence=0.99")
    assert (g.min_sample, g.floor_ms, g.confidence) == (500, 0.5, 0.99)
    assert parse_gate(str(g)) == g
    assert parse_gates("failure<=0.02;min=10,nan_rate<=0") == (parse_gate("failure<=0.02;min=10"),
                                                               parse_gate("nan_rate<=0"))


@pytest.mark.parametrize("text,message", [
    ("latency_p99_ratio<=1.2;floor=2", "unit"),
    ("latency_p99_ratio<=1.2;min=0", "whole number"),
    ("latency_p99_ratio<=1.2;min=1.5", "whole number"),
    ("nan_rate<=0;floor=2ms", "takes no option 'floor'"),
    ("agreement>=0.9;min=10", "takes no option 'min'"),
    ("failure<=0.02;confidence=1.5", "between 0.5 and 1"),
    ("failure<=0.02;min=3;min=4", "twice"),
    ("failure<=0.02;min", "NAME=VALUE"),
])
def test_bad_options_are_refused_plainly(text, message):
    with pytest.raises(GateSyntaxError, match=message):
        parse_gate(text)


# --- rates -------------------------------------------------------------------------------

def test_a_single_nan_fails_a_zero_gate_even_below_the_minimum():
    r = judge_rate(parse_gate("nan_rate<=0"), RateEvidence(1, 10))
    assert (r.status, r.significant, r.sample, r.min_sample) == ("failed", True, 10, 100)
    assert "any fails" in r.reason


def test_below_the_minimum_a_rate_gate_is_pending_never_passed():
    r = judge_rate(parse_gate("nan_rate<=0"), RateEvidence(0, 40))
    assert r.status == "pending" and "insufficient sample: 40 of 100 frames" in r.reason
    assert judge_rate(parse_gate("nan_rate<=0"), RateEvidence(0, 100)).status == "passed"
    r = judge_rate(parse_gate("error_rate<=0.05;min=500"), RateEvidence(0, 400))
    assert r.status == "pending" and "400 of 500" in r.reason


def test_a_rate_above_a_positive_limit_breaches_only_when_significant():
    g = parse_gate("nan_rate<=0.01")
    r = judge_rate(g, RateEvidence(2, 100))  # 2 %: above the limit, not significant
    assert r.status == "passed" and r.significant is False and "not significant" in r.reason
    assert r.interval_low is not None and r.interval_low < 0.01 < r.interval_high
    r = judge_rate(g, RateEvidence(20, 1000))  # 2 % of 1000: significant
    assert r.status == "failed" and r.significant is True and r.interval_low > 0.01
    assert "significant" in evidence_text(r.model_dump())


def test_failure_minimum_is_capped_at_what_the_wave_can_attempt():
    g = parse_gate("failure<=0.02")  # default minimum: 3 devices
    assert judge_rate(g, RateEvidence(0, 1, cap=1)).status == "passed"
    assert judge_rate(g, RateEvidence(0, 2, cap=5)).status == "pending"
    r = judge_rate(g, RateEvidence(1, 1, cap=1))  # 1 of 1 failed: lower bound 0.27 > 0.02
    assert r.status == "failed" and r.significant


# --- latency ---------------------------------------------------------------------------

def _lat(new, old, frames=400, hw="nano", n=1):
    return LatencyEvidence({hw: tuple(DeviceLatency(f"{hw}-{i}", tuple(new), tuple(old), frames) for i in range(n))})


def test_sub_millisecond_models_are_not_judged_on_their_ratio():
    r = judge_latency(parse_gate("latency_p99_ratio<=1.2"), _lat([1.1, 1.3, 0.9], [0.4, 0.5, 0.45]))
    assert r.status == "passed" and r.judged is False and r.value > 2
    assert "not judged" in r.reason and "2 ms floor" in r.reason
    # the same figures with a floor of 0 ms: judged, and a real breach
    r = judge_latency(parse_gate("latency_p99_ratio<=1.2;floor=0ms"), _lat([1.1, 1.3, 0.9], [0.4, 0.5, 0.45]))
    assert r.status == "failed" and r.significant and r.interval_low > 1.2


def test_latency_below_the_minimum_frames_is_pending():
    r = judge_latency(parse_gate("latency_p99_ratio<=1.2"), _lat([30.0, 31.0], [10.0, 10.5], frames=60))
    assert r.status == "pending" and "insufficient sample: 60 of 100 frames on nano" in r.reason
    assert evidence_text(r.model_dump()).startswith("95%") is False  # no interval yet
    assert "n 60 of min 100 frames" in evidence_text(r.model_dump())


def test_running_figures_alone_give_no_interval_and_keep_the_gate_pending():
    # one value per side (a device's running mean): a degenerate "interval" would look certain
    r = judge_latency(parse_gate("latency_p99_ratio<=1.2"), _lat([4.5], [2.5], frames=400, n=2))
    assert r.status == "pending" and "2 of 3 telemetry periods" in r.reason
    assert r.significant is None


def test_a_noisy_ratio_above_the_limit_is_not_significant():
    new = [18.0, 28.5, 17.4, 36.0, 18.3, 18.9]  # a 6 ms-class model's period p99s, stalls and all
    old = [18.3, 17.7, 27.0, 18.6, 18.0, 17.1]
    r = judge_latency(parse_gate("latency_p99_ratio<=1.05"), _lat(new, old))
    assert r.status == "passed" and r.value > 1.05 and r.significant is False
    assert r.interval_low < 1.05 < r.interval_high


def test_one_significant_profile_fails_the_gate_while_another_still_gathers_frames():
    ev = LatencyEvidence({**_lat([30.0, 31.0, 29.0], [10.0, 10.2, 9.9], hw="nano").profiles,
                          **_lat([10.0], [10.0], frames=5, hw="agx").profiles})
    r = judge_latency(parse_gate("latency_p99_ratio<=1.2"), ev)
    assert r.status == "failed" and "nano" in r.reason and r.sample == 400


# --- wave figures and the planner ------------------------------------------------------

def _member(i: int, frames: int, nans: int = 0, **kw) -> DeviceObservation:
    return DeviceObservation(device_id=f"d{i}", hardware_id="nano", installed=V2, phase=Phase.HEALTHY,
                             wave=0, assigned_at=0.0, dispatched_at=0.0, frames=frames, nan_outputs=nans, **kw)


def test_wave_metrics_carry_the_evidence():
    m = wave_metrics(0, [(_member(0, 80, 1, candidate_p99_periods=(3.0, 3.1), baseline_p99_periods=(1.0, 1.1),
                                  candidate_p99_ms=3.0, baseline_p99_ms=1.0), DeviceStatus.HEALTHY),
                         (_member(1, 80), DeviceStatus.FAILED)])
    assert m.evidence("nan_rate") == RateEvidence(1, 160)
    assert m.evidence("failure") == RateEvidence(1, 2, cap=2)
    lat = m.evidence("latency_p99_ratio")
    assert isinstance(lat, LatencyEvidence) and lat.profiles["nano"][0].new == (3.0, 3.1)
    assert m.latency_p99_ratio == pytest.approx(6.1 / 2.1)
    assert m.evidence("agreement") is None


def _drive(frames: int, until: float, step: float = 30.0) -> RolloutState:
    spec = build_spec(id="r", model=V2, slot="control", select="all", waves="100", soak="1m",
                      gates=["failure<=0.02", "nan_rate<=0"], device_timeout="10m")
    obs = {f"d{i}": DeviceObservation(device_id=f"d{i}", hardware_id="nano", installed=V1, phase=Phase.HEALTHY)
           for i in range(2)}
    state, now = RolloutState(rollout_id="r"), 0.0
    while now <= until and state.state in ("pending", "running", "soaking"):
        p = plan(spec, state, obs.values(), now)
        for a in p.actions:
            if isinstance(a, AssignWave):
                obs[a.device_id] = replace(obs[a.device_id], wave=a.wave, assigned_at=a.at)
            elif isinstance(a, SetDesired):
                obs[a.device_id] = replace(obs[a.device_id], desired=a.ref, dispatched_at=a.at, previous=a.previous)
        state = p.next_state
        now += step
        obs = {d: replace(o, installed=V2, frames=frames) if o.dispatched_at is not None else o
               for d, o in obs.items()}
    return state


def test_the_planner_waits_on_an_insufficient_sample_then_breaches_at_the_usual_deadline():
    waiting = _drive(frames=20, until=600.0)  # soak over, 40 of 100 frames: pending, waiting
    assert waiting.state == "soaking"
    [failure, nan] = waiting.gates
    assert failure.status == "passed" and nan.status == "pending"
    assert "insufficient sample: 40 of 100 frames" in nan.reason
    late = _drive(frames=20, until=800.0)  # past soak + device timeout: breached, as before
    assert late.state == "rolling_back" and late.breach is not None
    assert "insufficient sample" in late.breach.summary and "gate deadline" in late.breach.summary


def test_the_planner_passes_the_wave_once_the_sample_is_there():
    assert _drive(frames=60, until=800.0).state == "completed"


def test_evaluate_gates_without_evidence_compares_the_figure_as_before():
    class Figures:
        def value(self, metric):
            return 1.5

        def describe(self, metric):
            return ""

    [r] = evaluate_gates([parse_gate("latency_p99_ratio<=1.2")], Figures())
    assert r.status == "failed" and r.significant is None
