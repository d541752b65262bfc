"""The statistics layer: Wilson bounds, the bootstrap interval of the p99 ratio."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.cloud.rollout.stats import (
    DeviceLatency,
    point_ratio,
    ratio_interval,
    wilson_interval,
)


@pytest.mark.parametrize("k,n,low,high", [
    (0, 10, 0.0, 0.2130),   # z = 1.645: z² / (n + z²)
    (1, 10, 0.0226, 0.3477),
    (10, 10, 0.7870, 1.0),
    (50, 100, 0.4189, 0.5811),
])
def test_wilson_bounds_match_the_closed_form(k, n, low, high):
    lo, hi = wilson_interval(k, n, 0.95)
    assert lo == pytest.approx(low, abs=2e-4) and hi == pytest.approx(high, abs=2e-4)


def test_wilson_bounds_tighten_with_the_sample_and_bracket_the_share():
    widths = []
    for n in (10, 100, 1000, 10000):
        lo, hi = wilson_interval(n // 10, n)
        assert lo < 0.1 < hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize("k,n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_refuses_an_impossible_share(k, n):
    with pytest.raises(ValueError):
        wilson_interval(k, n)


def _devices(rng, n_dev=2, periods=8, new_ms=5.0, old_ms=5.0, sd=0.5):
    return [DeviceLatency(f"d{i}", tuple(rng.normal(new_ms, sd, periods)), tuple(rng.normal(old_ms, sd, periods)), 400)
            for i in range(n_dev)]


def test_bootstrap_is_deterministic_and_brackets_the_point_ratio():
    devices = _devices(np.random.default_rng(3))
    a, b = ratio_interval(devices), ratio_interval(list(reversed(devices)))
    assert a == b  # same data, same interval, whatever the order
    assert a.low <= point_ratio(devices) <= a.high
    assert a.diff_low <= 0.0 <= a.diff_high  # identical models: no difference either way


def test_bootstrap_interval_narrows_with_more_periods():
    rng = np.random.default_rng(4)
    few = ratio_interval(_devices(rng, periods=4))
    many = ratio_interval(_devices(rng, periods=40))
    assert many.high - many.low < few.high - few.low


def test_bootstrap_of_a_3x_slower_model_excludes_the_limit():
    iv = ratio_interval(_devices(np.random.default_rng(5), new_ms=15.0, old_ms=5.0))
    assert iv.low > 2.5 and iv.diff_low > 8.0


def test_single_values_give_a_degenerate_interval():
    iv = ratio_interval([DeviceLatency("d", (30.0,), (10.0,), 100)])
    assert (iv.low, iv.high, iv.diff_low) == (pytest.approx(3.0), pytest.approx(3.0), pytest.approx(20.0))


def test_bootstrap_refuses_a_device_without_both_models():
    with pytest.raises(ValueError):
        ratio_interval([DeviceLatency("d", (1.0,), (), 10)])
    with pytest.raises(ValueError):
        ratio_interval([])
