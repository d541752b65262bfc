"""The same graph under a new version never breaches ``latency_p99_ratio<=1.2``; a 3x slower
candidate and the NaN candidate always do — over 20 runs each.

Two layers of evidence:

* generated series (``series.simulated_wave``): per-frame latencies of a sub-millisecond
  and of a 6 ms model on a busy CPU (log-normal jitter plus rare multi-ms stalls), folded
  into period p99s exactly as the agent folds them (``LatencyRecorder``), 6 periods of 50
  frames per model and device, two profiles — 20 seeded runs each;
* measured series (``test_measured_*``): the real models run through the agent's own
  ``ModelRunner`` (ONNX Runtime CPU) on the synthetic camera, candidate and current model
  taking turns on the same frames (as in the shadow slot); recorded once, then 20 runs that
  each draw another 6-period window per device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefleet.cloud.rollout.gates import LatencyEvidence, RateEvidence
from edgefleet.cloud.rollout.stats import DeviceLatency

from ..rollout_e2e import candidates
from .series import breaches, measure_periods, simulated_wave

RUNS = 20
GATE = "latency_p99_ratio<=1.2"


@pytest.mark.parametrize("median_ms", [0.3, 1.0, 6.0])
def test_same_graph_never_breaches_in_20_generated_runs(median_ms: float) -> None:
    old_method = 0
    for run in range(RUNS):
        wave = simulated_wave(np.random.default_rng(1000 + run), median_ms=median_ms)
        assert not breaches(GATE, wave.evidence()), f"run {run}: false breach"
        old_method += wave.old_method_ratio() > 1.2
    if median_ms < 1.0:  # the old point comparison would have rolled most of these back
        assert old_method >= RUNS // 2


@pytest.mark.parametrize("median_ms", [2.0, 6.0])
def test_three_times_slower_always_breaches_in_20_generated_runs(median_ms: float) -> None:
    for run in range(RUNS):
        wave = simulated_wave(np.random.default_rng(2000 + run), median_ms=median_ms, slowdown=3.0)
        assert breaches(GATE, wave.evidence()), f"run {run}: slow candidate passed"


def _windows(rng: np.random.Generator, series: list[tuple[tuple[float, ...], tuple[float, ...]]],
             frames: int, periods: int = 6) -> LatencyEvidence:
    devices = []
    for i, (new, old) in enumerate(series):
        start = int(rng.integers(0, len(new) - periods + 1))
        devices.append(DeviceLatency(f"dev-{i}", new[start:start + periods], old[start:start + periods],
                                     frames * periods))
    return LatencyEvidence({"cpu-generic": tuple(devices)})


@pytest.fixture(scope="module")
def measured(digit_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Real latencies, recorded once per module: two devices of the same graph under two
    versions, one device of a ~3x slower graph against its base, and the NaN candidate."""
    work: Path = tmp_path_factory.mktemp("measured")
    control = digit_models[0]
    same = candidates.retag(control, "1.1-same")
    same_series = []
    for seed in (1, 2):  # two devices, each its own camera
        (new, _), (old, _) = measure_periods([same, control], work, periods=12, frames=30, seed=seed)
        same_series.append((new, old))
    # the dead branch 4x deeper: ~3x the frame time on an idle core (preprocessing is shared)
    base = candidates.heavy(control, work, "1.1-base", layers=8)
    slow = candidates.heavy(control, work, "1.1-slow", layers=32)
    slow_series = []
    for seed in (3, 4):  # two devices
        (s_new, _), (s_old, _) = measure_periods([slow, base], work, periods=12, frames=20, seed=seed)
        slow_series.append((s_new, s_old))
    nan = candidates.nan_after_activation(control, work, "1.1-nan")
    [(_, nans)] = measure_periods([nan], work, periods=1, frames=120)
    return {"same": same_series, "slow": slow_series, "nans": nans}


@pytest.mark.slow
def test_measured_same_graph_never_breaches_in_20_runs(measured) -> None:
    rng = np.random.default_rng(7)
    for run in range(RUNS):
        assert not breaches(GATE, _windows(rng, measured["same"], frames=30)), f"run {run}"


@pytest.mark.slow
def test_measured_three_times_slower_graph_always_breaches(measured) -> None:
    new = [v for n, _ in measured["slow"] for v in n]
    old = [v for _, o in measured["slow"] for v in o]
    # on a loaded shared CPU stalls dilute the ratio (seen: 1.9x); the gate must still catch it
    assert np.median(new) > 1.8 * np.median(old), "calibration: the heavy candidate is not slower here"
    rng = np.random.default_rng(8)
    for run in range(RUNS):
        assert breaches(GATE, _windows(rng, measured["slow"], frames=20, periods=10)), f"run {run}"


@pytest.mark.slow
def test_measured_nan_candidate_always_breaches(measured) -> None:
    nans = measured["nans"]
    assert nans == 120, "the NaN candidate must be NaN on every camera frame"
    rng = np.random.default_rng(9)
    for _ in range(RUNS):
        n = int(rng.integers(20, 121))  # any window of its frames
        assert breaches("nan_rate<=0", RateEvidence(n, n))
        assert breaches("nan_rate<=0.01", RateEvidence(n, max(n, 100)))
    assert breaches("nan_rate<=0", RateEvidence(1, 10))  # one NaN in ten frames: never noise
