from __future__ import annotations

import numpy as np
import pytest

from edgefleet.protocols import CapturePolicy, ModelRef
from edgefleet.shadow import OutputDecodeError, ShadowMonitor

from .conftest import coloured_frame, manifest

CONTROL = manifest(name="ctl", low_confidence_threshold=0.5)
CANDIDATE = manifest(name="cand")
POLICY = CapturePolicy(max_per_minute=3, sample_rate=0.0)


def out(*probs):
    return [np.asarray([probs], dtype=np.float32)]


def test_disagreement_is_captured_then_held_by_the_cooldown(rng):
    mon = ShadowMonitor(CONTROL, CANDIDATE, POLICY, cooldown_s=10.0, seed=0)
    obs = mon.observe(0.0, out(0.8, 0.1, 0.1), out(0.1, 0.8, 0.1), frame=coloured_frame("red", rng))
    assert obs.capture is not None and obs.capture.kind == "disagreement" and obs.capture.label == "red"
    again = mon.observe(1.0, out(0.8, 0.1, 0.1), out(0.1, 0.8, 0.1), frame=coloured_frame("blue", rng))
    assert again.capture is None and again.refused == "cooldown"
    agree = mon.observe(2.0, out(0.8, 0.1, 0.1), out(0.7, 0.2, 0.1))
    assert agree.triggers == [] and agree.capture is None and agree.refused is None


def test_low_confidence_fires_without_a_candidate_and_duplicates_are_suppressed(rng):
    mon = ShadowMonitor(CONTROL, None, POLICY, cooldown_s=0.0, seed=0)
    frame = coloured_frame("green", rng)
    first = mon.observe(0.0, out(0.3, 0.4, 0.3), frame=frame)
    assert first.capture.kind == "low_confidence" and first.comparison is None
    second = mon.observe(0.1, out(0.3, 0.4, 0.3), frame=frame.copy())
    assert second.capture is None and second.refused == "duplicate"
    assert mon.stats.compared == 0


def test_stats_period_and_drops():
    mon = ShadowMonitor(CONTROL, CANDIDATE, POLICY, seed=0)
    for i in range(4):
        mon.observe(float(i), out(0.8, 0.1, 0.1), out(0.8, 0.1, 0.1) if i else out(0.1, 0.1, 0.8),
                    candidate_latency_ms=3.0)
    mon.drop(2)
    period = mon.take_stats()
    ref = ModelRef(name="cand", version="1", digest="d" * 64)
    st = period.to_shadow_stats(ref)
    assert (st.frames, st.disagreements, st.dropped) == (4, 1, 2)
    assert st.agreement == pytest.approx(0.75) and st.confusion["red"] == {"blue": 1, "red": 3}
    assert mon.stats.compared == 0


def test_policy_update_keeps_the_counted_budget():
    mon = ShadowMonitor(CONTROL, CANDIDATE, CapturePolicy(max_per_minute=2), cooldown_s=0.0, seed=0)
    captured = [mon.observe(i * 0.1, out(0.4, 0.3, 0.3)).capture is not None for i in range(4)]
    assert captured == [True, True, False, False]
    mon.update_policy(CapturePolicy(max_per_minute=3, low_confidence=True))
    assert mon.observe(1.0, out(0.4, 0.3, 0.3)).capture is not None
    assert mon.observe(1.1, out(0.4, 0.3, 0.3)).refused == "per_minute"


def test_mismatched_outputs_and_tasks_raise():
    mon = ShadowMonitor(CONTROL, CANDIDATE, POLICY)
    with pytest.raises(OutputDecodeError):
        mon.observe(0.0, [np.zeros((1, 5), np.float32)])
    with pytest.raises(ValueError):
        ShadowMonitor(CONTROL, manifest(task="regression", labels=[]), POLICY)
