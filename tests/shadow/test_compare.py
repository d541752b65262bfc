from __future__ import annotations

import numpy as np
import pytest

from edgefleet.shadow import (
    NONE_LABEL,
    ClassificationComparator,
    DetectionComparator,
    OutputDecodeError,
    RegressionComparator,
    comparator_for,
    decode,
)

from .conftest import cls_pred, det_pred, manifest


def test_logits_are_softmaxed_and_probabilities_kept():
    logits = np.array([[2.0, 0.0, -1.0]], dtype=np.float32)
    p = decode([logits], manifest(output_kind="logits"))
    expected = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    assert p.label == "red"
    np.testing.assert_allclose(p.probs, expected, rtol=1e-6)
    assert p.score == pytest.approx(expected[0])
    q = decode([np.array([0.1, 0.7, 0.2])], manifest())
    assert (q.label, q.score) == ("green", pytest.approx(0.7))


def test_label_count_mismatch_is_refused():
    with pytest.raises(OutputDecodeError):
        decode([np.zeros((1, 4), np.float32)], manifest())
    with pytest.raises(OutputDecodeError):
        decode([np.zeros((2, 3), np.float32)], manifest())


def test_classification_top1_difference_disagrees():
    c = ClassificationComparator().compare(cls_pred([0.7, 0.2, 0.1]), cls_pred([0.3, 0.6, 0.1]))
    assert not c.agree and c.reason == "top1"
    assert (c.control_label, c.candidate_label, c.label) == ("red", "green", "red")
    assert c.pairs == (("red", "green"),)
    assert c.distance == pytest.approx(0.4)


def test_classification_same_top1_but_far_distributions_disagree_on_distance():
    a, b = cls_pred([0.98, 0.01, 0.01]), cls_pred([0.40, 0.35, 0.25])
    assert ClassificationComparator(max_distance=0.5).compare(a, b).reason == "distance"
    assert ClassificationComparator(max_distance=0.6).compare(a, b).agree
    assert ClassificationComparator(max_distance=None).compare(a, b).agree


def test_classification_agrees_on_close_distributions():
    c = ClassificationComparator().compare(cls_pred([0.8, 0.1, 0.1]), cls_pred([0.75, 0.15, 0.1]))
    assert c.agree and c.reason == "agree" and c.pairs == (("red", "red"),)


def test_classification_aligns_probabilities_by_label_name():
    control = cls_pred([0.6, 0.3, 0.1], labels=["red", "green", "blue"])
    candidate = cls_pred([0.1, 0.3, 0.6], labels=["blue", "green", "red"])  # same belief, reordered
    c = ClassificationComparator().compare(control, candidate)
    assert c.agree and c.distance == pytest.approx(0.0)


def test_non_finite_output_is_a_disagreement():
    nan = cls_pred([np.nan, 0.5, 0.5])
    c = ClassificationComparator().compare(cls_pred([0.8, 0.1, 0.1]), nan)
    assert not c.agree and c.reason == "non_finite"


def test_detection_identical_and_slightly_shifted_boxes_agree():
    control = det_pred([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 2]])
    shifted = det_pred([[21, 20, 31, 30, 0.7, 2], [1, 0, 11, 10, 0.95, 0]])
    c = DetectionComparator().compare(control, shifted)
    assert c.agree, c
    assert sorted(c.pairs) == [("car", "car"), ("person", "person")]
    assert c.distance == pytest.approx(0.0)


def test_detection_changed_class_disagrees():
    control = det_pred([[0, 0, 10, 10, 0.9, 0]])
    candidate = det_pred([[0, 0, 10, 10, 0.9, 1]])
    c = DetectionComparator().compare(control, candidate)
    assert not c.agree and c.reason == "class_changed" and c.label == "car"
    assert c.pairs == (("car", "truck"),)


def test_detection_unmatched_box_disagrees_on_either_side():
    control = det_pred([[0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.9, 2]])
    candidate = det_pred([[0, 0, 10, 10, 0.9, 0], [100, 100, 110, 110, 0.9, 1]])
    c = DetectionComparator().compare(control, candidate)
    assert not c.agree and c.reason == "unmatched" and c.label == "person"
    assert set(c.pairs) == {("car", "car"), ("person", NONE_LABEL), (NONE_LABEL, "truck")}
    assert c.distance == pytest.approx(0.5)


def test_detection_boxes_below_min_score_and_low_iou_are_handled():
    control = det_pred([[0, 0, 10, 10, 0.9, 0], [40, 40, 50, 50, 0.1, 1]])
    candidate = det_pred(np.zeros((0, 6)))
    assert DetectionComparator(min_score=0.3).compare(control, candidate).reason == "unmatched"
    only_weak = det_pred([[40, 40, 50, 50, 0.1, 1]])
    assert DetectionComparator(min_score=0.3).compare(only_weak, candidate).agree
    far = det_pred([[6, 6, 16, 16, 0.9, 0]])  # IoU 16/184
    assert DetectionComparator(iou_threshold=0.5).compare(det_pred([[0, 0, 10, 10, 0.9, 0]]), far).reason == "unmatched"
    assert DetectionComparator(iou_threshold=0.05).compare(det_pred([[0, 0, 10, 10, 0.9, 0]]), far).agree


def test_detection_accepts_batched_output_and_refuses_bad_shape():
    m = manifest(task="detection", labels=["car"])
    p = decode([np.array([[[0, 0, 1, 1, 0.5, 0]]], np.float32)], m)
    assert (p.label, p.score, len(p.boxes)) == ("car", 0.5, 1)
    with pytest.raises(OutputDecodeError):
        decode([np.zeros((3, 4), np.float32)], m)


def test_regression_tolerance_and_shape():
    m = manifest(task="regression", labels=[])
    a = decode([np.array([1.0, 2.0]), np.array([3.0])], m)
    near = decode([np.array([1.005, 2.0, 3.0])], m)
    far = decode([np.array([1.5, 2.0, 3.0])], m)
    comp = RegressionComparator(atol=0.01)
    assert comp.compare(a, near).agree
    c = comp.compare(a, far)
    assert not c.agree and c.reason == "tolerance" and c.distance == pytest.approx(0.5)
    assert RegressionComparator(atol=0.0, rtol=0.5).compare(a, far).agree
    assert comp.compare(a, decode([np.array([1.0])], m)).reason == "shape"


def test_comparator_for_follows_the_manifest_task():
    assert isinstance(comparator_for(manifest()), ClassificationComparator)
    assert isinstance(comparator_for(manifest(task="detection", labels=[])), DetectionComparator)
    r = comparator_for("regression", atol=0.5)
    assert isinstance(r, RegressionComparator) and r.atol == 0.5
    with pytest.raises(ValueError):
        comparator_for("segmentation")
