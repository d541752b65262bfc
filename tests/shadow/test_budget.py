from __future__ import annotations

import numpy as np

from edgefleet.protocols import CapturePolicy
from edgefleet.shadow import CaptureBudget, frame_signature


def burst(budget: CaptureBudget, now: float, n: int = 100) -> int:
    """n requests at the same instant, each with a new label (no cool-down interplay)."""
    return sum(bool(budget.admit(now + i * 1e-3, f"c{now}-{i}")) for i in range(n))


def test_burst_is_held_to_the_per_minute_limit_and_the_window_slides():
    b = CaptureBudget(max_per_minute=6, max_per_hour=100, max_per_day=1000, cooldown_s=0)
    assert burst(b, 0.0) == 6
    assert b.refused["per_minute"] == 94
    assert burst(b, 30.0) == 0
    assert burst(b, 61.0) == 6


def test_hour_and_day_limits_hold_across_minutes_and_reset_after_their_window():
    b = CaptureBudget(max_per_minute=6, max_per_hour=10, max_per_day=15, cooldown_s=0)
    assert burst(b, 0.0) == 6
    assert burst(b, 61.0) == 4
    assert burst(b, 122.0) == 0 and b.refused["per_hour"] > 0
    assert burst(b, 3601.0) == 5  # day cap: 15 - 10
    assert burst(b, 7300.0) == 0 and b.refused["per_day"] > 0
    # at t=86401 the t=0 batch has left the day window; t=61 (4) and t=3601 (5) are still in it
    assert burst(b, 86401.0) == 6
    assert b.used(86401.5)["per_day"] == 4 + 5 + 6
    assert b.used(90001.5)["per_day"] == 6


def test_bytes_per_day_cap():
    b = CaptureBudget(max_bytes_per_day=1000, cooldown_s=0)
    assert b.admit(0.0, "a")
    b.charge_bytes(0.0, 600)
    assert b.admit(1.0, "b")
    assert not b.admit(1.5, "c", expected_bytes=500)
    b.charge_bytes(1.0, 400)
    verdict = b.admit(2.0, "d")
    assert not verdict and verdict.reason == "bytes_per_day"
    assert b.admit(86400.5, "e")
    assert b.bytes_used(86401.5) == 0


def test_cooldown_is_per_class():
    b = CaptureBudget(cooldown_s=10.0)
    assert b.admit(0.0, "cat")
    assert b.admit(5.0, "dog")
    refused = b.admit(5.0, "cat")
    assert not refused and refused.reason == "cooldown"
    assert b.admit(10.0, "cat")
    assert not b.admit(12.0, "dog")
    assert b.admit(15.0, "dog")


def test_refused_request_does_not_restart_the_cooldown():
    b = CaptureBudget(cooldown_s=10.0)
    assert b.admit(0.0, "cat")
    assert not b.admit(9.0, "cat")
    assert b.admit(10.0, "cat")


def test_near_identical_consecutive_frames_are_deduplicated(rng):
    b = CaptureBudget(cooldown_s=0, dedupe_threshold=0.02, dedupe_window_s=60)
    scene = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    noisy = np.clip(scene.astype(np.int16) + rng.integers(-3, 4, scene.shape), 0, 255).astype(np.uint8)
    brighter = np.clip(scene.astype(np.int16) + 2, 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    assert b.admit(0.0, "a", frame_signature(scene))
    assert b.admit(1.0, "a", frame_signature(noisy)).reason == "duplicate"
    assert b.admit(2.0, "a", frame_signature(brighter)).reason == "duplicate"
    assert b.admit(3.0, "a", frame_signature(other))
    assert b.admit(4.0, "a", frame_signature(scene))  # compares with the last admitted only
    assert b.admit(70.0, "a", frame_signature(scene))  # outside the dedupe window


def test_flat_frames_with_sensor_noise_are_duplicates(rng):
    b = CaptureBudget(cooldown_s=0)
    flat = np.full((90, 120, 3), 128, np.uint8)
    noisy = np.clip(flat + rng.integers(-4, 5, flat.shape), 0, 255).astype(np.uint8)
    assert b.admit(0.0, None, frame_signature(flat))
    assert not b.admit(1.0, None, frame_signature(noisy))


def test_from_capture_policy_and_zero_limits_refuse_everything():
    b = CaptureBudget.from_capture_policy(CapturePolicy(max_per_minute=0))
    assert b.check(0.0, "x").reason == "per_minute"
    b = CaptureBudget.from_capture_policy(CapturePolicy(max_bytes_per_day=0))
    assert b.check(0.0, "x").reason == "bytes_per_day"
    assert b.admitted == 0 and b.refused.total() == 0  # check() charges and counts nothing


def test_controller_policy_overrides_the_devices_cooldown_and_dedupe_only_where_it_sets_them():
    own = CaptureBudget.from_capture_policy(CapturePolicy(), cooldown_s=10.0, dedupe_threshold=0.02)
    assert (own.cooldown_s, own.dedupe_threshold) == (10.0, 0.02)
    b = CaptureBudget.from_capture_policy(CapturePolicy(cooldown_s=0.0), cooldown_s=10.0, dedupe_threshold=0.02)
    assert (b.cooldown_s, b.dedupe_threshold) == (0.0, 0.02)
    assert b.admit(0.0, "8") and b.admit(0.1, "8")  # no cool-down: the same class twice at once

    b.apply_policy(CapturePolicy(max_per_minute=1, cooldown_s=None, dedupe_threshold=0.5),
                   cooldown_s=10.0, dedupe_threshold=0.02)
    assert (b.cooldown_s, b.dedupe_threshold, b.limits["per_minute"]) == (10.0, 0.5, 1)
    assert b.admitted == 2 and not b.admit(0.2, "3")  # what was counted stays counted
