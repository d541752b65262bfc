from __future__ import annotations

import random

import numpy as np
import pytest

from edgefleet.protocols import CapturePolicy
from edgefleet.shadow import ClassificationComparator, TriggerPolicy

from .conftest import cls_pred, det_pred, manifest

POLICY = TriggerPolicy(threshold=0.6, near_band=0.1, sample_rate=0.0)


def kinds(triggers):
    return [t.kind for t in triggers]


def test_disagreement_fires_with_the_highest_priority():
    control, candidate = cls_pred([0.55, 0.4, 0.05]), cls_pred([0.2, 0.7, 0.1])
    cmp = ClassificationComparator().compare(control, candidate)
    fired = POLICY.evaluate(control, cmp, random.Random(0))
    assert kinds(fired) == ["disagreement", "low_confidence"]
    assert fired[0].priority > fired[1].priority
    assert (fired[0].label, fired[0].score) == ("red", pytest.approx(0.55))


def test_low_confidence_below_the_manifest_threshold():
    policy = TriggerPolicy.from_capture_policy(CapturePolicy(), manifest(low_confidence_threshold=0.6))
    assert kinds(policy.evaluate(cls_pred([0.59, 0.4, 0.01]), None, random.Random(0))) == ["low_confidence"]
    assert policy.evaluate(cls_pred([0.9, 0.05, 0.05]), None, random.Random(0)) == []


def test_near_threshold_band_just_above_the_threshold():
    assert kinds(POLICY.evaluate(cls_pred([0.65, 0.3, 0.05]), None, random.Random(0))) == ["near_threshold"]
    assert POLICY.evaluate(cls_pred([0.71, 0.2, 0.09]), None, random.Random(0)) == []
    no_band = TriggerPolicy(threshold=0.6, near_band=0.0)
    assert no_band.evaluate(cls_pred([0.65, 0.3, 0.05]), None, random.Random(0)) == []


def test_random_sampling_follows_the_rate_and_the_seed():
    policy = TriggerPolicy(threshold=0.1, sample_rate=0.2)
    pred = cls_pred([0.9, 0.05, 0.05])
    rng = random.Random(42)
    hits = sum(bool(policy.evaluate(pred, None, rng)) for _ in range(5000))
    assert 850 < hits < 1150
    rng_a, rng_b = random.Random(7), random.Random(7)
    seq_a = [bool(policy.evaluate(pred, None, rng_a)) for _ in range(200)]
    seq_b = [bool(policy.evaluate(pred, None, rng_b)) for _ in range(200)]
    assert seq_a == seq_b
    gen = np.random.default_rng(7)  # a numpy Generator is accepted as well
    assert 850 < sum(bool(policy.evaluate(pred, None, gen)) for _ in range(5000)) < 1150

def test_disabled_kinds_do_not_fire():
    policy = TriggerPolicy.from_capture_policy(
        CapturePolicy(low_confidence=False, disagreement=False), manifest(), near_band=0.0
    )
    control, candidate = cls_pred([0.4, 0.35, 0.25]), cls_pred([0.1, 0.8, 0.1])
    cmp = ClassificationComparator().compare(control, candidate)
    assert policy.evaluate(control, cmp, random.Random(0)) == []


def test_detection_without_boxes_has_no_confidence_trigger():
    empty = det_pred(np.zeros((0, 6)))
    assert POLICY.evaluate(empty, None, random.Random(0)) == []
    weak = det_pred([[0, 0, 5, 5, 0.3, 2]])
    assert kinds(POLICY.evaluate(weak, None, random.Random(0))) == ["low_confidence"]


def test_near_band_comes_from_the_policy_when_set_else_the_device():
    m = manifest(low_confidence_threshold=0.6)
    assert TriggerPolicy.from_capture_policy(CapturePolicy(), m, near_band=0.05).near_band == 0.05
    assert TriggerPolicy.from_capture_policy(CapturePolicy(near_band=0.2), m, near_band=0.05).near_band == 0.2
    assert TriggerPolicy.from_capture_policy(CapturePolicy(near_band=0.0), m, near_band=0.05).near_band == 0.0
