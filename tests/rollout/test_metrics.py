"""Device status and wave figures: offline is pending until the timeout, then it depends."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import DeviceObservation, DeviceStatus, classify, wave_metrics
from edgefleet.protocols.messages import Phase

from .fleetsim import V1, V2

T = 900.0  # device timeout
NOW = 10_000.0
S = DeviceStatus


def obs(**kw) -> DeviceObservation:
    base = dict(device_id="d1", hardware_id="hw", installed=V1, wave=0, assigned_at=NOW - 100)
    base.update(kw)
    return DeviceObservation(**base)


@pytest.mark.parametrize("o,wave_started,expected", [
    (obs(), None, S.WAITING),
    (obs(), NOW - 100, S.QUEUED),
    (obs(online=False, last_seen=NOW - 5000), NOW - 100, S.PENDING),
    (obs(online=False, last_seen=NOW - 5000, assigned_at=NOW - 5000), NOW - T - 1, S.SKIPPED),
    (obs(online=False, last_seen=NOW - 5000), NOW - T - 1, S.PENDING),  # joined late
    (obs(dispatched_at=NOW - 10, desired=V2), NOW - 100, S.DISPATCHED),
    (obs(dispatched_at=NOW - 10, reported_target=V2, phase=Phase.DOWNLOADING,
         phase_since=NOW - 5), NOW - 100, S.INSTALLING),
    (obs(dispatched_at=NOW - 10, installed=V2, reported_target=V2, phase=Phase.ACTIVE),
     NOW - 100, S.ACTIVE),
    (obs(dispatched_at=NOW - 10, installed=V2, phase=Phase.HEALTHY), NOW - 100, S.HEALTHY),
    (obs(dispatched_at=NOW - 10, installed=V2, phase=Phase.IDLE), NOW - 100, S.HEALTHY),
    (obs(dispatched_at=NOW - 10, reported_target=V2, phase=Phase.FAILED), NOW - 100, S.FAILED),
    (obs(dispatched_at=NOW - 10, reported_target=V2, phase=Phase.ROLLED_BACK), NOW - 100,
     S.ROLLED_BACK),
    # offline after being sent the model: pending ("silent") until the timeout, then failed
    (obs(dispatched_at=NOW - 2000, online=False, last_seen=NOW - 10, reported_target=V2,
         phase=Phase.DOWNLOADING), NOW - 3000, S.SILENT),
    (obs(dispatched_at=NOW - 2000, online=False, last_seen=NOW - T - 1, reported_target=V2,
         phase=Phase.DOWNLOADING), NOW - 3000, S.TIMED_OUT),
    (obs(dispatched_at=NOW - 2000, online=False, last_seen=NOW - 10, installed=V2,
         phase=Phase.ACTIVE), NOW - 3000, S.SILENT),
    # online but stuck in one phase past the timeout
    (obs(dispatched_at=NOW - 2000, reported_target=V2, phase=Phase.PREPARING,
         phase_since=NOW - T - 1), NOW - 3000, S.TIMED_OUT),
    (obs(dispatched_at=NOW - 10, timed_out_at=NOW - 5, online=False), NOW - 100, S.TIMED_OUT),
    # a timed-out device that reports a verdict counts by its verdict
    (obs(dispatched_at=NOW - 2000, timed_out_at=NOW - 5, installed=V2, phase=Phase.HEALTHY),
     NOW - 3000, S.HEALTHY),
])
def test_device_status(o, wave_started, expected):
    got = classify(o, model=V2, device_timeout_s=T, wave_started_at=wave_started, now=NOW)
    assert got == expected


def test_wave_figures():
    members = [
        (obs(device_id="a", hardware_id="nano", frames=1000, nan_outputs=3, errors=10,
             candidate_p99_ms=30.0, baseline_p99_ms=10.0, agreement=0.9, agreement_frames=100),
         S.HEALTHY),
        (obs(device_id="b", hardware_id="nano", frames=1000, candidate_p99_ms=30.0,
             baseline_p99_ms=10.0, agreement=1.0, agreement_frames=300), S.HEALTHY),
        (obs(device_id="c", hardware_id="agx", candidate_p99_ms=11.0, baseline_p99_ms=10.0,
             drift=0.2), S.HEALTHY),
        (obs(device_id="d", hardware_id="agx", drift=0.4), S.FAILED),
        (obs(device_id="e", hardware_id="agx"), S.TIMED_OUT),
        (obs(device_id="f", hardware_id="agx"), S.SKIPPED),
        (obs(device_id="g", hardware_id="agx"), S.INSTALLING),
    ]
    m = wave_metrics(0, members)
    assert (m.members, m.attempted, m.bad, m.skipped, m.pending) == (7, 5, 2, 1, 1)
    assert m.failure == pytest.approx(2 / 5)
    assert m.failure_floor == pytest.approx(2 / 6)
    assert m.latency_by_hardware == {"nano": pytest.approx(3.0), "agx": pytest.approx(1.1)}
    assert (m.worst_hardware, m.latency_p99_ratio) == ("nano", pytest.approx(3.0))
    assert m.nan_rate == pytest.approx(3 / 2000) and m.error_rate == pytest.approx(10 / 2010)
    assert m.agreement == pytest.approx((0.9 * 100 + 1.0 * 300) / 400)
    assert m.drift == pytest.approx(0.3)
    assert m.counts == {"healthy": 3, "failed": 1, "timed_out": 1, "skipped": 1,
                        "installing": 1}


def test_empty_wave_has_no_figures_so_gates_stay_pending():
    m = wave_metrics(3, [])
    for metric in ("failure", "latency_p99_ratio", "nan_rate", "error_rate", "agreement",
                   "drift"):
        assert m.value(metric) is None
    assert m.failure_floor is None
