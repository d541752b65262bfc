"""The statistics behind the gates: one-sided rate bounds and a bootstrap interval on a
latency ratio. Pure (numpy only), deterministic for a given seed.

* ``wilson_interval(k, n, confidence)`` — Wilson score interval of a share ``k / n``;
  its lower bound is what a rate gate compares with its limit (a breach is *significant*
  when even the lower bound is above the limit).
* ``ratio_interval(devices, confidence, seed)`` — bootstrap interval of
  ``Σ mean(new p99 periods) / Σ mean(old p99 periods)`` over the devices of one hardware
  profile: each device's periods of the new model and of the previous one are resampled
  with replacement (stratified by device, so the pairing new/old on the same device holds),
  ``BOOTSTRAP_ROUNDS`` times with a fixed seed; the interval is the two tail percentiles.
  The same resamples give an interval of the mean per-device *difference* in ms
  (``LatencyInterval.diff_low``): a latency breach needs both bounds past their limits, so
  a machine's additive stalls on a sub-millisecond model are not read as a slowdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_ROUNDS = 1000
DEFAULT_SEED = 20261201


def _z(confidence: float) -> float:
    """One-sided normal quantile for ``confidence`` (0.95 → 1.645)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(confidence)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Wilson bounds ``(low, high)`` of a share ``k / n`` at ``confidence`` each.

    Raises:
        ValueError: ``n <= 0`` or ``k`` outside ``0..n``.
    """
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a share needs 0 <= k <= n and n > 0; got {k} of {n}")
    z = _z(confidence)
    p = k / n
    z2n = z * z / n
    centre = p + z2n / 2
    spread = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    low = (centre - spread) / (1 + z2n)
    high = (centre + spread) / (1 + z2n)
    return (0.0 if k == 0 else max(0.0, low), 1.0 if k == n else min(1.0, high))


@dataclass(frozen=True)
class DeviceLatency:
    """One device's per-period p99 latencies (ms) of the new model and of the previous one,
    and how many frames the new model's periods hold."""

    device_id: str
    new: tuple[float, ...]
    old: tuple[float, ...]
    frames: int = 0

    @property
    def new_mean(self) -> float:
        return sum(self.new) / len(self.new)

    @property
    def old_mean(self) -> float:
        return sum(self.old) / len(self.old)


def point_ratio(devices: Sequence[DeviceLatency]) -> float:
    """``Σ mean(new) / Σ mean(old)`` over the devices (each with periods on both sides)."""
    return sum(d.new_mean for d in devices) / sum(d.old_mean for d in devices)


def _seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + sum((i + 1) * b for i, b in enumerate(key.encode()))) % 2**32


@dataclass(frozen=True)
class LatencyInterval:
    """Bootstrap bounds of the p99 ratio and of the mean per-device p99 difference (ms)."""

    low: float
    high: float
    diff_low: float
    diff_high: float


def ratio_interval(devices: Sequence[DeviceLatency], confidence: float = 0.95, *,
                   seed: int = DEFAULT_SEED, rounds: int = BOOTSTRAP_ROUNDS) -> LatencyInterval:
    """Bootstrap bounds of the p99 ratio (and difference), one-sided at ``confidence`` each.

    The seed is mixed with the device ids, so the same data always gives the same interval.

    Raises:
        ValueError: no devices, or a device without periods on one side, or a mean <= 0.
    """
    if not devices or any(not d.new or not d.old for d in devices):
        raise ValueError("every device needs p99 periods of both models")
    rng = np.random.default_rng(_seed(seed, ",".join(sorted(d.device_id for d in devices))))
    num = np.zeros(rounds)
    den = np.zeros(rounds)
    for d in sorted(devices, key=lambda d: d.device_id):  # order-independent draws
        for values, acc in ((d.new, num), (d.old, den)):
            arr = np.asarray(values, dtype=float)
            if len(arr) == 1:
                acc += arr[0]
                continue
            idx = rng.integers(0, len(arr), size=(rounds, len(arr)))
            acc += arr[idx].mean(axis=1)
    if np.any(den <= 0):
        raise ValueError("p99 latencies must be positive")
    ratios = num / den
    diffs = (num - den) / len(devices)
    tail = 100.0 * (1.0 - confidence)
    return LatencyInterval(float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100.0 - tail)),
                           float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100.0 - tail)))


__all__ = ["BOOTSTRAP_ROUNDS", "DEFAULT_SEED", "DeviceLatency", "LatencyInterval", "point_ratio", "ratio_interval",
           "wilson_interval"]
